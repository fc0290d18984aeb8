//! `cargo xtask release`: assembles one arch's release under `{output-dir}/{arch}/`.
//!
//! Reads the kernel image, the EROFS rootfs image (built by `cargo xtask rootfs` into
//! `build/{arch}/rootfs.erofs` when `--rootfs` is not given) and (optionally) the binaries
//! fragment. The shipped `rootfs.erofs` is that image followed by its dm-verity hash tree
//! ([`verity`], in a temporary directory), and the command line builds the verified root from
//! it; `--unverified-rootfs` (development only) ships the image as given with the plain command
//! line. Writes the per-arch `manifest.json`, the tarball `boot-assets-{arch}-v{version}.tar.gz`
//! (members `kernel`, `manifest.json`, `rootfs.erofs`) and its `.sha256` sidecar, each atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::manifest::format_utc_timestamp;
use boot_assets::{cdn, sidecar, Arch, FileEntry, KernelEntry, Manifest, Target};
use xshell::Shell;

use crate::archive::{self, Member};
use crate::flags::{self, AssetVersion, KernelSource};
use crate::{binaries, kernel, kernel_version, layout, rootfs, util, verity};

impl flags::Release {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let request = Request {
            version: self.version,
            arch: self.arch.into(),
            kernel: self.kernel,
            rootfs: self.rootfs,
            kernel_version: self.kernel_version,
            source: self.source,
            binaries_json: self.binaries_json,
            kernel_cmdline: self.kernel_cmdline,
            unverified_rootfs: self.unverified_rootfs,
            output_dir: self.output_dir,
        };
        run(sh, &request)?;
        Ok(())
    }
}

/// What one release is asked to do (the `release` flags, or `dist` for each arch).
pub struct Request {
    pub version: AssetVersion,
    pub arch: Arch,
    /// The kernel image; built from source (cached) when `None`.
    pub kernel: Option<PathBuf>,
    /// The rootfs image; built from the recipe and lock when `None`.
    pub rootfs: Option<PathBuf>,
    /// The kernel's Linux version; read from the build or the image when `None`.
    pub kernel_version: Option<String>,
    pub source: KernelSource,
    /// The binaries fragment whose entries for this arch go into the manifest.
    pub binaries_json: Option<PathBuf>,
    /// The kernel command line; the contract's line for the arch when `None`. Its `root=` is
    /// replaced by the verified root unless `unverified_rootfs`.
    pub kernel_cmdline: Option<String>,
    /// Development only: ship the rootfs as given, without a hash tree, mounted unverified.
    pub unverified_rootfs: bool,
    /// Where `{arch}/…` is written.
    pub output_dir: PathBuf,
}

/// Builds what is missing, assembles the release of `request.arch` and returns the files it
/// wrote.
pub fn run(sh: &Shell, request: &Request) -> Result<ReleaseOutputs> {
    let inputs = resolve_inputs(sh, request)?;
    let staging = tempfile::tempdir().context("creating a temporary directory for the verified rootfs")?;
    let rootfs = ship_rootfs(sh, request, &inputs.rootfs, staging.path())?;
    eprintln!(
        "release: hashing {} and {}",
        inputs.kernel.display(),
        rootfs.path.display()
    );
    let manifest = build_manifest(request, &inputs, &rootfs)?;
    let outputs = assemble(
        &request.output_dir,
        request.arch,
        &manifest,
        &inputs.kernel,
        &rootfs.path,
    )?;
    eprintln!(
        "release: wrote {}\n         {}\n         {}",
        outputs.tarball.display(),
        outputs.sidecar.display(),
        outputs.manifest.display()
    );
    Ok(outputs)
}

/// The kernel and rootfs files a release ships, and the kernel's Linux version.
struct Inputs {
    kernel: PathBuf,
    rootfs: PathBuf,
    kernel_version: String,
}

/// The given kernel and rootfs, or built ones (a cache hit when nothing changed).
fn resolve_inputs(sh: &Shell, request: &Request) -> Result<Inputs> {
    let (kernel, built_release) = match &request.kernel {
        Some(kernel) => (kernel.clone(), None),
        None => {
            let built = kernel::build(sh, &kernel::KernelRequest::for_arch(request.arch))?;
            (built.image, Some(built.release))
        }
    };
    let rootfs = match request.rootfs.clone() {
        Some(path) => path,
        // Without --rootfs, build it from the checked-in recipe and lock.
        None => rootfs::build(sh, &rootfs::BuildOptions::defaults(request.arch))?.image,
    };
    util::require_file(&kernel, "--kernel")?;
    util::require_file(&rootfs, "--rootfs")?;
    let kernel_version = match (&request.kernel_version, built_release) {
        (Some(given), _) => given.clone(),
        (None, Some(built)) => built,
        (None, None) => read_kernel_version(&kernel)?,
    };
    Ok(Inputs {
        kernel,
        rootfs,
        kernel_version,
    })
}

/// The rootfs file a release ships, and its dm-verity root when it is verified.
struct ShippedRootfs {
    path: PathBuf,
    verity: Option<verity::VerityRoot>,
}

/// The given image followed by its hash tree, written into `staging`; with
/// `--unverified-rootfs`, the given image itself.
fn ship_rootfs(sh: &Shell, request: &Request, given: &Path, staging: &Path) -> Result<ShippedRootfs> {
    if request.unverified_rootfs {
        eprintln!(
            "release: --unverified-rootfs: shipping {} without a hash tree; nothing checks the blocks the guest \
             reads (development only)",
            given.display()
        );
        return Ok(ShippedRootfs {
            path: given.to_path_buf(),
            verity: None,
        });
    }
    let path = staging.join(cdn::ROOTFS_FILE);
    let verity = verity::apply(sh, given, &path).with_context(|| format!("--rootfs {}", given.display()))?;
    eprintln!(
        "release: verified rootfs: {} bytes of EROFS data + {} bytes of dm-verity hash tree (+{:.2}%), root hash {}",
        verity.data_bytes(),
        verity.tree_bytes(),
        100.0 * verity.tree_bytes() as f64 / verity.data_bytes() as f64,
        verity.root_hash
    );
    Ok(ShippedRootfs {
        path,
        verity: Some(verity),
    })
}

/// The per-arch manifest of the release, validated.
fn build_manifest(request: &Request, inputs: &Inputs, rootfs: &ShippedRootfs) -> Result<Manifest> {
    let arch = request.arch;
    let version = request.version.as_str();
    let binaries = match &request.binaries_json {
        Some(path) => Manifest::binaries_for(&binaries::read_fragment(path)?, arch),
        None => Vec::new(),
    };
    let built_at = format_utc_timestamp(util::source_date_epoch()?.unwrap_or_else(util::now_epoch));
    let base_cmdline = request
        .kernel_cmdline
        .clone()
        .unwrap_or_else(|| arch.default_kernel_cmdline().to_owned());
    let target = Target {
        kernel: KernelEntry {
            path: cdn::kernel_path(version, arch),
            sha256: util::sha256_file(&inputs.kernel)?,
            version: inputs.kernel_version.clone(),
            size: Some(util::file_size(&inputs.kernel)?),
        },
        rootfs: FileEntry {
            path: cdn::rootfs_path(version, arch),
            sha256: util::sha256_file(&rootfs.path)?,
            size: Some(util::file_size(&rootfs.path)?),
        },
        kernel_cmdline: match &rootfs.verity {
            Some(verity) => verity::verified_cmdline(&base_cmdline, verity).context("--kernel-cmdline")?,
            None => base_cmdline,
        },
        rootfs_verity_root_hash: rootfs.verity.as_ref().map(|verity| verity.root_hash.clone()),
        runtime: None,
    };
    let manifest = Manifest {
        schema_version: request.version.major(),
        asset_version: version.to_owned(),
        built_at,
        source_repo: request.source.source_repo.clone(),
        source_ref: request.source.source_ref.clone(),
        source_sha: request.source.source_sha.clone(),
        targets: [(arch, target)].into(),
        binaries,
    };
    manifest
        .validate_for_writing()
        .context("the assembled manifest is invalid")?;
    Ok(manifest)
}

/// The files one `release` writes.
pub struct ReleaseOutputs {
    pub tarball: PathBuf,
    pub sidecar: PathBuf,
    pub manifest: PathBuf,
}

/// Writes the per-arch manifest, the tarball and its sidecar under `{output_dir}/{arch}/`.
pub fn assemble(
    output_dir: &Path,
    arch: Arch,
    manifest: &Manifest,
    kernel: &Path,
    rootfs: &Path,
) -> Result<ReleaseOutputs> {
    let arch_dir = layout::arch_dir(output_dir, arch);
    std::fs::create_dir_all(&arch_dir).with_context(|| format!("creating {}", arch_dir.display()))?;
    let tar_mtime = util::source_date_epoch()?.unwrap_or(0);

    // The manifest inside the tarball and beside it are the same bytes; stage it in a
    // temporary directory so a failed tarball leaves no new manifest behind.
    let staging = tempfile::tempdir_in(&arch_dir)
        .with_context(|| format!("creating a staging directory in {}", arch_dir.display()))?;
    let staged_manifest = staging.path().join(cdn::MANIFEST_FILE);
    let manifest_json = manifest.to_json_pretty();
    std::fs::write(&staged_manifest, &manifest_json)
        .with_context(|| format!("writing {}", staged_manifest.display()))?;

    let tarball = layout::tarball(output_dir, &manifest.asset_version, arch);
    let members = [
        Member {
            name: cdn::KERNEL_FILE.into(),
            source: kernel.to_path_buf(),
        },
        Member {
            name: cdn::MANIFEST_FILE.into(),
            source: staged_manifest,
        },
        Member {
            name: cdn::ROOTFS_FILE.into(),
            source: rootfs.to_path_buf(),
        },
    ];
    archive::write_tar_gz(&tarball, &members, tar_mtime)?;

    let sidecar_path = layout::sidecar(output_dir, &manifest.asset_version, arch);
    let tarball_name = cdn::tarball_name(&manifest.asset_version, arch);
    util::write_atomic(
        &sidecar_path,
        sidecar::format(&util::sha256_file(&tarball)?, &tarball_name).as_bytes(),
    )?;

    let manifest_path = layout::arch_manifest(output_dir, arch);
    util::write_atomic(&manifest_path, manifest_json.as_bytes())?;
    Ok(ReleaseOutputs {
        tarball,
        sidecar: sidecar_path,
        manifest: manifest_path,
    })
}

fn read_kernel_version(kernel: &Path) -> Result<String> {
    let image = std::fs::read(kernel).with_context(|| format!("reading kernel image {}", kernel.display()))?;
    match kernel_version::detect(&image) {
        Some(version) => Ok(version),
        None => bail!(
            "could not find the Linux version in {} (no bzImage version string, no `Linux version` banner; \
             a compressed Image.gz hides it): pass --kernel-version, e.g. --kernel-version 6.1.158",
            kernel.display()
        ),
    }
}

//! `cargo xtask release`: assembles one arch's release under `{output-dir}/{arch}/`.
//!
//! Reads the kernel image, the rootfs image (built by `cargo xtask rootfs` into
//! `build/{arch}/rootfs.erofs` when `--rootfs` is not given) and (optionally) the binaries
//! fragment; writes the per-arch `manifest.json`, the tarball
//! `boot-assets-{arch}-v{version}.tar.gz` (members `kernel`, `manifest.json`, `rootfs.erofs`)
//! and its `.sha256` sidecar, each atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::manifest::format_utc_timestamp;
use boot_assets::{cdn, sidecar, Arch, FileEntry, KernelEntry, Manifest, Target};
use xshell::Shell;

use crate::archive::{self, Member};
use crate::{binaries, flags, kernel, kernel_version, rootfs, util};

impl flags::Release {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arch: Arch = self.arch.into();
        let version = semver::Version::parse(&self.version).with_context(|| {
            format!(
                "--version {:?} is not a semantic version like 0.2.0 (no leading `v`)",
                self.version
            )
        })?;

        // Without --kernel, build it from source (a cache hit when nothing changed).
        let (kernel, built_release) = match &self.kernel {
            Some(kernel) => (kernel.clone(), None),
            None => {
                let built = kernel::build(sh, &kernel::KernelRequest::for_arch(arch))?;
                (built.image, Some(built.release))
            }
        };
        let rootfs = match self.rootfs.clone() {
            Some(path) => path,
            // Without --rootfs, build it from the checked-in recipe and lock.
            None => rootfs::build(sh, &rootfs::BuildOptions::defaults(arch))?.image,
        };
        util::require_file(&kernel, "--kernel")?;
        util::require_file(&rootfs, "--rootfs")?;

        let kernel_version = match (&self.kernel_version, built_release) {
            (Some(given), _) => given.clone(),
            (None, Some(built)) => built,
            (None, None) => read_kernel_version(&kernel)?,
        };
        let binaries = match &self.binaries_json {
            Some(path) => Manifest::binaries_for(&binaries::read_fragment(path)?, arch),
            None => Vec::new(),
        };
        let built_at = format_utc_timestamp(util::source_date_epoch()?.unwrap_or_else(util::now_epoch));

        eprintln!("release: hashing {} and {}", kernel.display(), rootfs.display());
        let manifest = Manifest {
            schema_version: version.major,
            asset_version: self.version.clone(),
            built_at,
            source_repo: self.source.source_repo.clone(),
            source_ref: self.source.source_ref.clone(),
            source_sha: self.source.source_sha.clone(),
            targets: [(
                arch,
                Target {
                    kernel: KernelEntry {
                        path: cdn::kernel_path(&self.version, arch),
                        sha256: util::sha256_file(&kernel)?,
                        version: kernel_version,
                        size: Some(util::file_size(&kernel)?),
                    },
                    rootfs: FileEntry {
                        path: cdn::rootfs_path(&self.version, arch),
                        sha256: util::sha256_file(&rootfs)?,
                        size: Some(util::file_size(&rootfs)?),
                    },
                    kernel_cmdline: self
                        .kernel_cmdline
                        .clone()
                        .unwrap_or_else(|| arch.default_kernel_cmdline().to_owned()),
                    runtime: None,
                },
            )]
            .into(),
            binaries,
        };
        manifest
            .validate_for_writing()
            .context("the assembled manifest is invalid")?;

        let outputs = assemble(&self.output_dir, arch, &manifest, &kernel, &rootfs)?;
        eprintln!(
            "release: wrote {}\n         {}\n         {}",
            outputs.tarball.display(),
            outputs.sidecar.display(),
            outputs.manifest.display()
        );
        Ok(())
    }
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
    let arch_dir = output_dir.join(arch.as_str());
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

    let tarball = arch_dir.join(cdn::tarball_name(&manifest.asset_version, arch));
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

    let tarball_name = cdn::tarball_name(&manifest.asset_version, arch);
    let sidecar_path = arch_dir.join(format!("{tarball_name}.sha256"));
    util::write_atomic(
        &sidecar_path,
        sidecar::format(&util::sha256_file(&tarball)?, &tarball_name).as_bytes(),
    )?;

    let manifest_path = arch_dir.join(cdn::MANIFEST_FILE);
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

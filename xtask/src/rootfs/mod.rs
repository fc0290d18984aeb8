//! `cargo xtask rootfs`: the reproducible EROFS root filesystem, built from pinned Debian
//! packages for arm64 or x86_64 on any Debian/Ubuntu host, without a container engine.
//!
//! Reads `manifests/rootfs.toml` (the recipe), `manifests/rootfs.lock` (pinned package files),
//! `init/` and `rootfs-overlay/`; caches package files under `{cache}/rootfs/`; writes
//! `build/{arch}/rootfs.erofs` (or `--output`) and its SBOM `rootfs.erofs.spdx.json` beside it,
//! both atomically and only after every check passed. `--update-lock` re-resolves the recipe's
//! packages with apt and rewrites the lock first.
//!
//! The steps, each in its own module: [`lock`] → [`fetch`] → [`deb`] → [`assemble`] →
//! [`closure`] → [`checks`] → [`image`] → [`sbom`].

pub mod assemble;
pub mod checks;
pub mod closure;
pub mod deb;
pub mod fetch;
pub mod image;
pub mod license;
pub mod lock;
pub mod recipe;
pub mod sbom;
pub mod tree;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use boot_assets::manifest::format_utc_timestamp;
use boot_assets::Arch;
use xshell::Shell;

use crate::elf;
use crate::{flags, util};
use assemble::{LocalInput, Package};
use lock::Lock;
use recipe::Recipe;
use tree::Node;

/// The recipe, relative to the repository root.
pub const DEFAULT_RECIPE: &str = "manifests/rootfs.toml";
/// The lock file, relative to the repository root.
pub const DEFAULT_LOCK: &str = "manifests/rootfs.lock";
/// Appended to the image path to name its SBOM.
pub const SBOM_SUFFIX: &str = ".spdx.json";
/// Host tools the build runs (their packages are in `manifests/host-packages.toml`).
const REQUIRED_TOOLS: [&str; 3] = ["mkfs.erofs", "apt-get", "apt-cache"];

impl flags::Rootfs {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arch: Arch = self.arch.into();
        let options = BuildOptions {
            arch,
            output: self.output.unwrap_or_else(|| default_output(arch)),
            recipe: self.recipe.unwrap_or_else(|| util::project_root().join(DEFAULT_RECIPE)),
            lock: self.lock.unwrap_or_else(|| util::project_root().join(DEFAULT_LOCK)),
            update_lock: self.update_lock,
        };
        build(sh, &options)?;
        Ok(())
    }
}

/// `build/{arch}/rootfs.erofs` (the layout owns the path).
pub fn default_output(arch: Arch) -> PathBuf {
    crate::layout::built_rootfs(arch)
}

/// What one build is asked to do.
pub struct BuildOptions {
    pub arch: Arch,
    pub output: PathBuf,
    pub recipe: PathBuf,
    pub lock: PathBuf,
    pub update_lock: bool,
}

impl BuildOptions {
    /// The checked-in recipe and lock, the default output, no lock update.
    pub fn defaults(arch: Arch) -> BuildOptions {
        BuildOptions {
            arch,
            output: default_output(arch),
            recipe: util::project_root().join(DEFAULT_RECIPE),
            lock: util::project_root().join(DEFAULT_LOCK),
            update_lock: false,
        }
    }
}

/// What a build wrote.
pub struct BuildOutputs {
    pub image: PathBuf,
}

/// Builds one arch's image and SBOM.
pub fn build(sh: &Shell, options: &BuildOptions) -> Result<BuildOutputs> {
    let started = Instant::now();
    crate::tools::require_all(&REQUIRED_TOOLS).context("the rootfs build needs a Debian or Ubuntu host")?;
    let recipe = Recipe::load(&options.recipe)?;
    let params = recipe.arch_params(options.arch).clone();
    let apt = fetch::Apt::new(&params.deb_arch)?;
    let update_hint = format!("cargo xtask rootfs --arch {} --update-lock", options.arch);

    // 1. The pinned package files (re-resolved first with --update-lock).
    let locked = pinned_packages(sh, options, &recipe, &params, &apt, &update_hint)?;
    // 2. Fetched (or taken from the cache), digest-checked, unpacked in memory.
    let files = fetch::fetch_locked(sh, &apt, &locked, &update_hint)?;
    let mut packages = Vec::new();
    for (entry, bytes) in locked.into_iter().zip(files) {
        let contents = deb::unpack_deb(&bytes).with_context(|| format!("unpacking package {}", entry.describe()))?;
        packages.push(Package {
            locked: entry,
            contents,
        });
    }
    eprintln!(
        "rootfs: {} packages ready after {:.1?}",
        packages.len(),
        started.elapsed()
    );
    // 3. The image tree: recipe rules, local files and overlay, library closure, then checks.
    let local_inputs = read_local_inputs(&recipe)?;
    let mut tree = assemble::assemble(&recipe, &params, &packages, &local_inputs)?;
    closure::add_library_closure(&mut tree, &params, &packages, &elf::elf_info)?;
    let machine = crate::arch_facts::of(options.arch).elf_machine;
    checks::check_image(
        &tree,
        machine,
        &params.default_library_dirs(),
        &recipe.busybox.path,
        &elf::elf_info,
    )?;
    // 4. The image and its SBOM, moved into place only when everything passed.
    write_outputs(sh, options, &recipe, &tree, &packages)?;
    eprintln!("rootfs: done in {:.1?}", started.elapsed());
    Ok(BuildOutputs {
        image: options.output.clone(),
    })
}

/// The lock entries of every recipe package for this arch; with `--update-lock`, re-resolved
/// with apt and written back to the lock file first.
fn pinned_packages(
    sh: &Shell,
    options: &BuildOptions,
    recipe: &Recipe,
    params: &recipe::ArchParams,
    apt: &fetch::Apt,
    update_hint: &str,
) -> Result<Vec<lock::LockedPackage>> {
    let names = recipe.package_names();
    let mut lock = Lock::load(&options.lock, options.update_lock)?;
    if options.update_lock {
        apt.update(sh)?;
        let entries = apt.resolve_all(sh, &names)?;
        report_lock_changes(&lock, &params.deb_arch, &entries);
        lock.replace_arch(&params.deb_arch, entries);
        util::write_atomic(&options.lock, lock.render(lock::ROOTFS_LOCK_HEADER).as_bytes())?;
        eprintln!("rootfs: wrote {}", options.lock.display());
    }
    let stale = lock.stale_entries(&params.deb_arch, &names);
    if !stale.is_empty() {
        eprintln!(
            "rootfs: warning: {} locks {} for {}, which the recipe no longer names: run `{update_hint}`",
            options.lock.display(),
            stale.join(", "),
            params.deb_arch
        );
    }
    lock.entries_for(&params.deb_arch, &names, update_hint)
        .with_context(|| format!("lock file {}", options.lock.display()))
}

/// Stages the tree, runs mkfs.erofs into a temporary file beside the output, enforces the
/// budget, renders the SBOM, and only then moves both into place.
fn write_outputs(
    sh: &Shell,
    options: &BuildOptions,
    recipe: &Recipe,
    tree: &tree::ImageTree,
    packages: &[Package],
) -> Result<()> {
    let epoch = util::source_date_epoch()?.unwrap_or(0);
    let output_dir = match options.output.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    let staging = tempfile::tempdir().context("creating a staging directory")?;
    let staging_root = staging.path().join("root");
    std::fs::create_dir(&staging_root).with_context(|| format!("creating {}", staging_root.display()))?;
    image::write_staging(tree, &staging_root)?;

    let mkfs_flags = image::mkfs_flags(epoch, &image::derive_uuid(tree));
    let image_temp = tempfile::Builder::new()
        .prefix(".rootfs-")
        .suffix(".erofs.tmp")
        .tempfile_in(&output_dir)
        .with_context(|| format!("creating a temporary image file in {}", output_dir.display()))?;
    let mkfs_version = image::run_mkfs(sh, &staging_root, image_temp.path(), &mkfs_flags)?;
    let image_bytes = std::fs::metadata(image_temp.path())
        .with_context(|| format!("reading {}", image_temp.path().display()))?
        .len();
    eprint!(
        "rootfs: {}",
        image::size_report(tree, image_bytes, recipe.size_budget_bytes)
    );
    image::check_budget(tree, image_bytes, recipe.size_budget_bytes)?;
    let image_sha256 = util::sha256_file(image_temp.path())?;

    let image_file_name = options
        .output
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| boot_assets::cdn::ROOTFS_FILE.to_owned());
    let sbom_text = sbom::render(&sbom::SbomInput {
        arch: options.arch.as_str(),
        image_file_name: &image_file_name,
        image_sha256: &image_sha256,
        created: &format_utc_timestamp(epoch),
        mkfs_version: &mkfs_version,
        mkfs_flags: &mkfs_flags,
        contributors: &contributors(tree, packages),
    });

    let sbom_path = PathBuf::from(format!("{}{SBOM_SUFFIX}", options.output.display()));
    std::fs::set_permissions(image_temp.path(), std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", image_temp.path().display()))?;
    image_temp
        .persist(&options.output)
        .with_context(|| format!("writing {}", options.output.display()))?;
    util::write_atomic(&sbom_path, sbom_text.as_bytes())?;
    eprintln!(
        "rootfs: wrote {} (sha256 {image_sha256}) and {}",
        options.output.display(),
        sbom_path.display()
    );
    Ok(())
}

/// Prints what `--update-lock` changed for one arch: the diff a reviewer reads, in short.
fn report_lock_changes(old: &Lock, deb_arch: &str, new: &[lock::LockedPackage]) {
    let unchanged = new.iter().filter(|entry| old.packages.contains(entry)).count();
    eprintln!("rootfs: lock {deb_arch}: {} packages, {unchanged} unchanged", new.len());
    for entry in new {
        match old
            .packages
            .iter()
            .find(|old| old.for_arch == deb_arch && old.name == entry.name)
        {
            Some(old) if old == entry => {}
            Some(old) => eprintln!(
                "rootfs: lock {deb_arch}: {} {} -> {}",
                entry.name, old.version, entry.version
            ),
            None => eprintln!("rootfs: lock {deb_arch}: + {}", entry.describe()),
        }
    }
}

/// The packages that put at least one entry into the image, with their declared licenses.
fn contributors(tree: &tree::ImageTree, packages: &[Package]) -> Vec<sbom::Contributor> {
    let mut result = Vec::new();
    for package in packages {
        let name = &package.locked.name;
        if !tree.entries.values().any(|entry| &entry.origin == name) {
            eprintln!("rootfs: warning: package {name} contributed nothing to the image");
            continue;
        }
        let copyright_path = format!("usr/share/doc/{name}/copyright");
        let license = deb::resolve(&package.contents.entries, &copyright_path).and_then(|found| {
            std::str::from_utf8(found.bytes)
                .ok()
                .and_then(license::declared_license)
        });
        result.push(sbom::Contributor {
            locked: package.locked.clone(),
            license,
        });
    }
    result
}

/// The recipe's local files and the overlay folder, read from the repository.
fn read_local_inputs(recipe: &Recipe) -> Result<Vec<LocalInput>> {
    let root = util::project_root();
    let mut inputs = Vec::new();
    for local in &recipe.local_files {
        let path = root.join(&local.from);
        let bytes =
            std::fs::read(&path).with_context(|| format!("reading {} (a local_file of the recipe)", path.display()))?;
        inputs.push(LocalInput {
            source: local.from.clone(),
            to: local.to.clone(),
            node: Node::File {
                bytes,
                executable: local.executable,
            },
        });
    }
    let overlay = root.join(&recipe.overlay_dir);
    if !overlay.is_dir() {
        bail!(
            "the overlay folder {} (overlay_dir in the recipe) does not exist",
            overlay.display()
        );
    }
    for item in walkdir::WalkDir::new(&overlay).min_depth(1).sort_by_file_name() {
        let item = item.with_context(|| format!("reading the overlay {}", overlay.display()))?;
        let relative = item
            .path()
            .strip_prefix(&overlay)
            .expect("walkdir stays below its root")
            .to_string_lossy()
            .into_owned();
        let kind = item.file_type();
        let node = if kind.is_dir() {
            Node::Dir
        } else if kind.is_symlink() {
            let target = std::fs::read_link(item.path())
                .with_context(|| format!("reading symlink {}", item.path().display()))?;
            Node::symlink(target.to_string_lossy().into_owned())
        } else {
            let bytes = std::fs::read(item.path()).with_context(|| format!("reading {}", item.path().display()))?;
            let mode = item.metadata()?.permissions().mode();
            Node::File {
                bytes,
                executable: mode & 0o111 != 0,
            }
        };
        inputs.push(LocalInput {
            source: format!("{}/{relative}", recipe.overlay_dir),
            to: relative,
            node,
        });
    }
    Ok(inputs)
}

//! Where the kernel source comes from and what identifies it.
//!
//! Reads the distro's `linux-source` tarball (default), or a tarball or kernel tree named by
//! `--source`. A tarball is identified by its SHA-256 and unpacked once into the cache
//! (`{cache}/kernel/source/{sha256}/`); a tree is identified by its git commit and status, or
//! else by a listing of its files' sizes and modification times.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::util;

/// Where Debian's `linux-source-X.Y` package puts its tarball.
const DISTRO_SOURCE_DIR: &str = "/usr/src";

/// The file name prefix of that tarball (`linux-source-6.1.tar.xz`).
const DISTRO_SOURCE_PREFIX: &str = "linux-source-";

/// The package to install when no source tarball is there.
const DISTRO_SOURCE_INSTALL: &str = "apt-get install -y linux-source-6.1";

/// Marker written inside an unpacked tarball once unpacking finished.
const UNPACKED_MARKER: &str = ".boot-assets-unpacked";

/// A kernel source, identified but not yet unpacked: finding a cached build needs only the
/// identity, so a cache hit never unpacks the tarball.
#[derive(Debug, Clone)]
pub struct KernelSource {
    /// A short text that changes whenever the source changes.
    pub identity: String,
    kind: SourceKind,
}

#[derive(Debug, Clone)]
enum SourceKind {
    /// A kernel tree used in place.
    Tree(PathBuf),
    /// A tarball with its SHA-256, unpacked into the cache on first use.
    Tarball { path: PathBuf, sha256: String },
}

impl KernelSource {
    /// The top of the kernel tree (holds `Makefile` and `Kconfig`), unpacking a tarball once.
    pub fn tree(&self, sh: &Shell) -> Result<PathBuf> {
        match &self.kind {
            SourceKind::Tree(tree) => Ok(tree.clone()),
            SourceKind::Tarball { path, sha256 } => unpack_tarball(sh, path, sha256),
        }
    }
}

/// The newest `linux-source-*.tar.*` under /usr/src, or an error saying what to install.
pub fn distro_tarball() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(DISTRO_SOURCE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(DISTRO_SOURCE_PREFIX) && name.contains(".tar"))
        })
        .collect();
    candidates.sort_by_key(|path| version_key(path));
    match candidates.pop() {
        Some(path) => Ok(path),
        None => bail!(
            "no kernel source: {DISTRO_SOURCE_DIR}/{DISTRO_SOURCE_PREFIX}*.tar.xz is missing; \
             install it with `{DISTRO_SOURCE_INSTALL}` or pass --source with a kernel tree or tarball"
        ),
    }
}

/// Sort key of `linux-source-6.10.tar.xz`: the numeric version components, so 6.10 > 6.9.
fn version_key(path: &Path) -> Vec<u64> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.trim_start_matches(DISTRO_SOURCE_PREFIX)
        .split(".tar")
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// Resolves `--source` (or the distro tarball) to its identity.
pub fn resolve(sh: &Shell, source: Option<&Path>) -> Result<KernelSource> {
    let path = match source {
        Some(path) => path.to_path_buf(),
        None => distro_tarball()?,
    };
    let metadata = std::fs::metadata(&path).with_context(|| format!("--source {}: cannot read it", path.display()))?;
    if metadata.is_dir() {
        let tree = path
            .canonicalize()
            .with_context(|| format!("--source {}: cannot resolve it", path.display()))?;
        if !tree.join("Makefile").is_file() || !tree.join("Kconfig").is_file() {
            bail!(
                "--source {}: not a kernel tree (no Makefile and Kconfig at its top)",
                tree.display()
            );
        }
        let identity = tree_identity(sh, &tree)?;
        return Ok(KernelSource {
            identity,
            kind: SourceKind::Tree(tree),
        });
    }
    let sha256 = util::sha256_file(&path).with_context(|| format!("hashing kernel source {}", path.display()))?;
    Ok(KernelSource {
        identity: format!("tarball-sha256:{sha256}"),
        kind: SourceKind::Tarball { path, sha256 },
    })
}

/// Unpacks a source tarball once into `{cache}/kernel/source/{sha256}/` and returns its tree.
fn unpack_tarball(sh: &Shell, tarball: &Path, sha256: &str) -> Result<PathBuf> {
    let root = util::cache_dir().join("kernel").join("source");
    let unpacked = root.join(sha256);
    if !unpacked.join(UNPACKED_MARKER).exists() {
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let staging = tempfile::tempdir_in(&root)
            .with_context(|| format!("creating a staging directory in {}", root.display()))?;
        let into = staging.path();
        eprintln!("kernel: unpacking {} (once per source)", tarball.display());
        cmd!(sh, "tar -xf {tarball} -C {into}")
            .quiet()
            .run()
            .with_context(|| format!("unpacking kernel source {}", tarball.display()))?;
        std::fs::write(into.join(UNPACKED_MARKER), sha256)
            .with_context(|| format!("writing the unpack marker in {}", into.display()))?;
        if unpacked.exists() {
            std::fs::remove_dir_all(&unpacked).with_context(|| format!("removing {}", unpacked.display()))?;
        }
        let staged = staging.keep();
        std::fs::rename(&staged, &unpacked)
            .with_context(|| format!("moving {} to {}", staged.display(), unpacked.display()))?;
    }
    single_tree_in(&unpacked).with_context(|| format!("kernel source {}: unexpected layout", tarball.display()))
}

/// The one kernel tree inside an unpacked tarball: the directory itself or its single subdirectory.
fn single_tree_in(dir: &Path) -> Result<PathBuf> {
    if dir.join("Makefile").is_file() && dir.join("Kconfig").is_file() {
        return Ok(dir.to_path_buf());
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    match subdirs.as_slice() {
        [tree] if tree.join("Makefile").is_file() && tree.join("Kconfig").is_file() => Ok(tree.clone()),
        _ => bail!(
            "{} holds no single kernel tree (a directory with Makefile and Kconfig)",
            dir.display()
        ),
    }
}

/// Identity of a kernel tree: `git` commit plus a digest of `git status` when it is a checkout,
/// else a digest of every file's path, size and modification time.
fn tree_identity(sh: &Shell, tree: &Path) -> Result<String> {
    if tree.join(".git").exists() {
        let head = cmd!(sh, "git -C {tree} rev-parse HEAD").quiet().read();
        let status = cmd!(sh, "git -C {tree} status --porcelain").quiet().read();
        if let (Ok(head), Ok(status)) = (head, status) {
            return Ok(format!("git:{head}:{}", util::sha256_bytes(status.as_bytes())));
        }
    }
    let mut listing = String::new();
    for entry in walkdir::WalkDir::new(tree).sort_by_file_name() {
        let entry = entry.with_context(|| format!("listing kernel tree {}", tree.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let metadata = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let relative = entry.path().strip_prefix(tree).unwrap_or(entry.path());
        writeln!(
            listing,
            "{} {} {}",
            relative.display(),
            metadata.len(),
            metadata.mtime()
        )
        .expect("writing to a String");
    }
    Ok(format!(
        "tree:{}:{}",
        tree.display(),
        util::sha256_bytes(listing.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_sorts_last() {
        let mut paths = [
            PathBuf::from("/usr/src/linux-source-6.10.tar.xz"),
            PathBuf::from("/usr/src/linux-source-6.9.tar.xz"),
            PathBuf::from("/usr/src/linux-source-6.1.tar.xz"),
        ];
        paths.sort_by_key(|path| version_key(path));
        assert_eq!(paths[2], PathBuf::from("/usr/src/linux-source-6.10.tar.xz"));
    }

    #[test]
    fn a_directory_that_is_not_a_kernel_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        let err = resolve(&sh, Some(dir.path())).unwrap_err();
        assert!(format!("{err:#}").contains("not a kernel tree"), "{err:#}");
    }

    #[test]
    fn a_tree_identity_changes_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        std::fs::write(dir.path().join("Makefile"), "a").unwrap();
        let before = tree_identity(&sh, dir.path()).unwrap();
        std::fs::write(dir.path().join("Makefile"), "ab").unwrap();
        assert_ne!(before, tree_identity(&sh, dir.path()).unwrap());
    }
}

//! Writes the image tree as a tar stream with normalized modes, owners and times (device nodes
//! included, which a staging directory could only hold with mknod) and runs mkfs.erofs on it
//! (`--tar=f`, erofs-utils >= 1.8: the tool set's own, built from its pinned source); stages
//! the tree as a directory for the checks that run its programs; derives the filesystem UUID
//! from the tree; reports the size and the largest contributors and enforces the budget.
//!
//! Reads the tree (a value); writes the tar stream, the staging directory and the image file
//! it is given.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use super::tree::{ImageTree, Node};

/// Mode of directories and executable files in the image.
const EXECUTABLE_MODE: u32 = 0o755;
/// Mode of every other regular file in the image.
const REGULAR_MODE: u32 = 0o644;
/// LZ4HC at its highest level: the kernel decompresses LZ4 fast; HC only costs build time.
const MKFS_COMPRESSION: &str = "-zlz4hc,12";
/// mkfs.erofs reads the tree from a tar stream, file data included.
const MKFS_TAR: &str = "--tar=f";
/// 64 KiB physical clusters compress about 15% better than 4 KiB; Linux ≥ 5.13 reads them.
const MKFS_PCLUSTER: &str = "-C65536";
/// Packs the compressed tails of files into their inodes (Linux ≥ 5.17).
const MKFS_EXTENDED: &str = "-Eztailpacking";
/// No extended attributes from the staging directory (SELinux labels, capabilities of the host).
const MKFS_NO_XATTRS: &str = "-x-1";
/// Every file root-owned, whatever ran the build.
const MKFS_ALL_ROOT: &str = "--all-root";
/// How many files the size report lists.
const LARGEST_FILES_SHOWN: usize = 10;
/// How many origins (packages, local folders) the size report lists.
const LARGEST_ORIGINS_SHOWN: usize = 10;

/// The fixed mkfs.erofs options (the timestamp and UUID are added per build).
pub const MKFS_FIXED_FLAGS: [&str; 5] = [
    MKFS_COMPRESSION,
    MKFS_PCLUSTER,
    MKFS_EXTENDED,
    MKFS_NO_XATTRS,
    MKFS_ALL_ROOT,
];

/// Every mkfs.erofs option for one build.
pub fn mkfs_flags(epoch: u64, uuid: &str) -> Vec<String> {
    let mut flags: Vec<String> = MKFS_FIXED_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    flags.push(format!("-T{epoch}"));
    flags.push(format!("-U{uuid}"));
    flags
}

/// A UUID derived from the whole tree (paths, kinds, modes, contents) and the mkfs options: the
/// same inputs give the same UUID, different images different ones.
pub fn derive_uuid(tree: &ImageTree) -> String {
    let mut hasher = Sha256::new();
    for flag in MKFS_FIXED_FLAGS {
        hasher.update(flag.as_bytes());
        hasher.update([0]);
    }
    for (path, entry) in &tree.entries {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        match &entry.node {
            Node::Dir => hasher.update(b"d"),
            Node::File { bytes, executable } => {
                hasher.update(if *executable { b"x" } else { b"f" });
                hasher.update(Sha256::digest(bytes));
            }
            Node::Symlink { target } => {
                hasher.update(b"l");
                hasher.update(target.as_bytes());
            }
            Node::CharDevice { major, minor, mode } => {
                hasher.update(b"c");
                hasher.update(format!("{major}:{minor}:{mode:o}").as_bytes());
            }
        }
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // RFC 4122 version 4 / variant 1 bits, so every tool accepts it as an ordinary UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The mode a node gets in the image.
pub fn normalized_mode(node: &Node) -> u32 {
    match node {
        Node::Dir | Node::File { executable: true, .. } => EXECUTABLE_MODE,
        Node::File { executable: false, .. } | Node::Symlink { .. } => REGULAR_MODE,
        Node::CharDevice { mode, .. } => *mode,
    }
}

/// The tree as a tar stream in path order: root-owned, normalized modes, every time `epoch`.
pub fn tar_stream(tree: &ImageTree, epoch: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &tree.entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        header.set_mode(normalized_mode(&entry.node));
        header.set_size(0);
        let data: &[u8] = match &entry.node {
            Node::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Node::File { bytes, .. } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                bytes
            }
            Node::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                builder
                    .append_link(&mut header, path, target)
                    .with_context(|| format!("adding /{path} to the tar stream"))?;
                continue;
            }
            Node::CharDevice { major, minor, .. } => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_device_major(*major)?;
                header.set_device_minor(*minor)?;
                &[]
            }
        };
        builder
            .append_data(&mut header, path, data)
            .with_context(|| format!("adding /{path} to the tar stream"))?;
    }
    builder.into_inner().context("finishing the tar stream")
}

/// Writes the tree under `root` (an empty directory) with normalized modes; device nodes are
/// left out (only the image holds them).
pub fn write_staging(tree: &ImageTree, root: &Path) -> Result<()> {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(EXECUTABLE_MODE))
        .with_context(|| format!("setting the mode of {}", root.display()))?;
    // BTreeMap order puts every directory before its contents.
    for (path, entry) in &tree.entries {
        let target = root.join(path);
        match &entry.node {
            Node::Dir => std::fs::create_dir(&target).with_context(|| format!("creating {}", target.display()))?,
            Node::File { bytes, .. } => {
                std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?
            }
            Node::Symlink { target: link } => std::os::unix::fs::symlink(link, &target)
                .with_context(|| format!("creating symlink {}", target.display()))?,
            Node::CharDevice { .. } => continue,
        }
        if !matches!(entry.node, Node::Symlink { .. }) {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(normalized_mode(&entry.node)))
                .with_context(|| format!("setting the mode of {}", target.display()))?;
        }
    }
    Ok(())
}

/// Runs `mkfs` (erofs-utils >= 1.8) on a tar stream; returns its version as printed in its
/// banner (e.g. `1.8.6`).
pub fn run_mkfs(sh: &Shell, mkfs: &Path, tar: &Path, output: &Path, flags: &[String]) -> Result<String> {
    let result = cmd!(sh, "{mkfs} {MKFS_TAR} {flags...} {output} {tar}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", mkfs.display()))?;
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    if !result.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            mkfs.display(),
            result.status,
            stdout,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    parse_mkfs_version(&stdout).with_context(|| format!("mkfs.erofs printed no version banner:\n{stdout}"))
}

/// The version from mkfs.erofs's first line, `mkfs.erofs 1.5`.
pub fn parse_mkfs_version(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?;
    let version = first.strip_prefix("mkfs.erofs")?.trim();
    (!version.is_empty()).then(|| version.to_owned())
}

/// The size report: image size and budget, then the largest files and origins (uncompressed).
pub fn size_report(tree: &ImageTree, image_bytes: u64, budget_bytes: u64) -> String {
    let mut files: Vec<(usize, &str, &str)> = tree
        .files()
        .map(|(path, bytes, _, origin)| (bytes.len(), path.as_str(), origin.as_str()))
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut by_origin: BTreeMap<&str, usize> = BTreeMap::new();
    for (size, _, origin) in &files {
        *by_origin.entry(origin).or_default() += size;
    }
    let mut origins: Vec<(&str, usize)> = by_origin.into_iter().collect();
    origins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: usize = files.iter().map(|file| file.0).sum();

    let mut report = format!(
        "image {image_bytes} bytes ({:.2} MiB) of a {budget_bytes}-byte budget ({:.2} MiB); {} files, {total} bytes uncompressed\n",
        mib(image_bytes),
        mib(budget_bytes),
        files.len()
    );
    report.push_str("largest files (uncompressed):\n");
    for (size, path, origin) in files.iter().take(LARGEST_FILES_SHOWN) {
        report.push_str(&format!("  {size:>9}  /{path}  ({origin})\n"));
    }
    report.push_str("largest contributors (uncompressed):\n");
    for (origin, size) in origins.iter().take(LARGEST_ORIGINS_SHOWN) {
        report.push_str(&format!("  {size:>9}  {origin}\n"));
    }
    report
}

/// Fails when the image exceeds the budget, with the size report in the message.
pub fn check_budget(tree: &ImageTree, image_bytes: u64, budget_bytes: u64) -> Result<()> {
    if image_bytes > budget_bytes {
        bail!(
            "the image is {image_bytes} bytes, over the recipe's size_budget_bytes of {budget_bytes}: drop or \
             shrink the largest contributors, or raise the budget in the recipe\n{}",
            size_report(tree, image_bytes, budget_bytes).trim_end()
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> ImageTree {
        let mut tree = ImageTree::default();
        tree.add("bin/busybox", Node::file(vec![0; 300], true), "busybox-static")
            .unwrap();
        tree.add("etc/x", Node::file(vec![0; 10], false), "overlay").unwrap();
        tree.add("bin/sh", Node::symlink("busybox"), "recipe").unwrap();
        tree
    }

    #[test]
    fn uuid_is_stable_well_formed_and_content_sensitive() {
        let first = derive_uuid(&tree());
        assert_eq!(first, derive_uuid(&tree()));
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "4");
        let mut changed = tree();
        changed.entries.remove("etc/x");
        assert_ne!(first, derive_uuid(&changed));
    }

    #[test]
    fn modes_are_normalized() {
        assert_eq!(normalized_mode(&Node::Dir), 0o755);
        assert_eq!(
            normalized_mode(&Node::File {
                bytes: vec![],
                executable: false
            }),
            0o644
        );
    }

    #[test]
    fn staging_has_normalized_modes_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        write_staging(&tree(), &root).unwrap();
        let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode("bin/busybox"), 0o755);
        assert_eq!(mode("etc/x"), 0o644);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
    }

    #[test]
    fn budget_error_names_the_largest_contributors() {
        check_budget(&tree(), 100, 100).unwrap();
        let err = check_budget(&tree(), 101, 100).unwrap_err().to_string();
        assert!(
            err.starts_with("the image is 101 bytes, over the recipe's size_budget_bytes of 100"),
            "{err}"
        );
        assert!(err.contains("      300  /bin/busybox  (busybox-static)"), "{err}");
        assert!(err.contains("      300  busybox-static\n"), "{err}");
    }

    #[test]
    fn reads_the_mkfs_banner() {
        assert_eq!(
            parse_mkfs_version("mkfs.erofs 1.5\nBuild completed.\n").as_deref(),
            Some("1.5")
        );
        assert_eq!(parse_mkfs_version("something else"), None);
        assert_eq!(mkfs_flags(7, "u")[5..], ["-T7".to_owned(), "-Uu".to_owned()]);
    }
}

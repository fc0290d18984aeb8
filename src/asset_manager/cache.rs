//! The verified cache: beside every installed file `{dir}/{name}` a record `{dir}/.{name}.verified`
//! holds the digest it was verified against and the file's size, modification time and inode at
//! that moment. A warm `prepare()` compares these with `stat()` instead of re-hashing gigabytes;
//! any change on disk makes the record stale, and the file is re-hashed or re-fetched.
//!
//! Reads and writes only the record files (atomically, through `fsutil`).

use std::path::{Path, PathBuf};

use crate::fsutil;

use super::error::AssetError;

/// What `stat()` says about a file, as far as the record is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_nanos: u128,
    inode: u64,
}

/// The record file of `target`: `.{file name}.verified` in the same directory.
pub(crate) fn record_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    target.with_file_name(format!(".{name}.verified"))
}

/// True when `target` is exactly the file that was verified against `sha256` and has not been
/// touched since.
pub(crate) fn is_verified(target: &Path, sha256: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(record_path(target)) else {
        return false;
    };
    let Some((recorded_sha, recorded_stamp)) = parse_record(&text) else {
        return false;
    };
    recorded_sha == sha256 && stamp(target).is_some_and(|now| now == recorded_stamp)
}

/// Records that `target`, as it is now, has digest `sha256`.
pub(crate) fn write_record(target: &Path, sha256: &str) -> Result<(), AssetError> {
    let stamp = stamp(target).ok_or_else(|| AssetError::Io {
        step: "reading metadata of",
        path: target.to_path_buf(),
        error: std::io::Error::other("the file vanished right after it was installed"),
    })?;
    let path = record_path(target);
    fsutil::write_atomic(&path, format_record(sha256, &stamp).as_bytes()).map_err(AssetError::io("writing", path))
}

/// Forgets what was verified about `target` (before it is replaced).
pub(crate) fn remove_record(target: &Path) {
    let _ = std::fs::remove_file(record_path(target));
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let mtime_nanos = metadata
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        size: metadata.len(),
        mtime_nanos,
        inode,
    })
}

fn format_record(sha256: &str, stamp: &Stamp) -> String {
    format!(
        "sha256={sha256} size={} mtime_ns={} inode={}\n",
        stamp.size, stamp.mtime_nanos, stamp.inode
    )
}

fn parse_record(text: &str) -> Option<(String, Stamp)> {
    let mut sha256 = None;
    let (mut size, mut mtime_nanos, mut inode) = (None, None, None);
    for field in text.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "sha256" => sha256 = Some(value.to_owned()),
            "size" => size = value.parse().ok(),
            "mtime_ns" => mtime_nanos = value.parse().ok(),
            "inode" => inode = value.parse().ok(),
            _ => return None,
        }
    }
    Some((
        sha256?,
        Stamp {
            size: size?,
            mtime_nanos: mtime_nanos?,
            inode: inode?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn record_round_trips() {
        let stamp = Stamp {
            size: 3,
            mtime_nanos: 1_700_000_000_123_456_789,
            inode: 42,
        };
        let text = format_record(SHA, &stamp);
        assert_eq!(parse_record(&text), Some((SHA.to_owned(), stamp)));
        assert_eq!(parse_record("sha256=x size=1"), None);
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn a_changed_file_is_no_longer_verified() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kernel");
        std::fs::write(&target, b"abc").unwrap();
        assert!(!is_verified(&target, SHA));
        write_record(&target, SHA).unwrap();
        assert!(is_verified(&target, SHA));
        assert!(!is_verified(&target, &"0".repeat(64)));
        assert_eq!(record_path(&target), dir.path().join(".kernel.verified"));

        // Same size, new content: the modification time moves, so the record goes stale.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&target, b"abd").unwrap();
        assert!(!is_verified(&target, SHA));
    }
}

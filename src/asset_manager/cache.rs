//! The verified cache: beside every installed file `{dir}/{name}` a record `{dir}/.{name}.verified`
//! holds the digest it was verified against and what `lstat()` said about the file at that
//! moment: size, modification time, status-change time (ctime), inode and device. A warm
//! `prepare()` compares these instead of re-hashing gigabytes. Any change on disk makes the
//! record stale, including an in-place edit whose mtime was put back (the kernel moves ctime on
//! every write and on every `utimensat`, and no unprivileged call can set it back).
//!
//! Reads and writes only the record files, through the directory handle (never through a link).

use super::error::AssetError;
use super::safe_fs::{Dir, Stamp};

/// Largest record file read (a record is one short line).
const MAX_RECORD_BYTES: u64 = 4096;

/// The record file name of `name`: `.{name}.verified`.
pub(crate) fn record_name(name: &str) -> String {
    format!(".{name}.verified")
}

/// True when `dir/name` is exactly the regular file that was verified against `sha256` and has
/// not been touched since.
pub(crate) fn is_verified(dir: &Dir, name: &str, sha256: &str) -> bool {
    let Ok(Some(bytes)) = dir.read_small(&record_name(name), MAX_RECORD_BYTES) else {
        return false;
    };
    let Some((recorded_sha, recorded_stamp)) = std::str::from_utf8(&bytes).ok().and_then(parse_record) else {
        return false;
    };
    recorded_sha == sha256 && dir.stamp(name).is_some_and(|now| now == recorded_stamp)
}

/// Records that `dir/name`, as it is now, has digest `sha256`.
pub(crate) fn write_record(dir: &Dir, name: &str, sha256: &str) -> Result<(), AssetError> {
    let stamp = dir.stamp(name).ok_or_else(|| AssetError::Io {
        step: "reading metadata of",
        path: dir.join(name),
        error: std::io::Error::other("the file vanished right after it was installed"),
    })?;
    dir.write_atomic(&record_name(name), format_record(sha256, &stamp).as_bytes(), 0o644)
}

/// Forgets what was verified about `dir/name` (before it is replaced).
pub(crate) fn remove_record(dir: &Dir, name: &str) {
    let _ = dir.remove(&record_name(name));
}

fn format_record(sha256: &str, stamp: &Stamp) -> String {
    format!(
        "sha256={sha256} size={} mtime_ns={} ctime_ns={} inode={} device={}\n",
        stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.inode, stamp.device
    )
}

/// Parses a record; a record of an older format (without ctime) does not parse, so the file is
/// re-hashed once and recorded again.
fn parse_record(text: &str) -> Option<(String, Stamp)> {
    let mut sha256 = None;
    let (mut size, mut mtime_ns, mut ctime_ns, mut inode, mut device) = (None, None, None, None, None);
    for field in text.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "sha256" => sha256 = Some(value.to_owned()),
            "size" => size = value.parse().ok(),
            "mtime_ns" => mtime_ns = value.parse().ok(),
            "ctime_ns" => ctime_ns = value.parse().ok(),
            "inode" => inode = value.parse().ok(),
            "device" => device = value.parse().ok(),
            _ => return None,
        }
    }
    Some((
        sha256?,
        Stamp {
            size: size?,
            mtime_ns: mtime_ns?,
            ctime_ns: ctime_ns?,
            inode: inode?,
            device: device?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn record_round_trips_and_old_records_do_not_parse() {
        let stamp = Stamp {
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_001_000_000_000,
            inode: 42,
            device: 7,
        };
        let text = format_record(SHA, &stamp);
        assert_eq!(parse_record(&text), Some((SHA.to_owned(), stamp)));
        assert_eq!(parse_record(&format!("sha256={SHA} size=3 mtime_ns=1 inode=42")), None);
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn an_in_place_edit_with_the_mtime_put_back_is_seen() {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(temp.path(), Arc::new(|_: &Path| {})).unwrap();
        let target = temp.path().join("kernel");
        std::fs::write(&target, b"abc").unwrap();
        assert!(!is_verified(&dir, "kernel", SHA));
        write_record(&dir, "kernel", SHA).unwrap();
        assert!(is_verified(&dir, "kernel", SHA));
        assert!(!is_verified(&dir, "kernel", &"0".repeat(64)));

        // Same size, new content, the old mtime restored: only ctime shows it.
        let mtime = std::fs::metadata(&target).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = std::fs::OpenOptions::new().write(true).open(&target).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"abd", 0).unwrap();
        file.set_modified(mtime).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&target).unwrap().modified().unwrap(), mtime);
        assert!(!is_verified(&dir, "kernel", SHA));
    }
}

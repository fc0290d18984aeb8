//! The cache records, all in one format: a single line of `key=value` fields separated by
//! spaces, written atomically through the directory handle (never through a link). There are
//! three of them:
//!
//! - `{dir}/.{name}.verified` beside every installed file: the digest it was verified against
//!   and what `lstat()` said about the file at that moment: size, modification time,
//!   status-change time (ctime), inode and device. A warm `prepare()` compares these instead of
//!   re-hashing gigabytes. Any change on disk makes the record stale, including an in-place
//!   edit whose mtime was put back (the kernel moves ctime on every write and on every
//!   `utimensat`, and no unprivileged call can set it back).
//! - `{cache}/.last-resolved` ([`LAST_RESOLVED_FILE`]): the version `latest` last resolved to,
//!   and whether its `latest.json` was signature-checked (`version=0.2.0 signed=true`).
//! - `{cache}/.highest-verified` ([`HIGHEST_VERIFIED_FILE`]): the highest version a signed
//!   `latest.json` named (`version=0.3.0`); one written as `latest.json` JSON by an older
//!   library is still read, so the rollback protection survives an upgrade.
//!
//! Durability: where the platform names its boot (Linux: `/proc/sys/kernel/random/boot_id`), an
//! install does not wait for the disk. The verified file is renamed into place and its record
//! written without an fsync, and the record names the boot it was written in. Within that boot
//! the kernel's page cache is the file, so the record is trusted; a record of another boot (after
//! a reboot or a crash, when the data may never have reached the disk) is not, and the file is
//! re-hashed once. The first warm start in the same boot makes the install durable (fsync of the
//! file, then a record without a boot). Elsewhere every install is fsynced before its rename.
//!
//! Reads the boot identity from procfs. Imports only the directory handle and the error type.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::error::AssetError;
use super::safe_fs::{Dir, Durability, Stamp};
use crate::manifest::Latest;

/// In the cache dir: the version `latest` last resolved to, and whether its `latest.json` was
/// signature-checked (`version=0.2.0 signed=true`); used when `latest.json` cannot be fetched.
pub const LAST_RESOLVED_FILE: &str = ".last-resolved";

/// In the cache dir: the highest version a signature-checked `latest.json` has named; a signed
/// `latest.json` naming a lower one is refused as a rollback.
pub const HIGHEST_VERIFIED_FILE: &str = ".highest-verified";

/// Largest record file read (a record is one short line).
const MAX_RECORD_BYTES: u64 = 4096;

/// Mode of every record file.
const RECORD_MODE: u32 = 0o644;

/// One record's fields, in a stable order.
type Fields = BTreeMap<String, String>;

/// `key=value key=value\n`; keys in the order given.
fn format_fields(fields: &[(&str, String)]) -> String {
    let line: Vec<String> = fields.iter().map(|(key, value)| format!("{key}={value}")).collect();
    format!("{}\n", line.join(" "))
}

/// The fields of a record, or `None` when it is not one (a word without `=`).
fn parse_fields(text: &str) -> Option<Fields> {
    text.split_whitespace()
        .map(|field| field.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Reads the record `name` of `dir`, when there is one that parses.
fn read_fields(dir: &Dir, name: &str) -> Option<Fields> {
    let bytes = dir.read_small(name, MAX_RECORD_BYTES).ok().flatten()?;
    parse_fields(std::str::from_utf8(&bytes).ok()?)
}

/// The version `latest` last resolved to and whether that was signature-checked.
pub(crate) fn read_last_resolved(root: &Dir) -> Option<(String, bool)> {
    let fields = read_fields(root, LAST_RESOLVED_FILE)?;
    let version = fields.get("version")?.clone();
    Some((version, fields.get("signed").is_some_and(|v| v == "true")))
}

/// Records the version `latest` resolved to.
pub(crate) fn write_last_resolved(root: &Dir, version: &str, signed: bool) -> Result<(), AssetError> {
    let text = format_fields(&[("version", version.to_owned()), ("signed", signed.to_string())]);
    root.write_atomic(LAST_RESOLVED_FILE, text.as_bytes(), RECORD_MODE, Durability::Now)
}

/// The highest version a signed `latest.json` named (also from an older library's JSON record).
pub(crate) fn read_highest_verified(root: &Dir) -> Option<String> {
    let bytes = root
        .read_small(HIGHEST_VERIFIED_FILE, MAX_RECORD_BYTES)
        .ok()
        .flatten()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    match parse_fields(text).and_then(|mut fields| fields.remove("version")) {
        Some(version) => Some(version),
        None => Latest::from_json(&bytes).ok().map(|latest| latest.version),
    }
}

/// Records the highest version a signed `latest.json` named.
pub(crate) fn write_highest_verified(root: &Dir, version: &str) -> Result<(), AssetError> {
    let text = format_fields(&[("version", version.to_owned())]);
    root.write_atomic(HIGHEST_VERIFIED_FILE, text.as_bytes(), RECORD_MODE, Durability::Now)
}

/// The record file name of `name`: `.{name}.verified`.
pub(crate) fn record_name(name: &str) -> String {
    format!(".{name}.verified")
}

/// What a record says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verified {
    /// No valid record, or the file changed since: the digest must decide.
    No,
    /// Verified, and on disk.
    Durable,
    /// Verified in this boot, renamed into place without waiting for the disk.
    ThisBoot,
}

/// The boot that installs are trusted in without an fsync; `None` where the platform names no
/// boot, and then every install is durable before it counts.
pub(crate) fn this_boot() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(read_boot_id).as_deref()
}

#[cfg(target_os = "linux")]
fn read_boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    let valid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then(|| id.to_owned())
}

#[cfg(not(target_os = "linux"))]
fn read_boot_id() -> Option<String> {
    None
}

/// How far `dir/name` can be trusted to be the regular file that was verified against `sha256`.
pub(crate) fn check(dir: &Dir, name: &str, sha256: &str) -> Verified {
    let Ok(Some(bytes)) = dir.read_small(&record_name(name), MAX_RECORD_BYTES) else {
        return Verified::No;
    };
    let Some(record) = std::str::from_utf8(&bytes).ok().and_then(parse_record) else {
        return Verified::No;
    };
    if record.sha256 != sha256 || !dir.stamp(name).is_some_and(|now| now == record.stamp) {
        return Verified::No;
    }
    match record.boot {
        None => Verified::Durable,
        Some(boot) if this_boot() == Some(boot.as_str()) => Verified::ThisBoot,
        // Written in another boot before the data was known to be on disk.
        Some(_) => Verified::No,
    }
}

/// True when `dir/name` is exactly the regular file that was verified against `sha256` and has
/// not been touched since.
pub(crate) fn is_verified(dir: &Dir, name: &str, sha256: &str) -> bool {
    check(dir, name, sha256) != Verified::No
}

/// Records that `dir/name`, as it is now, has digest `sha256`; with `boot`, that it was verified
/// in that boot and may not be on disk yet (the record itself is then not fsynced either).
pub(crate) fn write_verified(dir: &Dir, name: &str, sha256: &str, boot: Option<&str>) -> Result<(), AssetError> {
    let stamp = dir.stamp(name).ok_or_else(|| AssetError::Io {
        step: "reading metadata of",
        path: dir.join(name),
        error: std::io::Error::other("the file vanished right after it was installed"),
    })?;
    let record = Record {
        sha256: sha256.to_owned(),
        stamp,
        boot: boot.map(str::to_owned),
    };
    let durability = if boot.is_some() {
        Durability::Deferred
    } else {
        Durability::Now
    };
    dir.write_atomic(
        &record_name(name),
        format_record(&record).as_bytes(),
        RECORD_MODE,
        durability,
    )
}

/// Forgets what was verified about `dir/name` (before it is replaced).
pub(crate) fn remove_verified(dir: &Dir, name: &str) {
    let _ = dir.remove(&record_name(name));
}

/// One record file.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    sha256: String,
    stamp: Stamp,
    /// The boot it was written in, for a file not yet known to be on disk.
    boot: Option<String>,
}

fn format_record(record: &Record) -> String {
    let Record { sha256, stamp, boot } = record;
    let mut fields = vec![
        ("sha256", sha256.clone()),
        ("size", stamp.size.to_string()),
        ("mtime_ns", stamp.mtime_ns.to_string()),
        ("ctime_ns", stamp.ctime_ns.to_string()),
        ("inode", stamp.inode.to_string()),
        ("device", stamp.device.to_string()),
    ];
    if let Some(boot) = boot {
        fields.push(("boot", boot.clone()));
    }
    format_fields(&fields)
}

/// Parses a record; a record of an older format (without ctime) or with a field it does not
/// know does not parse, so the file is re-hashed once and recorded again.
fn parse_record(text: &str) -> Option<Record> {
    let mut fields = parse_fields(text)?;
    let stamp = Stamp {
        size: fields.get("size")?.parse().ok()?,
        mtime_ns: fields.get("mtime_ns")?.parse().ok()?,
        ctime_ns: fields.get("ctime_ns")?.parse().ok()?,
        inode: fields.get("inode")?.parse().ok()?,
        device: fields.get("device")?.parse().ok()?,
    };
    let record = Record {
        sha256: fields.remove("sha256")?,
        stamp,
        boot: fields.remove("boot"),
    };
    const KNOWN: [&str; 5] = ["size", "mtime_ns", "ctime_ns", "inode", "device"];
    fields.keys().all(|key| KNOWN.contains(&key.as_str())).then_some(record)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn the_version_records_round_trip_and_an_old_json_record_is_read() {
        let temp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(temp.path(), Arc::new(|_: &Path| {})).unwrap();
        assert_eq!(read_last_resolved(&root), None);
        write_last_resolved(&root, "0.2.0", true).unwrap();
        assert_eq!(read_last_resolved(&root), Some(("0.2.0".to_owned(), true)));
        assert_eq!(
            std::fs::read_to_string(temp.path().join(LAST_RESOLVED_FILE)).unwrap(),
            "version=0.2.0 signed=true\n"
        );
        write_highest_verified(&root, "0.3.0").unwrap();
        assert_eq!(read_highest_verified(&root).as_deref(), Some("0.3.0"));
        std::fs::write(
            temp.path().join(HIGHEST_VERIFIED_FILE),
            "{\n  \"version\": \"0.4.0\"\n}\n",
        )
        .unwrap();
        assert_eq!(read_highest_verified(&root).as_deref(), Some("0.4.0"));
    }

    #[test]
    fn record_round_trips_and_old_records_do_not_parse() {
        let stamp = Stamp {
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_001_000_000_000,
            inode: 42,
            device: 7,
        };
        for boot in [None, Some("8f3b5f62-1c2d-4e5f-9a0b-1c2d3e4f5a6b".to_owned())] {
            let record = Record {
                sha256: SHA.to_owned(),
                stamp: stamp.clone(),
                boot,
            };
            assert_eq!(parse_record(&format_record(&record)), Some(record));
        }
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
        write_verified(&dir, "kernel", SHA, None).unwrap();
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

    #[test]
    fn a_record_of_this_boot_is_trusted_and_one_of_another_boot_is_not() {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(temp.path(), Arc::new(|_: &Path| {})).unwrap();
        std::fs::write(temp.path().join("rootfs.erofs"), b"abc").unwrap();
        let this = this_boot().expect("Linux names its boot in /proc/sys/kernel/random/boot_id");

        write_verified(&dir, "rootfs.erofs", SHA, Some(this)).unwrap();
        assert_eq!(check(&dir, "rootfs.erofs", SHA), Verified::ThisBoot);
        let record = std::fs::read_to_string(temp.path().join(record_name("rootfs.erofs"))).unwrap();
        assert!(record.contains(&format!(" boot={this}")), "{record}");

        // The same record after a reboot: the data may never have reached the disk.
        std::fs::write(
            temp.path().join(record_name("rootfs.erofs")),
            record.replace(this, "00000000-0000-4000-8000-000000000000"),
        )
        .unwrap();
        assert_eq!(check(&dir, "rootfs.erofs", SHA), Verified::No);

        write_verified(&dir, "rootfs.erofs", SHA, None).unwrap();
        assert_eq!(check(&dir, "rootfs.erofs", SHA), Verified::Durable);
    }
}

//! Reproducible `.tar.gz` archives: the same member bytes give the same archive bytes, whatever
//! the directory, clock, owner or umask of the build; and the one reader of such archives.
//!
//! [`write_tar_gz`] reads the member files and writes the archive atomically (temporary file,
//! then rename). [`read_members`] reads the named members back (`cdn-tree` into memory, `boot`
//! into files); [`walk_tar`], the member loop under it, also serves `sync-binaries`' extraction.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::{Compression, GzBuilder};

/// Mode of every member: a plain, readable file (the tarballs carry data, not programs).
const TAR_MEMBER_MODE: u32 = 0o644;

/// Owner and group of every member: root, with empty names.
const TAR_MEMBER_OWNER: u64 = 0;

/// Gzip level, fixed so the compressed bytes never depend on a default that might change.
const GZIP_LEVEL: u32 = 9;

/// Gzip header mtime: zero, so the archive does not record when it was compressed.
const GZIP_HEADER_MTIME: u32 = 0;

/// One archive member: its name in the archive and the file its bytes come from.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub source: PathBuf,
}

/// Writes `members` (sorted by name) into a reproducible `.tar.gz` at `output`.
///
/// Every member is a regular file, mode 0644, uid/gid 0 with empty owner names, and mtime
/// `mtime`. The gzip header carries no file name, mtime 0 and a fixed level.
pub fn write_tar_gz(output: &Path, members: &[Member], mtime: u64) -> Result<()> {
    let mut sorted = members.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    boot_assets::fsutil::write_atomic_with(output, |file| {
        let gzip = GzBuilder::new()
            .mtime(GZIP_HEADER_MTIME)
            .write(std::io::BufWriter::new(file), Compression::new(GZIP_LEVEL));
        let mut tar = tar::Builder::new(gzip);
        for member in &sorted {
            append_member(&mut tar, member, mtime)?;
        }
        let mut gzip = tar.into_inner()?;
        gzip.flush()?;
        gzip.finish()?.flush()
    })
    .with_context(|| format!("writing archive {}", output.display()))
}

fn append_member<W: Write>(tar: &mut tar::Builder<W>, member: &Member, mtime: u64) -> std::io::Result<()> {
    let file = std::fs::File::open(&member.source)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", member.source.display())))?;
    let size = file.metadata()?.len();
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(TAR_MEMBER_MODE);
    header.set_uid(TAR_MEMBER_OWNER);
    header.set_gid(TAR_MEMBER_OWNER);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_mtime(mtime);
    tar.append_data(&mut header, &member.name, file)
}

/// Reads a `.tar.gz`: calls `read` with the name and the bytes of every member named in
/// `wanted`, and fails when one of them is missing. Other members are skipped.
pub fn read_members(
    archive: &Path,
    wanted: &[&str],
    mut read: impl FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(archive).with_context(|| format!("opening archive {}", archive.display()))?;
    let reading = || format!("reading archive {}", archive.display());
    let mut seen = Vec::new();
    walk_tar(flate2::read::GzDecoder::new(file), &reading, |name, entry| {
        if let Some(wanted_name) = wanted.iter().find(|w| **w == name) {
            read(&name, entry).with_context(|| format!("reading member {name} of {}", archive.display()))?;
            seen.push(*wanted_name);
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    for name in wanted {
        if !seen.contains(name) {
            bail!("archive {} has no member {name}", archive.display());
        }
    }
    Ok(())
}

/// Streams the tar archive `tar`, giving `visit` each member's name (as stored, `./` and all) and
/// entry, until `visit` breaks with a value, which is returned; `reading` names the stream for errors.
pub fn walk_tar<R: Read, T>(
    tar: R,
    reading: &dyn Fn() -> String,
    mut visit: impl FnMut(String, &mut tar::Entry<'_, R>) -> Result<ControlFlow<T>>,
) -> Result<Option<T>> {
    let mut tar = tar::Archive::new(tar);
    for entry in tar.entries().with_context(reading)? {
        let mut entry = entry.with_context(reading)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let ControlFlow::Break(found) = visit(name, &mut entry)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The named members of a `.tar.gz`, read into memory.
pub fn read_members_to_memory(archive: &Path, wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut members = BTreeMap::new();
    read_members(archive, wanted, |name, reader| {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        members.insert(name.to_owned(), bytes);
        Ok(())
    })?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(dir: &Path) -> Vec<Member> {
        std::fs::write(dir.join("k"), b"kernel bytes").unwrap();
        std::fs::write(dir.join("r"), b"rootfs bytes").unwrap();
        vec![
            Member {
                name: "rootfs.erofs".into(),
                source: dir.join("r"),
            },
            Member {
                name: "kernel".into(),
                source: dir.join("k"),
            },
        ]
    }

    #[test]
    fn members_are_sorted_and_normalized() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar.gz");
        write_tar_gz(&out, &members(dir.path()), 1234).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap()));
        let mut seen = vec![];
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mode().unwrap(), 0o644);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            assert_eq!(header.username().unwrap(), Some(""));
            assert_eq!(header.mtime().unwrap(), 1234);
            seen.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(seen, ["kernel", "rootfs.erofs"]);
    }

    #[test]
    fn gzip_header_has_no_name_and_zero_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar.gz");
        write_tar_gz(&out, &members(dir.path()), 0).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0], "no FNAME flag");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    }

    #[test]
    fn the_reader_reads_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar.gz");
        write_tar_gz(&out, &members(dir.path()), 0).unwrap();
        let read = read_members_to_memory(&out, &["kernel", "rootfs.erofs"]).unwrap();
        assert_eq!(read["kernel"], b"kernel bytes");
        assert_eq!(read["rootfs.erofs"], b"rootfs bytes");
        let err = read_members_to_memory(&out, &["kernel", "manifest.json"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("archive {} has no member manifest.json", out.display())
        );
    }

    #[test]
    fn missing_member_names_the_file_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar.gz");
        let missing = vec![Member {
            name: "kernel".into(),
            source: dir.path().join("nope"),
        }];
        let err = write_tar_gz(&out, &missing, 0).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        assert!(!out.exists());
    }
}

//! Takes one member out of a `.tgz`, or out of a Debian package's data archive, while streaming
//! it: no archive is held in memory and nothing but the named regular file is ever written.
//!
//! Reads the archive or package file, writes the member atomically (temporary file, mode 0755,
//! rename).

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// How many near misses to list when the member is not in the archive.
const CLOSEST_MEMBERS_SHOWN: usize = 5;

/// Streams `archive` and writes the member named exactly `member` to `output`; returns its SHA-256.
///
/// A member with an absolute or `..` path, a link or any non-regular entry at the requested name
/// is refused; a miss lists the closest member names.
pub fn extract_member(archive: &Path, member: &str, output: &Path) -> Result<String> {
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let tar = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    extract_from_tar(tar, archive, "a .tgz", member, output)
}

/// Like [`extract_member`], for a Debian package: `member` is a path in its `data.tar.*`
/// (e.g. `usr/sbin/runc`), with the same refusals.
pub fn extract_deb_member(package: &Path, member: &str, output: &Path) -> Result<String> {
    let file = std::fs::File::open(package).with_context(|| format!("opening {}", package.display()))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.with_context(|| format!("reading {} as a Debian package (ar)", package.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name.starts_with("data.tar") {
            let tar = crate::debian::deb::data_tar_decoder(&name, entry)
                .with_context(|| format!("{}: member {name}", package.display()))?;
            return extract_from_tar(tar, package, &format!("the package's {name}"), member, output);
        }
    }
    bail!("{}: no data.tar member: not a Debian binary package", package.display())
}

/// Streams the tar archive `tar` (read from `origin`, described as `what` in errors) and writes
/// the member named `member` to `output`.
fn extract_from_tar(tar: impl Read, origin: &Path, what: &str, member: &str, output: &Path) -> Result<String> {
    let archive = origin;
    let reading = || format!("reading {} as {what}", archive.display());
    let mut names = Vec::new();
    let written = crate::archive::walk_tar(tar, &reading, |name, entry| {
        if name.trim_start_matches("./") != member {
            names.push(name);
            return Ok(ControlFlow::Continue(()));
        }
        let path = Path::new(&name);
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            bail!(
                "{}: member {name:?} has an absolute or `..` path; refusing it",
                archive.display()
            );
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            bail!(
                "{}: member {name:?} is a link, not a regular file; refusing it",
                archive.display()
            );
        }
        if !kind.is_file() {
            bail!(
                "{}: member {name:?} is not a regular file ({kind:?}); refusing it",
                archive.display()
            );
        }
        write_executable(entry, output)
            .with_context(|| format!("extracting {name:?} from {}", archive.display()))
            .map(ControlFlow::Break)
    })?;
    if let Some(sha256) = written {
        return Ok(sha256);
    }
    bail!(
        "{}: no member {member:?}; closest members: {}",
        archive.display(),
        closest(member, &names).join(", ")
    )
}

/// Streams `reader` into `output` (mode 0755, atomically) and returns the bytes' sha256.
pub fn write_executable(reader: &mut impl Read, output: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut hasher = Sha256::new();
    boot_assets::fsutil::write_atomic_with(output, |file| {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read])?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
    })
    .with_context(|| format!("writing {}", output.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The names nearest to `wanted` by edit distance, nearest first.
fn closest(wanted: &str, names: &[String]) -> Vec<String> {
    let mut ranked: Vec<(usize, &String)> = names.iter().map(|n| (strsim::levenshtein(wanted, n), n)).collect();
    ranked.sort();
    let shown: Vec<String> = ranked
        .iter()
        .take(CLOSEST_MEMBERS_SHOWN)
        .map(|(_, n)| format!("{n:?}"))
        .collect();
    if shown.is_empty() {
        vec!["(the archive is empty)".into()]
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a .tgz with regular files, a symlink and a `..` member (written raw, as a hostile
    /// archive would be).
    fn archive(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("docker.tgz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, body) in [("docker/dockerd", &b"dockerd-bytes"[..]), ("docker/runc", b"runc")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            tar.append_data(&mut header, name, body).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "docker/docker", "dockerd").unwrap();
        let mut evil = tar::Header::new_gnu();
        evil.set_size(4);
        evil.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
        evil.set_cksum();
        tar.append(&evil, &b"evil"[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn extracts_exact_member_with_digest_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out/dockerd");
        let digest = extract_member(&archive(dir.path()), "docker/dockerd", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"dockerd-bytes");
        assert_eq!(digest, crate::util::sha256_bytes(b"dockerd-bytes"));
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn miss_lists_closest_members() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        let err = extract_member(&archive(dir.path()), "docker/dockrd", &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no member \"docker/dockrd\"; closest members: \"docker/dockerd\""),
            "{err}"
        );
        assert!(!out.exists());
    }

    /// Builds a Debian package whose data.tar.xz holds `usr/sbin/runc` and the link Debian ships
    /// beside it, `usr/bin/runc -> ../sbin/runc`.
    fn package(dir: &Path) -> std::path::PathBuf {
        let mut data = tar::Builder::new(xz2::write::XzEncoder::new(Vec::new(), 1));
        let mut header = tar::Header::new_gnu();
        header.set_size(10);
        header.set_mode(0o755);
        header.set_cksum();
        data.append_data(&mut header, "./usr/sbin/runc", &b"runc-bytes"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        data.append_link(&mut link, "./usr/bin/runc", "../sbin/runc").unwrap();
        let data = data.into_inner().unwrap().finish().unwrap();
        let path = dir.join("runc.deb");
        let mut deb = ar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, body) in [("debian-binary", &b"2.0\n"[..]), ("data.tar.xz", &data)] {
            let header = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
            deb.append(&header, body).unwrap();
        }
        path
    }

    #[test]
    fn takes_a_program_out_of_a_debian_package() {
        let dir = tempfile::tempdir().unwrap();
        let deb = package(dir.path());
        let out = dir.path().join("out/runc");
        let digest = extract_deb_member(&deb, "usr/sbin/runc", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"runc-bytes");
        assert_eq!(digest, crate::util::sha256_bytes(b"runc-bytes"));
        let err = extract_deb_member(&deb, "usr/bin/runc", &dir.path().join("link"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("member \"usr/bin/runc\" is a link"), "{err}");
        let err = extract_deb_member(&deb, "usr/bin/runcc", &dir.path().join("miss"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no member \"usr/bin/runcc\"; closest members: \"usr/bin/runc\""),
            "{err}"
        );
        let err = extract_deb_member(&archive(dir.path()), "docker/dockerd", &dir.path().join("tgz"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("as a Debian package"), "{err}");
    }

    #[test]
    fn links_and_traversal_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = archive(dir.path());
        let out = dir.path().join("x");
        let err = extract_member(&archive, "docker/docker", &out).unwrap_err().to_string();
        assert!(err.contains("member \"docker/docker\" is a link"), "{err}");
        let err = extract_member(&archive, "../evil", &out).unwrap_err().to_string();
        assert!(err.contains("member \"../evil\" has an absolute or `..` path"), "{err}");
        assert!(!out.exists());
    }
}

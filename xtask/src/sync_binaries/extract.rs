//! Takes one member out of a `.tgz` while streaming it: no archive is held in memory and nothing
//! but the named regular file is ever written.
//!
//! Reads the archive file, writes the member atomically (temporary file, mode 0755, rename).

use std::io::{Read, Write};
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
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut names = Vec::new();
    let entries = tar
        .entries()
        .with_context(|| format!("reading {} as a .tgz", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {} as a .tgz", archive.display()))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let normalized = name.trim_start_matches("./");
        if normalized != member {
            names.push(name);
            continue;
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
        return write_executable(&mut entry, output)
            .with_context(|| format!("extracting {name:?} from {}", archive.display()));
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

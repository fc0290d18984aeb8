//! Unpacks a Debian package (`.deb`) in memory: the `ar` archive, then its `data.tar.*`
//! (xz, zstd, gzip or plain). [`data_tar_decoder`] is the streaming form of the last step,
//! which `sync-binaries` uses to take one program out of a package.
//!
//! No package database, no maintainer scripts, nothing written to disk: the result is a map from
//! normalized path (`usr/bin/socat`, no leading `./` or `/`) to file, directory or symlink, plus
//! the path lookups (following symlinks inside the package set) that assembling the image needs.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};

/// Symlink hops allowed while resolving one path, like the kernel's own limit.
const MAX_SYMLINK_HOPS: usize = 40;

/// One entry of a package's data archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebNode {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// The files of one unpacked package.
#[derive(Debug, Default, Clone)]
pub struct DebContents {
    pub entries: BTreeMap<String, DebNode>,
}

/// Normalizes an archive or image path: no leading `./` or `/`, no `.` components, no trailing `/`.
/// `..` is applied lexically; a path that climbs above the root is refused.
pub fn normalize_path(path: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("path {path:?} climbs above the root");
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// Unpacks a `.deb` held in memory.
pub fn unpack_deb(bytes: &[u8]) -> Result<DebContents> {
    let mut archive = ar::Archive::new(bytes);
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.context("reading the ar archive of the .deb")?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !name.starts_with("data.tar") {
            continue;
        }
        let mut compressed = Vec::new();
        entry
            .read_to_end(&mut compressed)
            .with_context(|| format!("reading member {name}"))?;
        let tar_bytes = decompress(&name, &compressed)?;
        return read_data_tar(&tar_bytes).with_context(|| format!("reading member {name}"));
    }
    bail!("no data.tar member: not a Debian binary package")
}

fn decompress(member: &str, compressed: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    data_tar_decoder(member, compressed)?
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {member}"))?;
    Ok(out)
}

/// A reader of the plain tar stream inside a package's data member (`data.tar.xz`, `.zst`,
/// `.gz` or `data.tar`), decompressing `compressed` as it is read: callers that want one file
/// out of a large package stream it instead of holding the archive in memory.
pub fn data_tar_decoder<'a>(member: &str, compressed: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    Ok(match member {
        "data.tar.xz" => Box::new(xz2::read::XzDecoder::new(compressed)),
        "data.tar.zst" => {
            Box::new(zstd::stream::read::Decoder::new(compressed).context("starting to zstd-decompress data.tar.zst")?)
        }
        "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(compressed)),
        "data.tar" => Box::new(compressed),
        other => bail!("unsupported package data member {other}"),
    })
}

/// Reads a data tarball into a [`DebContents`]; hard links become copies of their target.
pub fn read_data_tar(tar_bytes: &[u8]) -> Result<DebContents> {
    let mut contents = DebContents::default();
    let mut hard_links: Vec<(String, String)> = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading a tar entry")?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize_path(&raw_path)?;
        if path.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let node = if kind.is_dir() {
            DebNode::Dir
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .with_context(|| format!("symlink {raw_path} has no target"))?;
            DebNode::Symlink {
                target: String::from_utf8_lossy(&target).into_owned(),
            }
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .with_context(|| format!("hard link {raw_path} has no target"))?;
            hard_links.push((path, normalize_path(&String::from_utf8_lossy(&target))?));
            continue;
        } else if kind.is_file() {
            let mode = entry.header().mode().unwrap_or(0o644);
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {raw_path}"))?;
            DebNode::File { bytes, mode }
        } else {
            // Device nodes, FIFOs: nothing a package we use ships, and nothing the image needs.
            continue;
        };
        contents.entries.insert(path, node);
    }
    for (path, target) in hard_links {
        let node = contents
            .entries
            .get(&target)
            .cloned()
            .with_context(|| format!("hard link {path} points at {target}, which the package does not contain"))?;
        contents.entries.insert(path, node);
    }
    Ok(contents)
}

/// A regular file found by [`resolve`]: where it really lives, and its bytes and mode.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// Looks a path up in a set of entries, following symlinks in every component (absolute
/// targets are taken from the root of the same set). `None` when it leads nowhere or to a
/// directory.
pub fn resolve<'a>(entries: &'a BTreeMap<String, DebNode>, path: &str) -> Option<Resolved<'a>> {
    let (_, node) = resolve_node(entries, path)?;
    match node {
        DebNode::File { bytes, mode } => Some(Resolved { bytes, mode: *mode }),
        _ => None,
    }
}

/// Like [`resolve`], but also returns directories.
pub fn resolve_node<'a>(entries: &'a BTreeMap<String, DebNode>, path: &str) -> Option<(&'a str, &'a DebNode)> {
    let final_path = follow_symlinks(path, |candidate| match entries.get(candidate)? {
        DebNode::Symlink { target } => Some(target.clone()),
        _ => None,
    })?;
    entries
        .get_key_value(&final_path)
        .map(|(key, node)| (key.as_str(), node))
}

/// Follows symlinks in every component of `path`, the way the kernel does inside one root.
/// `lookup` gives a symlink's target for a normalized path, `None` for anything else. Returns
/// the final normalized path (which the caller looks up), or `None` after too many hops.
pub fn follow_symlinks(path: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut pending: Vec<String> = normalize_path(path).ok()?.split('/').rev().map(str::to_owned).collect();
    let mut current: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "" | "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        current.push(component);
        if let Some(target) = lookup(&current.join("/")) {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return None;
            }
            current.pop();
            if target.starts_with('/') {
                current.clear();
            }
            for part in target.split('/').rev() {
                pending.push(part.to_owned());
            }
        }
    }
    Some(current.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_size(data.len() as u64);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn reads_files_symlinks_and_hard_links() {
        let tar = tar_with(&[
            ("./", tar::EntryType::Directory, b"", ""),
            ("./lib/", tar::EntryType::Directory, b"", ""),
            ("./lib/libfoo.so.1.2", tar::EntryType::Regular, b"ELF", ""),
            ("./lib/libfoo.so.1", tar::EntryType::Symlink, b"", "libfoo.so.1.2"),
            ("./lib/hard", tar::EntryType::Link, b"", "./lib/libfoo.so.1.2"),
        ]);
        let contents = read_data_tar(&tar).unwrap();
        assert_eq!(contents.entries.get("lib"), Some(&DebNode::Dir));
        assert_eq!(
            contents.entries.get("lib/libfoo.so.1"),
            Some(&DebNode::Symlink {
                target: "libfoo.so.1.2".into()
            })
        );
        assert!(matches!(contents.entries.get("lib/hard"), Some(DebNode::File { bytes, .. }) if bytes == b"ELF"));
        assert!(!contents.entries.contains_key(""));
    }

    #[test]
    fn resolves_relative_absolute_and_directory_symlinks() {
        let mut entries = BTreeMap::new();
        entries.insert("lib".into(), DebNode::Dir);
        entries.insert("lib/x".into(), DebNode::Dir);
        entries.insert(
            "lib/x/ld.so".into(),
            DebNode::File {
                bytes: b"LD".to_vec(),
                mode: 0o755,
            },
        );
        entries.insert("lib64".into(), DebNode::Dir);
        entries.insert(
            "lib64/ld.so".into(),
            DebNode::Symlink {
                target: "../lib/x/ld.so".into(),
            },
        );
        entries.insert(
            "abs".into(),
            DebNode::Symlink {
                target: "/lib/x".into(),
            },
        );
        entries.insert("loop".into(), DebNode::Symlink { target: "loop".into() });
        assert_eq!(resolve_node(&entries, "/lib64/ld.so").unwrap().0, "lib/x/ld.so");
        assert_eq!(resolve(&entries, "abs/ld.so").unwrap().bytes, b"LD");
        assert!(resolve(&entries, "loop").is_none());
        assert!(resolve(&entries, "lib/x").is_none(), "a directory is not a file");
        assert!(resolve(&entries, "lib/missing").is_none());
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize_path("./usr//bin/./socat/").unwrap(), "usr/bin/socat");
        assert_eq!(
            normalize_path("../etc").unwrap_err().to_string(),
            "path \"../etc\" climbs above the root"
        );
    }
}

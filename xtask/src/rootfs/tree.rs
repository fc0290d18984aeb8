//! The image as a value: a sorted map from image path to directory, file or symlink, each with
//! the origin that put it there (a package name, `init/`, the overlay, the recipe).
//!
//! Pure data; the recipe rules, the library closure and the checks all work on it before
//! anything is written to disk, and `image.rs` writes it out with normalized modes.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::debian::deb::{follow_symlinks, normalize_path};

/// What one image path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        bytes: Vec<u8>,
        executable: bool,
    },
    Symlink {
        target: String,
    },
    /// A character device node with its permission bits.
    CharDevice {
        major: u32,
        minor: u32,
        mode: u32,
    },
}

impl Node {
    /// A regular file holding `bytes`.
    pub fn file(bytes: impl Into<Vec<u8>>, executable: bool) -> Node {
        Node::File {
            bytes: bytes.into(),
            executable,
        }
    }

    /// A symlink pointing at `target` (relative to its own directory, or absolute in the image).
    pub fn symlink(target: impl Into<String>) -> Node {
        Node::Symlink { target: target.into() }
    }
}

/// One image path's content and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    /// A package name, or a repository path such as `init/init`.
    pub origin: String,
}

/// The whole image tree; keys are normalized relative paths (`sbin/init`).
#[derive(Debug, Clone, Default)]
pub struct ImageTree {
    pub entries: BTreeMap<String, Entry>,
}

impl ImageTree {
    /// Adds a node at `path`, creating its parent directories. Adding the same node twice is
    /// fine; two different contents at one path is an error naming both origins.
    pub fn add(&mut self, path: &str, node: Node, origin: &str) -> Result<()> {
        let path = normalize_path(path)?;
        if path.is_empty() {
            bail!("{origin}: cannot replace the image root");
        }
        let mut parent = String::new();
        for component in path.split('/').collect::<Vec<_>>().split_last().expect("not empty").1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            node: Node::Dir,
                            origin: origin.to_owned(),
                        },
                    );
                }
                Some(Entry { node: Node::Dir, .. }) => {}
                Some(existing) => bail!(
                    "{origin} puts something under /{path}, but /{parent} is already a file or symlink from {}",
                    existing.origin
                ),
            }
        }
        match self.entries.get(&path) {
            Some(existing) if existing.node == node => Ok(()),
            Some(existing) => bail!(
                "image path /{path} is provided twice with different contents: by {} and by {origin}",
                existing.origin
            ),
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        node,
                        origin: origin.to_owned(),
                    },
                );
                Ok(())
            }
        }
    }

    /// The final path of `path` after following symlinks inside the image, if something is there.
    pub fn resolve(&self, path: &str) -> Option<(String, &Entry)> {
        let final_path = follow_symlinks(path, |candidate| match &self.entries.get(candidate)?.node {
            Node::Symlink { target } => Some(target.clone()),
            _ => None,
        })?;
        let entry = self.entries.get(&final_path)?;
        Some((final_path, entry))
    }

    /// Regular files, in path order.
    pub fn files(&self) -> impl Iterator<Item = (&String, &Vec<u8>, bool, &String)> {
        self.entries.iter().filter_map(|(path, entry)| match &entry.node {
            Node::File { bytes, executable } => Some((path, bytes, *executable, &entry.origin)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> Node {
        Node::file(bytes, false)
    }

    #[test]
    fn adds_parents_and_refuses_conflicts_naming_both_origins() {
        let mut tree = ImageTree::default();
        tree.add("usr/lib/x/libfoo.so", file(b"a"), "libfoo1").unwrap();
        assert_eq!(tree.entries["usr"].node, Node::Dir);
        assert_eq!(tree.entries["usr/lib/x"].node, Node::Dir);
        tree.add("usr/lib/x/libfoo.so", file(b"a"), "libfoo2").unwrap();
        let err = tree.add("usr/lib/x/libfoo.so", file(b"b"), "other").unwrap_err();
        assert_eq!(
            err.to_string(),
            "image path /usr/lib/x/libfoo.so is provided twice with different contents: by libfoo1 and by other"
        );
        let err = tree.add("usr/lib/x/libfoo.so/inner", file(b"c"), "pkg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "pkg puts something under /usr/lib/x/libfoo.so/inner, but /usr/lib/x/libfoo.so is already a file or \
             symlink from libfoo1"
        );
    }

    #[test]
    fn resolves_symlinks_inside_the_image() {
        let mut tree = ImageTree::default();
        tree.add("bin/busybox", file(b"bb"), "busybox-static").unwrap();
        tree.add("bin/sh", Node::symlink("busybox"), "recipe").unwrap();
        tree.add("sbin/sh", Node::symlink("/bin/sh"), "recipe").unwrap();
        tree.add("sbin/dangling", Node::symlink("nowhere"), "recipe").unwrap();
        assert_eq!(tree.resolve("/sbin/sh").unwrap().0, "bin/busybox");
        assert!(tree.resolve("sbin/dangling").is_none());
        assert_eq!(tree.files().count(), 1);
    }
}

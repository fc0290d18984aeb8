//! Checks on the finished image tree, before anything is imaged. Each problem is one precise
//! sentence naming the path and its origin; all problems are reported together.
//!
//! - every ELF file is built for the target machine;
//! - every dynamic ELF's interpreter and `DT_NEEDED` libraries resolve inside the image, the
//!   way the loader would find them;
//! - busybox is static;
//! - `/sbin/init` is executable and its `#!` interpreter is an executable inside the image;
//! - every symlink resolves inside the image.
//!
//! Pure: reads and writes nothing.

use anyhow::{bail, Result};

use super::closure::search_dirs;
use super::tree::{ImageTree, Node};
use crate::elf::{is_elf, ElfInfo, Machine};

/// The init program's image path.
pub const INIT_PATH: &str = "sbin/init";

/// Runs every check; the error lists every problem found, one per line.
pub fn check_image(
    tree: &ImageTree,
    machine: Machine,
    default_dirs: &[String],
    busybox_path: &str,
    describe: &dyn Fn(&[u8]) -> Result<ElfInfo>,
) -> Result<()> {
    let mut problems = Vec::new();
    check_elf_files(tree, machine, default_dirs, describe, &mut problems);
    check_busybox(tree, busybox_path, describe, &mut problems);
    check_init(tree, &mut problems);
    check_symlinks(tree, &mut problems);
    if !problems.is_empty() {
        bail!(
            "the image fails {} check(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Every ELF file: built for `machine`, its interpreter and `DT_NEEDED` libraries inside the image.
fn check_elf_files(
    tree: &ImageTree,
    machine: Machine,
    default_dirs: &[String],
    describe: &dyn Fn(&[u8]) -> Result<ElfInfo>,
    problems: &mut Vec<String>,
) {
    // Every program interpreter's SONAME: the loader is already in memory when a library
    // names it in DT_NEEDED (libc.so.6 does), so it is satisfied without a search.
    let loader_sonames: std::collections::BTreeSet<String> = tree
        .files()
        .filter_map(|(_, bytes, _, _)| describe(bytes).ok()?.interpreter)
        .filter_map(|interpreter| match &tree.resolve(&interpreter)?.1.node {
            Node::File { bytes, .. } => describe(bytes).ok()?.soname,
            _ => None,
        })
        .collect();

    for (path, bytes, _, origin) in tree.files() {
        if !is_elf(bytes) {
            continue;
        }
        let info = match describe(bytes) {
            Ok(info) => info,
            Err(e) => {
                problems.push(format!("/{path} (from {origin}): {e:#}"));
                continue;
            }
        };
        if info.machine != machine {
            problems.push(format!(
                "/{path} (from {origin}) is built for {}, not {machine}",
                info.machine
            ));
        }
        if let Some(interpreter) = &info.interpreter {
            match tree.resolve(interpreter) {
                Some((_, entry)) if is_executable_elf(&entry.node) => {}
                _ => problems.push(format!(
                    "/{path} (from {origin}): its program interpreter {interpreter} is not an executable ELF file \
                     inside the image"
                )),
            }
        }
        for needed in &info.needed {
            if loader_sonames.contains(needed) {
                continue;
            }
            let dirs = search_dirs(&info, path, default_dirs);
            let found = dirs.iter().any(|dir| {
                matches!(tree.resolve(&format!("{dir}/{needed}")), Some((_, entry)) if matches!(entry.node, Node::File { .. }))
            });
            if !found {
                problems.push(format!(
                    "/{path} (from {origin}) needs {needed}, which does not resolve inside the image (searched /{})",
                    dirs.join(", /")
                ));
            }
        }
    }
}

/// Busybox exists and is static.
fn check_busybox(
    tree: &ImageTree,
    busybox_path: &str,
    describe: &dyn Fn(&[u8]) -> Result<ElfInfo>,
    problems: &mut Vec<String>,
) {
    match tree.resolve(busybox_path) {
        Some((_, entry)) => match &entry.node {
            Node::File { bytes, .. } => match describe(bytes) {
                Ok(info) if info.is_static() => {}
                Ok(info) => problems.push(format!(
                    "/{busybox_path} (from {}) must be static, but it asks for interpreter {:?} and libraries {:?}",
                    entry.origin, info.interpreter, info.needed
                )),
                Err(e) => problems.push(format!("/{busybox_path} (from {}): {e:#}", entry.origin)),
            },
            _ => problems.push(format!("/{busybox_path} is not a regular file")),
        },
        None => problems.push(format!("/{busybox_path} is missing")),
    }
}

/// `/sbin/init` is executable and its `#!` interpreter is an executable inside the image.
fn check_init(tree: &ImageTree, problems: &mut Vec<String>) {
    match tree.entries.get(INIT_PATH) {
        Some(entry) => match &entry.node {
            Node::File {
                bytes,
                executable: true,
            } => match interpreter_line(bytes) {
                Some(interpreter) => match tree.resolve(&interpreter) {
                    Some((_, target)) if matches!(target.node, Node::File { executable: true, .. }) => {}
                    _ => problems.push(format!(
                        "/{INIT_PATH} (from {}): its interpreter {interpreter} is not an executable file inside the image",
                        entry.origin
                    )),
                },
                None if is_elf(bytes) => {}
                None => problems.push(format!(
                    "/{INIT_PATH} (from {}) has no `#!` interpreter line and is not an ELF program",
                    entry.origin
                )),
            },
            Node::File { .. } => problems.push(format!("/{INIT_PATH} (from {}) is not executable", entry.origin)),
            _ => problems.push(format!("/{INIT_PATH} (from {}) is not a regular file", entry.origin)),
        },
        None => problems.push(format!("/{INIT_PATH} is missing")),
    }
}

/// Every symlink resolves inside the image.
fn check_symlinks(tree: &ImageTree, problems: &mut Vec<String>) {
    for (path, entry) in &tree.entries {
        if let Node::Symlink { target } = &entry.node {
            if tree.resolve(path).is_none() {
                problems.push(format!(
                    "/{path} (from {}) is a symlink to {target}, which does not resolve inside the image",
                    entry.origin
                ));
            }
        }
    }
}

fn is_executable_elf(node: &Node) -> bool {
    matches!(node, Node::File { bytes, executable: true } if is_elf(bytes))
}

/// The interpreter path of a `#!` line (`#!/bin/sh -e` → `/bin/sh`).
pub fn interpreter_line(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let interpreter = text.split_whitespace().next()?;
    interpreter.starts_with('/').then(|| interpreter.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(bytes: &[u8]) -> Result<ElfInfo> {
        let text = String::from_utf8_lossy(&bytes[4..]).into_owned();
        Ok(ElfInfo {
            machine: if text.contains("arm") {
                Machine::Aarch64
            } else {
                Machine::X86_64
            },
            interpreter: text.contains("dyn").then(|| "/lib64/ld.so".to_owned()),
            needed: if text.contains("dyn") {
                vec!["libc.so.6".into()]
            } else {
                vec![]
            },
            search_path: vec![],
            soname: text.contains("loader").then(|| "ld.so".to_owned()),
        })
    }

    fn good_tree() -> ImageTree {
        let mut tree = ImageTree::default();
        tree.add("bin/busybox", Node::file(b"\x7fELFstatic", true), "busybox-static")
            .unwrap();
        tree.add("bin/sh", Node::symlink("busybox"), "recipe").unwrap();
        tree.add("sbin/init", Node::file(b"#!/bin/sh\necho hi\n", true), "init/init")
            .unwrap();
        tree.add("sbin/tool", Node::file(b"\x7fELFdyn", true), "tool").unwrap();
        tree.add("lib64/ld.so", Node::file(b"\x7fELFstatic loader", true), "libc6")
            .unwrap();
        tree.add(
            "lib/x86_64-linux-gnu/libc.so.6",
            Node::file(b"\x7fELFlib", false),
            "libc6",
        )
        .unwrap();
        tree
    }

    fn dirs() -> Vec<String> {
        vec!["lib/x86_64-linux-gnu".into()]
    }

    #[test]
    fn a_good_tree_passes() {
        check_image(&good_tree(), Machine::X86_64, &dirs(), "bin/busybox", &describe).unwrap();
    }

    #[test]
    fn every_problem_is_named() {
        let mut tree = good_tree();
        tree.entries.remove("lib/x86_64-linux-gnu/libc.so.6");
        tree.entries.remove("bin/busybox");
        tree.add("bin/busybox", Node::file(b"\x7fELFdyn", true), "busybox")
            .unwrap();
        tree.add("sbin/arm", Node::file(b"\x7fELFarm", true), "arm-pkg")
            .unwrap();
        tree.add("sbin/broken", Node::symlink("/nowhere"), "recipe").unwrap();
        tree.entries.remove("sbin/init");
        tree.add("sbin/init", Node::file(b"#!/bin/bash\n", true), "init/init")
            .unwrap();
        let err = check_image(&tree, Machine::X86_64, &dirs(), "bin/busybox", &describe).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image fails 6 check(s):\n  \
             /bin/busybox (from busybox) needs libc.so.6, which does not resolve inside the image (searched /lib/x86_64-linux-gnu)\n  \
             /sbin/arm (from arm-pkg) is built for aarch64, not x86_64\n  \
             /sbin/tool (from tool) needs libc.so.6, which does not resolve inside the image (searched /lib/x86_64-linux-gnu)\n  \
             /bin/busybox (from busybox) must be static, but it asks for interpreter Some(\"/lib64/ld.so\") and libraries [\"libc.so.6\"]\n  \
             /sbin/init (from init/init): its interpreter /bin/bash is not an executable file inside the image\n  \
             /sbin/broken (from recipe) is a symlink to /nowhere, which does not resolve inside the image"
        );
    }

    #[test]
    fn init_must_be_executable() {
        let mut tree = good_tree();
        tree.entries.remove("sbin/init");
        tree.add("sbin/init", Node::file(b"#!/bin/sh\n", false), "init/init")
            .unwrap();
        let err = check_image(&tree, Machine::X86_64, &dirs(), "bin/busybox", &describe).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("/sbin/init (from init/init) is not executable"),
            "{err}"
        );
    }

    #[test]
    fn reads_interpreter_lines() {
        assert_eq!(interpreter_line(b"#!/bin/sh -eu\n").as_deref(), Some("/bin/sh"));
        assert_eq!(interpreter_line(b"#! /bin/sh\n").as_deref(), Some("/bin/sh"));
        assert_eq!(interpreter_line(b"echo\n"), None);
        assert_eq!(interpreter_line(b"#!sh\n"), None);
    }
}

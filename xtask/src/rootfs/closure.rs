//! The shared-library closure, computed from the ELF files themselves: every ELF in the tree
//! gets its program interpreter (at the exact `PT_INTERP` path) and every `DT_NEEDED` library,
//! found the way glibc's loader would (RUNPATH, else RPATH, then the default directories) in
//! the recipe's packages, and installed under `/lib/{triplet}/` under its `DT_NEEDED` name.
//!
//! Pure: packages arrive unpacked, ELF parsing is passed in. A library that cannot be found
//! fails with the binary, its package and the library named.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::assemble::Package;
use super::recipe::ArchParams;
use super::tree::{ImageTree, Node};
use crate::debian::deb::{normalize_path, resolve, Resolved};
use crate::elf::{is_elf, ElfInfo};

/// The directories searched for `needed` on behalf of an object at `object_path`: its RUNPATH
/// (or, without one, its RPATH) with `$ORIGIN` expanded, then the loader's default directories.
pub fn search_dirs(info: &ElfInfo, object_path: &str, default_dirs: &[String]) -> Vec<String> {
    let origin = object_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    info.search_path
        .iter()
        .map(|dir| {
            let expanded = dir
                .replace("${ORIGIN}", &format!("/{origin}"))
                .replace("$ORIGIN", &format!("/{origin}"));
            normalize_path(&expanded).unwrap_or_default()
        })
        .chain(default_dirs.iter().cloned())
        .collect()
}

/// Adds the interpreters and libraries every ELF in `tree` needs, transitively.
pub fn add_library_closure(
    tree: &mut ImageTree,
    params: &ArchParams,
    packages: &[Package],
    describe: &dyn Fn(&[u8]) -> Result<ElfInfo>,
) -> Result<()> {
    let default_dirs = params.default_library_dirs();
    let install_dir = params.library_install_dir();
    let roots: Vec<String> = tree
        .files()
        .filter(|(_, bytes, _, _)| is_elf(bytes))
        .map(|(path, _, _, _)| path.clone())
        .collect();

    let (interpreter_sonames, mut queue) = add_interpreters(tree, &roots, packages, describe)?;
    queue.extend(roots);
    let mut done = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !done.insert(path.clone()) {
            continue;
        }
        let info = describe_entry(tree, &path, describe)?;
        for needed in &info.needed {
            if interpreter_sonames.contains(needed) {
                continue;
            }
            let install_path = format!("{install_dir}/{needed}");
            if tree.entries.contains_key(&install_path) {
                queue.push(install_path);
                continue;
            }
            let dirs = search_dirs(&info, &path, &default_dirs);
            let candidates: Vec<String> = dirs.iter().map(|dir| format!("{dir}/{needed}")).collect();
            let Some((package, found)) = find_in_packages(packages, &candidates) else {
                bail!(
                    "/{path} (from {}) needs {needed}, which none of the recipe's packages provides (searched /{}): \
                     add the package that ships it to `library_packages` in the recipe",
                    tree.entries[&path].origin,
                    dirs.join(", /")
                );
            };
            let node = Node::File {
                bytes: found.bytes.to_vec(),
                executable: found.mode & 0o111 != 0,
            };
            tree.add(&install_path, node, &package)?;
            queue.push(install_path);
        }
    }
    Ok(())
}

/// Adds every program interpreter the `roots` ask for; returns their SONAMEs (which satisfy
/// the `DT_NEEDED` that libc and some programs carry for the loader, without a second copy
/// under /lib/{triplet}) and the interpreters added, to be scanned in turn.
fn add_interpreters(
    tree: &mut ImageTree,
    roots: &[String],
    packages: &[Package],
    describe: &dyn Fn(&[u8]) -> Result<ElfInfo>,
) -> Result<(BTreeSet<String>, Vec<String>)> {
    let mut interpreter_sonames = BTreeSet::new();
    let mut queue = Vec::new();
    for path in roots {
        let info = describe_entry(tree, path, describe)?;
        let Some(interpreter) = info.interpreter else { continue };
        let interpreter_path = normalize_path(&interpreter)?;
        if tree.resolve(&interpreter_path).is_none() {
            let (package, found) =
                find_in_packages(packages, std::slice::from_ref(&interpreter_path)).with_context(|| {
                    format!(
                        "/{path} (from {}) asks for the program interpreter {interpreter}, which none of the recipe's \
                     packages contains: add the C library package to `library_packages` in the recipe",
                        tree.entries[path].origin
                    )
                })?;
            tree.add(
                &interpreter_path,
                Node::File {
                    bytes: found.bytes.to_vec(),
                    executable: true,
                },
                &package,
            )?;
            queue.push(interpreter_path.clone());
        }
        if let Some(soname) = describe_entry(tree, &interpreter_path, describe)?.soname {
            interpreter_sonames.insert(soname);
        }
    }
    Ok((interpreter_sonames, queue))
}

fn describe_entry(tree: &ImageTree, path: &str, describe: &dyn Fn(&[u8]) -> Result<ElfInfo>) -> Result<ElfInfo> {
    let (_, entry) = tree
        .resolve(path)
        .with_context(|| format!("/{path} is not in the image"))?;
    match &entry.node {
        Node::File { bytes, .. } => describe(bytes).with_context(|| format!("/{path} (from {})", entry.origin)),
        _ => bail!("/{path} is not a regular file"),
    }
}

/// The first candidate path (in order) that some package holds as a file, with that package's name.
fn find_in_packages<'a>(packages: &'a [Package], candidates: &[String]) -> Option<(String, Resolved<'a>)> {
    candidates.iter().find_map(|candidate| {
        packages.iter().find_map(|package| {
            resolve(&package.contents.entries, candidate).map(|found| (package.locked.name.clone(), found))
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::debian::deb::{DebContents, DebNode};
    use crate::debian::LockedPackage;
    use crate::elf::Machine;

    /// Fake ELF files: `\x7fELF` then `key=value;` pairs read by [`fake_describe`].
    fn fake_elf(spec: &str) -> Vec<u8> {
        format!("\x7fELF{spec}").into_bytes()
    }

    fn fake_describe(bytes: &[u8]) -> Result<ElfInfo> {
        let text = String::from_utf8_lossy(&bytes[4..]).into_owned();
        let mut info = ElfInfo {
            machine: Machine::X86_64,
            interpreter: None,
            needed: vec![],
            search_path: vec![],
            soname: None,
        };
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap();
            match key {
                "interp" => info.interpreter = Some(value.into()),
                "needed" => info.needed.push(value.into()),
                "runpath" => info.search_path.push(value.into()),
                "soname" => info.soname = Some(value.into()),
                _ => panic!("bad fake key {key}"),
            }
        }
        Ok(info)
    }

    fn package(name: &str, files: &[(&str, &str)], links: &[(&str, &str)]) -> Package {
        let mut entries = BTreeMap::new();
        for (path, spec) in files {
            entries.insert(
                (*path).to_owned(),
                DebNode::File {
                    bytes: fake_elf(spec),
                    mode: 0o644,
                },
            );
        }
        for (path, target) in links {
            entries.insert(
                (*path).to_owned(),
                DebNode::Symlink {
                    target: (*target).to_owned(),
                },
            );
        }
        Package {
            locked: LockedPackage {
                name: name.into(),
                arch: "amd64".into(),
                for_arch: "amd64".into(),
                suite: "bookworm".into(),
                version: "1".into(),
                filename: format!("{name}_1_amd64.deb"),
                size: 1,
                sha256: "00".repeat(32),
            },
            contents: DebContents { entries },
        }
    }

    fn params() -> ArchParams {
        ArchParams {
            deb_arch: "amd64".into(),
            triplet: "x86_64-linux-gnu".into(),
        }
    }

    fn tree_with_program(spec: &str) -> ImageTree {
        let mut tree = ImageTree::default();
        tree.add(
            "sbin/tool",
            Node::File {
                bytes: fake_elf(spec),
                executable: true,
            },
            "tool-pkg",
        )
        .unwrap();
        tree
    }

    fn libc() -> Package {
        package(
            "libc6",
            &[
                (
                    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                    "soname=ld-linux-x86-64.so.2;",
                ),
                (
                    "lib/x86_64-linux-gnu/libc.so.6",
                    "soname=libc.so.6;needed=ld-linux-x86-64.so.2;",
                ),
                ("lib/x86_64-linux-gnu/libunused.so.1", ""),
            ],
            &[(
                "lib64/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            )],
        )
    }

    #[test]
    fn installs_interpreter_runpath_libraries_and_nothing_more() {
        let ebtc = package(
            "ebtables",
            &[("usr/lib/ebtables/libebtc.so.0.0.0", "needed=libc.so.6;")],
            &[("usr/lib/ebtables/libebtc.so.0", "libebtc.so.0.0.0")],
        );
        let crypto = package(
            "libssl3",
            &[("usr/lib/x86_64-linux-gnu/libcrypto.so.3", "needed=libc.so.6;")],
            &[],
        );
        let mut tree = tree_with_program(
            "interp=/lib64/ld-linux-x86-64.so.2;needed=libebtc.so.0;needed=libcrypto.so.3;needed=libc.so.6;\
             runpath=/usr/lib/ebtables;",
        );
        add_library_closure(&mut tree, &params(), &[libc(), ebtc, crypto], &fake_describe).unwrap();
        let files: Vec<(&str, &str)> = tree
            .files()
            .map(|(path, _, _, origin)| (path.as_str(), origin.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("lib/x86_64-linux-gnu/libc.so.6", "libc6"),
                ("lib/x86_64-linux-gnu/libcrypto.so.3", "libssl3"),
                ("lib/x86_64-linux-gnu/libebtc.so.0", "ebtables"),
                ("lib64/ld-linux-x86-64.so.2", "libc6"),
                ("sbin/tool", "tool-pkg"),
            ]
        );
        assert!(matches!(
            &tree.entries["lib64/ld-linux-x86-64.so.2"].node,
            Node::File { executable: true, .. }
        ));
    }

    #[test]
    fn a_missing_library_names_binary_package_and_library() {
        let mut tree = tree_with_program("interp=/lib64/ld-linux-x86-64.so.2;needed=libwrap.so.0;");
        let err = add_library_closure(&mut tree, &params(), &[libc()], &fake_describe).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/sbin/tool (from tool-pkg) needs libwrap.so.0, which none of the recipe's packages provides (searched \
             /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib): add the package that ships it to \
             `library_packages` in the recipe"
        );
        let mut tree = tree_with_program("interp=/lib/ld-musl.so.1;");
        let err = add_library_closure(&mut tree, &params(), &[libc()], &fake_describe).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/sbin/tool (from tool-pkg) asks for the program interpreter /lib/ld-musl.so.1"),
            "{err}"
        );
    }

    #[test]
    fn origin_is_expanded_in_runpath() {
        let info = fake_describe(&fake_elf("runpath=$ORIGIN/../lib;")).unwrap();
        assert_eq!(
            search_dirs(&info, "opt/x/bin/tool", &["lib".into()]),
            ["opt/x/lib", "lib"]
        );
    }
}

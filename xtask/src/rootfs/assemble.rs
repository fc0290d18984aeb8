//! Turns the recipe, the unpacked packages and the tools built from source into an
//! [`ImageTree`]: package files, directory picks, generated bundles, build outputs, symlinks,
//! mount points, device nodes, local files (`init/`), the overlay, and last the busybox applet
//! links (a file the image ships under an applet's name wins over the link).
//!
//! Pure: the packages and local files arrive as values; errors name the package or file and the
//! recipe rule that asked for it.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::build::BuiltTool;
#[cfg(test)]
use super::recipe::MINIMAL_TEST_RECIPE;
use super::recipe::{ArchParams, BundleRule, PackageRecipe, Recipe};
use super::tree::{ImageTree, Node};
use crate::debian::deb::{resolve, DebContents, DebNode};
use crate::debian::LockedPackage;

/// The origin recorded for entries the recipe itself creates (links, mount points).
pub const RECIPE_ORIGIN: &str = "recipe";

/// The directories of the guest's `PATH`: an applet link is left out when one of them holds a
/// file of the applet's name.
const PATH_DIRS: [&str; 4] = ["sbin", "bin", "usr/sbin", "usr/bin"];

/// One package: its lock entry and its unpacked files.
pub struct Package {
    pub locked: LockedPackage,
    pub contents: DebContents,
}

/// A file from this repository (a local file or an overlay file), read by the caller.
#[derive(Debug, Clone)]
pub struct LocalInput {
    /// Repository path, for errors and provenance (`init/init`).
    pub source: String,
    /// Image path.
    pub to: String,
    pub node: Node,
}

/// Builds the image tree (without the library closure) for one arch.
pub fn assemble(
    recipe: &Recipe,
    params: &ArchParams,
    packages: &[Package],
    tools: &[BuiltTool],
    local_inputs: &[LocalInput],
) -> Result<ImageTree> {
    let by_name: BTreeMap<&str, &Package> = packages
        .iter()
        .map(|package| (package.locked.name.as_str(), package))
        .collect();
    let mut tree = ImageTree::default();

    for mount_point in &recipe.mount_points {
        tree.add(mount_point, Node::Dir, RECIPE_ORIGIN)?;
    }
    for node in &recipe.device_nodes {
        let device = Node::CharDevice {
            major: node.major,
            minor: node.minor,
            mode: node.mode,
        };
        tree.add(&node.path, device, RECIPE_ORIGIN)?;
    }

    for rule_set in &recipe.packages {
        let package = by_name
            .get(rule_set.name.as_str())
            .with_context(|| format!("package {} was not fetched", rule_set.name))?;
        add_package(&mut tree, params, package, rule_set)?;
    }
    for (build, tool) in recipe.builds.iter().zip(tools) {
        for rule in &build.files {
            let Some(DebNode::File { bytes, mode }) = tool.outputs.entries.get(&rule.from) else {
                bail!("build {} has no output {}", tool.name, rule.from);
            };
            tree.add(&params.expand(&rule.to), file_node(bytes, *mode), &tool.name)?;
        }
    }

    for link in &recipe.symlinks {
        tree.add(
            &params.expand(&link.path),
            Node::symlink(params.expand(&link.target)),
            RECIPE_ORIGIN,
        )?;
    }

    for input in local_inputs {
        tree.add(&input.to, input.node.clone(), &input.source)?;
    }
    add_applet_links(&mut tree, recipe, tools)?;
    Ok(tree)
}

/// One link per name of busybox's own `--list` (saved by the build that ships busybox), unless a
/// `PATH` directory of the image already holds that name.
fn add_applet_links(tree: &mut ImageTree, recipe: &Recipe, tools: &[BuiltTool]) -> Result<()> {
    let busybox = &recipe.busybox;
    let Some((build, tool)) = recipe
        .builds
        .iter()
        .zip(tools)
        .find(|(build, _)| build.files.iter().any(|rule| rule.to == busybox.path))
    else {
        bail!(
            "busybox.path /{} is not an output of any [[build]]: its applet list comes from the build",
            busybox.path
        );
    };
    let Some(DebNode::File { bytes, .. }) = tool.outputs.entries.get(&busybox.applets_list) else {
        bail!(
            "build {} left no {} (busybox.applets_list: the output of `busybox --list`); see {}",
            tool.name,
            busybox.applets_list,
            build.script
        );
    };
    let list = String::from_utf8_lossy(bytes);
    let applets = applet_names(&list).with_context(|| format!("{} of build {}", busybox.applets_list, tool.name))?;
    let target = applet_target(&busybox.path, &busybox.applets_dir);
    for applet in applets {
        let path = format!("{}/{applet}", busybox.applets_dir);
        let shipped = PATH_DIRS
            .iter()
            .any(|dir| tree.entries.contains_key(&format!("{dir}/{applet}")));
        if path == busybox.path || shipped {
            continue;
        }
        tree.add(&path, Node::symlink(target.clone()), RECIPE_ORIGIN)?;
    }
    Ok(())
}

/// The names of a `busybox --list` output, one a line; a name that is not a plain file name, or
/// an empty list, is refused.
pub fn applet_names(list: &str) -> Result<Vec<&str>> {
    let names: Vec<&str> = list.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    if names.is_empty() {
        bail!("the applet list is empty");
    }
    for name in &names {
        if name.contains('/') || *name == "." || *name == ".." {
            bail!("applet name {name:?} is not a file name");
        }
    }
    Ok(names)
}

/// One package's `files`, `dirs` and `bundles` rules.
fn add_package(tree: &mut ImageTree, params: &ArchParams, package: &Package, rule_set: &PackageRecipe) -> Result<()> {
    let who = package.locked.describe();
    let name = &package.locked.name;

    for rule in &rule_set.files {
        let from = params.expand(&rule.from);
        let found = resolve(&package.contents.entries, &from).with_context(|| {
            format!("package {who} has no file /{from} (asked for by its `files` rule in the recipe)")
        })?;
        tree.add(&params.expand(&rule.to), file_node(found.bytes, found.mode), name)?;
    }

    for rule in &rule_set.dirs {
        let from = params.expand(&rule.from);
        let to = params.expand(&rule.to);
        for entry_name in &rule.names {
            let path = format!("{from}/{entry_name}");
            let node = match package.contents.entries.get(&path) {
                Some(DebNode::Symlink { target }) => Node::symlink(target.clone()),
                Some(DebNode::File { bytes, mode }) => file_node(bytes, *mode),
                _ => bail!("package {who} has no file /{path} (named in its `dirs` rule in the recipe)"),
            };
            tree.add(&format!("{to}/{entry_name}"), node, name)?;
        }
    }

    for rule in &rule_set.bundles {
        let bytes = bundle(package, params, rule)?;
        tree.add(&params.expand(&rule.to), Node::file(bytes, false), name)?;
    }
    Ok(())
}

/// The concatenation, in name order, of the package's `*{suffix}` files in `from_dir` (one
/// `bundles` rule), each ending in a newline.
fn bundle(package: &Package, params: &ArchParams, rule: &BundleRule) -> Result<Vec<u8>> {
    let who = package.locked.describe();
    let from_dir = params.expand(&rule.from_dir);
    let prefix = format!("{from_dir}/");
    let mut bundle = Vec::new();
    let mut count = 0;
    // BTreeMap order is byte order of the names: deterministic, like a sorted `ls`.
    for (path, node) in package.contents.entries.range(prefix.clone()..) {
        if !path.starts_with(&prefix) {
            break;
        }
        let name_part = &path[prefix.len()..];
        if name_part.contains('/') || !name_part.ends_with(&rule.suffix) {
            continue;
        }
        if let DebNode::File { bytes, .. } = node {
            bundle.extend_from_slice(bytes);
            if !bytes.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            count += 1;
        }
    }
    if count == 0 {
        bail!(
            "package {who} has no *{} file in /{from_dir} (named in its `bundles` rule in the recipe)",
            rule.suffix
        );
    }
    Ok(bundle)
}

/// A package file as an image file: executable when the package made it so.
fn file_node(bytes: &[u8], mode: u32) -> Node {
    Node::file(bytes, mode & 0o111 != 0)
}

/// The symlink target for an applet: the bare name when busybox sits in the same directory.
fn applet_target(busybox_path: &str, applets_dir: &str) -> String {
    match busybox_path.rsplit_once('/') {
        Some((dir, name)) if dir == applets_dir => name.to_owned(),
        _ => format!("/{busybox_path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minimal recipe with its one package renamed `tools` and given a `dirs` and a `bundles`
    /// rule besides its `files` rule (its table is the last one), then a recipe symlink.
    fn recipe_text() -> String {
        let minimal = MINIMAL_TEST_RECIPE.replace("name = \"ethtool\"", "name = \"tools\"");
        minimal
            + r#"dirs = [{ from = "usr/lib/{triplet}/xtables", to = "usr/lib/{triplet}/xtables", names = ["libxt_NAT.so", "libxt_DNAT.so"] }]
bundles = [{ from_dir = "usr/share/certs", suffix = ".crt", to = "cacerts/ca-certificates.crt" }]

[[symlink]]
path = "sbin/iptables"
target = "xtables-legacy-multi"
"#
    }

    fn package() -> Package {
        let mut entries = BTreeMap::new();
        let file = |bytes: &[u8], mode| DebNode::File {
            bytes: bytes.to_vec(),
            mode,
        };
        entries.insert("sbin/ethtool".to_owned(), file(b"\x7fELF ethtool", 0o755));
        let xtables = "usr/lib/aarch64-linux-gnu/xtables";
        entries.insert(format!("{xtables}/libxt_NAT.so"), file(b"nat", 0o644));
        entries.insert(
            format!("{xtables}/libxt_DNAT.so"),
            DebNode::Symlink {
                target: "libxt_NAT.so".into(),
            },
        );
        entries.insert("usr/share/certs/b.crt".to_owned(), file(b"B", 0o644));
        entries.insert("usr/share/certs/a.crt".to_owned(), file(b"A\n", 0o644));
        entries.insert("usr/share/certs/readme".to_owned(), file(b"no", 0o644));
        Package {
            locked: LockedPackage {
                name: "tools".into(),
                arch: "arm64".into(),
                for_arch: "arm64".into(),
                suite: "bookworm".into(),
                version: "1".into(),
                filename: "tools_1_arm64.deb".into(),
                size: 1,
                sha256: "00".repeat(32),
            },
            contents: DebContents { entries },
        }
    }

    /// The busybox build: the binary and its `--list`, which names a program the package ships
    /// (`ethtool`) and one the local files ship (`init`).
    fn busybox_build() -> BuiltTool {
        let mut outputs = DebContents::default();
        for (name, bytes) in [
            ("busybox", &b"\x7fELF busybox"[..]),
            ("busybox.list", b"sh\nls\nethtool\ninit\n"),
        ] {
            outputs.entries.insert(
                name.to_owned(),
                DebNode::File {
                    bytes: bytes.to_vec(),
                    mode: 0o755,
                },
            );
        }
        BuiltTool {
            name: "busybox".into(),
            sources: vec![],
            patches: vec![],
            build_packages: vec![],
            dir: "/nonexistent".into(),
            outputs,
        }
    }

    #[test]
    fn builds_the_tree_from_rules() {
        let recipe = Recipe::parse(&recipe_text()).unwrap();
        let params = recipe.arch_params(boot_assets::Arch::Arm64);
        let local = LocalInput {
            source: "init/init".into(),
            to: "sbin/init".into(),
            node: Node::File {
                bytes: b"#!/bin/sh\n".to_vec(),
                executable: true,
            },
        };
        let tree = assemble(&recipe, params, &[package()], &[busybox_build()], &[local]).unwrap();
        let entries = &tree.entries;
        assert_eq!(entries["proc"].node, Node::Dir);
        assert_eq!(entries["bin/ls"].node, Node::symlink("busybox"));
        assert!(
            !entries.contains_key("bin/ethtool"),
            "the shipped /sbin/ethtool wins over the applet"
        );
        assert!(
            !entries.contains_key("bin/init"),
            "the shipped /sbin/init wins over the applet"
        );
        assert_eq!(entries["bin/busybox"].origin, "busybox");
        assert_eq!(
            entries["bin/sh"].node,
            Node::Symlink {
                target: "busybox".into()
            }
        );
        assert_eq!(entries["bin/sh"].origin, RECIPE_ORIGIN);
        assert!(matches!(
            &entries["bin/busybox"].node,
            Node::File { executable: true, .. }
        ));
        assert_eq!(
            entries["usr/lib/aarch64-linux-gnu/xtables/libxt_DNAT.so"].node,
            Node::Symlink {
                target: "libxt_NAT.so".into()
            }
        );
        assert_eq!(
            entries["cacerts/ca-certificates.crt"].node,
            Node::File {
                bytes: b"A\nB\n".to_vec(),
                executable: false
            }
        );
        assert_eq!(entries["sbin/init"].origin, "init/init");
    }

    #[test]
    fn a_missing_package_file_names_package_and_file() {
        let recipe =
            Recipe::parse(&recipe_text().replace("from = \"sbin/ethtool\"", "from = \"sbin/ethtool-nope\"")).unwrap();
        let params = recipe.arch_params(boot_assets::Arch::Arm64);
        let err = assemble(&recipe, params, &[package()], &[busybox_build()], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package tools 1 (arm64) has no file /sbin/ethtool-nope (asked for by its `files` rule in the recipe)"
        );
        let recipe = Recipe::parse(&recipe_text().replace("\"libxt_DNAT.so\"", "\"libxt_FOO.so\"")).unwrap();
        let err = assemble(&recipe, params, &[package()], &[busybox_build()], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package tools 1 (arm64) has no file /usr/lib/aarch64-linux-gnu/xtables/libxt_FOO.so (named in its \
             `dirs` rule in the recipe)"
        );
    }

    #[test]
    fn applet_lists_must_name_plain_files() {
        assert_eq!(applet_names("[\n[[\nsh\n").unwrap(), ["[", "[[", "sh"]);
        assert_eq!(applet_names("\n").unwrap_err().to_string(), "the applet list is empty");
        assert_eq!(
            applet_names("../sh").unwrap_err().to_string(),
            "applet name \"../sh\" is not a file name"
        );
    }

    #[test]
    fn applet_links_are_relative_only_beside_busybox() {
        assert_eq!(applet_target("bin/busybox", "bin"), "busybox");
        assert_eq!(applet_target("bin/busybox", "sbin"), "/bin/busybox");
    }
}

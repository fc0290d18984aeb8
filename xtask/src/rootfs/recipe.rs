//! The rootfs recipe (`manifests/rootfs.toml`): which packages, which file of which package goes
//! to which image path, the tools built from pinned source packages, symlinks, the busybox
//! applets, mount points, device nodes, local files, the overlay folder and the size budget.
//!
//! Reads one TOML file; writes nothing. [`Recipe::parse`] validates everything that can be
//! checked without the packages themselves, with errors that name the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use boot_assets::Arch;
use serde::Deserialize;

use crate::debian::deb::normalize_path;
use crate::debian::Suite;

/// The placeholder in recipe paths replaced by the arch's multiarch triplet.
pub const TRIPLET_PLACEHOLDER: &str = "{triplet}";

/// The whole recipe, as written in `manifests/rootfs.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The Debian suite the binary packages are resolved in (`bookworm`, `trixie`, `sid`), the
    /// build-only ones included: the host toolchain's own, so what the builds link against its C
    /// library runs with the image's.
    pub suite: String,
    /// The suite the source packages of the `[[build]]`s are resolved in.
    pub source_suite: String,
    /// The image may not exceed this many bytes, per arch (`arm64`, `x86_64`).
    pub size_budget_bytes: BTreeMap<String, u64>,
    /// Empty directories created at the image root.
    pub mount_points: Vec<String>,
    /// Character device nodes in the image (the console PID 1 opens before devtmpfs exists).
    #[serde(default, rename = "device_node")]
    pub device_nodes: Vec<DeviceNode>,
    /// Packages searched, like the program loader would, for the shared libraries the packaged
    /// programs need (`DT_NEEDED`); only the needed libraries are copied.
    pub library_packages: Vec<String>,
    /// Folder (relative to the repository root) copied verbatim into the image.
    pub overlay_dir: String,
    /// Per-arch parameters, keyed by the contract's arch spelling.
    pub arch: BTreeMap<String, ArchParams>,
    /// The static busybox and its applet links.
    pub busybox: Busybox,
    /// Packages whose files are copied.
    #[serde(rename = "package")]
    pub packages: Vec<PackageRecipe>,
    /// Tools built from pinned source packages, whose outputs are copied.
    #[serde(default, rename = "build")]
    pub builds: Vec<SourceBuild>,
    /// Symlinks created in the image.
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<SymlinkRule>,
    /// Files from this repository copied into the image.
    #[serde(default, rename = "local_file")]
    pub local_files: Vec<LocalFile>,
}

/// What differs between arches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchParams {
    /// The Debian architecture name (`arm64`, `amd64`).
    pub deb_arch: String,
    /// The multiarch triplet (`aarch64-linux-gnu`), substituted for `{triplet}` in paths.
    pub triplet: String,
}

/// The busybox binary and the names linked to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Busybox {
    /// Image path of the busybox binary (it must come from a package or build rule).
    pub path: String,
    /// Directory that receives one symlink per applet.
    pub applets_dir: String,
    /// The output of the build that ships busybox holding its own `busybox --list`: every name
    /// there gets a link, unless the image ships a file under that name.
    pub applets_list: String,
}

/// One tool built from pinned source packages by a script of `manifests/builds/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBuild {
    /// The source packages (`[[source]]` entries of the lock); the first one is `SRC` and
    /// names the build.
    pub sources: Vec<String>,
    /// The build script, relative to the repository root.
    pub script: String,
    /// Folder of our patches to the first source package (`*.patch`, applied in name order).
    #[serde(default)]
    pub patches: Option<String>,
    /// The suite its source packages come from, when not the recipe's `source_suite`.
    #[serde(default)]
    pub source_suite: Option<String>,
    /// Build-only packages (of `suite`) unpacked into the script's `DEPS` root.
    #[serde(default)]
    pub build_packages: Vec<String>,
    /// Outputs: a file the script left in `OUT` → image path.
    pub files: Vec<FileRule>,
    /// Why this tool is built here rather than taken from a binary package.
    pub why: String,
}

/// A character device node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceNode {
    pub path: String,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (`0o600`).
    pub mode: u32,
}

/// One package and the files taken from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRecipe {
    pub name: String,
    /// Single files: package path → image path.
    #[serde(default)]
    pub files: Vec<FileRule>,
    /// Named entries of one package directory, copied as they are (files or symlinks).
    #[serde(default)]
    pub dirs: Vec<DirRule>,
    /// Concatenations of every file with a suffix in a package directory, in byte order of
    /// their names (what a maintainer script would generate, e.g. the CA bundle).
    #[serde(default)]
    pub bundles: Vec<BundleRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRule {
    pub from: String,
    pub to: String,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRule {
    pub from_dir: String,
    pub suffix: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkRule {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    /// Path relative to the repository root.
    pub from: String,
    pub to: String,
    /// Installed 0755 instead of 0644.
    #[serde(default)]
    pub executable: bool,
}

impl Recipe {
    /// Reads and validates a recipe file; errors name the file.
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading recipe {}", path.display()))?;
        Recipe::parse(&text).with_context(|| format!("recipe {}", path.display()))
    }

    /// The iptables extensions the image ships: the names in every directory rule that installs
    /// into an `xtables` directory (iptables dlopens them from there).
    pub fn iptables_extensions(&self) -> Vec<String> {
        self.packages
            .iter()
            .flat_map(|package| &package.dirs)
            .filter(|dir| dir.to.trim_end_matches('/').ends_with("/xtables"))
            .flat_map(|dir| dir.names.iter().cloned())
            .collect()
    }

    /// Parses and validates recipe text.
    pub fn parse(text: &str) -> Result<Recipe> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        recipe.validate()?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<()> {
        for arch in [Arch::Arm64, Arch::X86_64] {
            ensure!(
                self.arch.contains_key(arch.as_str()),
                "[arch.{arch}] is missing: the recipe must give deb_arch and triplet for every arch"
            );
        }
        for key in self.arch.keys() {
            ensure!(
                key == Arch::Arm64.as_str() || key == Arch::X86_64.as_str(),
                "[arch.{key}]: unknown arch (expected arm64 or x86_64)"
            );
        }
        for arch in [Arch::Arm64, Arch::X86_64] {
            let budget = self.size_budget_bytes.get(arch.as_str()).copied().unwrap_or(0);
            ensure!(budget > 0, "size_budget_bytes.{arch} must be given and positive");
        }
        Suite::parse(&self.suite).context("suite")?;
        Suite::parse(&self.source_suite).context("source_suite")?;

        let mut names = BTreeSet::new();
        for package in &self.packages {
            ensure!(
                names.insert(package.name.as_str()),
                "package {:?} is listed twice",
                package.name
            );
            for rule in &package.files {
                check_image_path(&rule.from, &format!("package {} files.from", package.name))?;
                check_image_path(&rule.to, &format!("package {} files.to", package.name))?;
            }
            for rule in &package.dirs {
                check_image_path(&rule.from, &format!("package {} dirs.from", package.name))?;
                check_image_path(&rule.to, &format!("package {} dirs.to", package.name))?;
                for name in &rule.names {
                    check_file_name(name, &format!("package {} dirs.names", package.name))?;
                }
            }
            for rule in &package.bundles {
                check_image_path(&rule.from_dir, &format!("package {} bundles.from_dir", package.name))?;
                check_image_path(&rule.to, &format!("package {} bundles.to", package.name))?;
            }
        }
        for library in &self.library_packages {
            ensure!(
                names.insert(library.as_str()),
                "library package {library:?} is listed twice (or also as a [[package]])"
            );
        }
        self.validate_builds(&names)?;
        check_image_path(&self.busybox.path, "busybox.path")?;
        check_image_path(&self.busybox.applets_dir, "busybox.applets_dir")?;
        check_file_name(&self.busybox.applets_list, "busybox.applets_list")?;
        for mount_point in &self.mount_points {
            check_file_name(mount_point, "mount_points")?;
        }
        for node in &self.device_nodes {
            check_image_path(&node.path, "device_node.path")?;
            ensure!(
                node.mode <= 0o7777,
                "device_node {}: mode {:o} is not permission bits",
                node.path,
                node.mode
            );
        }
        for link in &self.symlinks {
            check_image_path(&link.path, "symlink.path")?;
            ensure!(!link.target.is_empty(), "symlink {}: empty target", link.path);
        }
        for local in &self.local_files {
            check_image_path(&local.from, "local_file.from")?;
            check_image_path(&local.to, "local_file.to")?;
        }
        check_image_path(&self.overlay_dir, "overlay_dir")?;
        Ok(())
    }

    /// Builds: sources named once, scripts and patch folders relative, build-only packages not
    /// also image packages (a lock pins one version of a name per arch).
    fn validate_builds(&self, image_packages: &BTreeSet<&str>) -> Result<()> {
        let mut sources = BTreeSet::new();
        for build in &self.builds {
            let Some(name) = build.sources.first() else {
                bail!("a [[build]] names no source package");
            };
            for source in &build.sources {
                ensure!(
                    sources.insert(source.as_str()),
                    "source package {source:?} is built twice"
                );
            }
            check_image_path(&build.script, &format!("build {name} script"))?;
            if let Some(patches) = &build.patches {
                check_image_path(patches, &format!("build {name} patches"))?;
            }
            if let Some(suite) = &build.source_suite {
                Suite::parse(suite).with_context(|| format!("build {name} source_suite"))?;
            }
            for package in &build.build_packages {
                ensure!(
                    !image_packages.contains(package.as_str()),
                    "build {name}: build package {package:?} is also an image package"
                );
            }
            for rule in &build.files {
                check_file_name(&rule.from, &format!("build {name} files.from"))?;
                check_image_path(&rule.to, &format!("build {name} files.to"))?;
            }
            ensure!(
                !build.why.trim().is_empty(),
                "build {name}: say `why` it is built from source"
            );
        }
        Ok(())
    }

    /// The size budget of one arch (validated to exist).
    pub fn budget(&self, arch: Arch) -> u64 {
        self.size_budget_bytes[arch.as_str()]
    }

    /// Every source package the builds need, in recipe order.
    pub fn source_names(&self) -> Vec<String> {
        self.sources_by_suite().into_iter().map(|(name, _)| name).collect()
    }

    /// Every source package the builds need, in recipe order, with the suite it comes from.
    pub fn sources_by_suite(&self) -> Vec<(String, &str)> {
        self.builds
            .iter()
            .flat_map(|build| {
                let suite = build.source_suite.as_deref().unwrap_or(&self.source_suite);
                build.sources.iter().map(move |name| (name.clone(), suite))
            })
            .collect()
    }

    /// Every build-only package, sorted, each once.
    pub fn build_package_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self.builds.iter().flat_map(|build| &build.build_packages).collect();
        names.into_iter().cloned().collect()
    }

    /// The parameters of one arch (validated to exist).
    pub fn arch_params(&self, arch: Arch) -> &ArchParams {
        &self.arch[arch.as_str()]
    }

    /// Every package the build needs, tools first then libraries, each once.
    pub fn package_names(&self) -> Vec<String> {
        self.packages
            .iter()
            .map(|package| package.name.clone())
            .chain(self.library_packages.iter().cloned())
            .collect()
    }
}

impl ArchParams {
    /// Replaces `{triplet}` in a recipe path.
    pub fn expand(&self, path: &str) -> String {
        path.replace(TRIPLET_PLACEHOLDER, &self.triplet)
    }

    /// The directories the program loader searches after RUNPATH (Debian's multiarch glibc).
    pub fn default_library_dirs(&self) -> Vec<String> {
        vec![
            format!("lib/{}", self.triplet),
            format!("usr/lib/{}", self.triplet),
            "lib".to_owned(),
            "usr/lib".to_owned(),
        ]
    }

    /// Where the closure puts every needed shared library.
    pub fn library_install_dir(&self) -> String {
        format!("lib/{}", self.triplet)
    }
}

/// A recipe path must be relative and already normalized (no `.`/`..`/empty components).
fn check_image_path(path: &str, field: &str) -> Result<()> {
    let normalized = normalize_path(path).with_context(|| format!("{field} {path:?}"))?;
    if path.starts_with('/') || normalized != path || path.is_empty() {
        bail!("{field} {path:?} must be a relative path without `.`, `..`, empty components or a trailing `/`");
    }
    Ok(())
}

fn check_file_name(name: &str, field: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && !name.contains('/') && name != "." && name != "..",
        "{field}: {name:?} is not a single file name"
    );
    Ok(())
}

/// The smallest valid recipe, for unit tests here and in `assemble.rs`: busybox built from source,
/// one package and the C library, for both contract arches.
#[cfg(test)]
pub(crate) const MINIMAL_TEST_RECIPE: &str = r#"
suite = "bookworm"
source_suite = "trixie"
size_budget_bytes = { arm64 = 1000, x86_64 = 1000 }
mount_points = ["proc"]
library_packages = ["libc6"]
overlay_dir = "rootfs-overlay"
busybox = { path = "bin/busybox", applets_dir = "bin", applets_list = "busybox.list" }

[arch.arm64]
deb_arch = "arm64"
triplet = "aarch64-linux-gnu"

[arch.x86_64]
deb_arch = "amd64"
triplet = "x86_64-linux-gnu"

[[build]]
sources = ["busybox"]
script = "manifests/builds/busybox.sh"
files = [{ from = "busybox", to = "bin/busybox" }]
why = "the test recipe's busybox"

[[package]]
name = "ethtool"
files = [{ from = "sbin/ethtool", to = "sbin/ethtool" }]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_recipe_is_valid() {
        let recipe = Recipe::load(&crate::util::project_root().join("manifests/rootfs.toml")).unwrap();
        assert!(recipe.source_names().contains(&"e2fsprogs".to_owned()));
    }

    #[test]
    fn parses_a_minimal_recipe_and_expands_the_triplet() {
        let recipe = Recipe::parse(MINIMAL_TEST_RECIPE).unwrap();
        assert_eq!(recipe.package_names(), ["ethtool", "libc6"]);
        assert_eq!(recipe.source_names(), ["busybox"]);
        let params = recipe.arch_params(Arch::Arm64);
        assert_eq!(
            params.expand("usr/lib/{triplet}/xtables"),
            "usr/lib/aarch64-linux-gnu/xtables"
        );
        assert_eq!(params.default_library_dirs()[0], "lib/aarch64-linux-gnu");
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            Recipe::parse(&MINIMAL_TEST_RECIPE.replace("to = \"sbin/ethtool\"", "to = \"/sbin/ethtool\"")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package ethtool files.to \"/sbin/ethtool\" must be a relative path without `.`, `..`, \
             empty components or a trailing `/`"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("why = \"the test recipe's busybox\"", "why = \"\""))
            .unwrap_err();
        assert_eq!(err.to_string(), "build busybox: say `why` it is built from source");
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("[arch.x86_64]", "[arch.riscv64]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[arch.x86_64] is missing: the recipe must give deb_arch and triplet for every arch"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("arm64 = 1000, ", "")).unwrap_err();
        assert_eq!(err.to_string(), "size_budget_bytes.arm64 must be given and positive");
        let err = Recipe::parse(
            &MINIMAL_TEST_RECIPE.replace("library_packages = [\"libc6\"]", "library_packages = [\"ethtool\"]"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "library package \"ethtool\" is listed twice (or also as a [[package]])"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("size_budget_bytes", "size_budget")).unwrap_err();
        assert!(err.to_string().contains("size_budget"), "{err}");
    }
}

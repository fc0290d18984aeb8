//! The rootfs recipe (`manifests/rootfs.toml`): which packages, which file of which package goes
//! to which image path, symlinks, the busybox applets, mount points, local files, the overlay
//! folder and the size budget.
//!
//! Reads one TOML file; writes nothing. [`Recipe::parse`] validates everything that can be
//! checked without the packages themselves, with errors that name the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use boot_assets::Arch;
use serde::Deserialize;

use crate::debian::deb::normalize_path;

/// The placeholder in recipe paths replaced by the arch's multiarch triplet.
pub const TRIPLET_PLACEHOLDER: &str = "{triplet}";

/// The whole recipe, as written in `manifests/rootfs.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The Debian suite the packages are resolved in (`bookworm`, `trixie`, `sid`).
    pub suite: String,
    /// The image may not exceed this many bytes.
    pub size_budget_bytes: u64,
    /// Empty directories created at the image root.
    pub mount_points: Vec<String>,
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
    /// Image path of the busybox binary (it must come from a package rule).
    pub path: String,
    /// Directory that receives one symlink per applet.
    pub applets_dir: String,
    /// Applet names.
    pub applets: Vec<String>,
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
        ensure!(self.size_budget_bytes > 0, "size_budget_bytes must be positive");

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
        check_image_path(&self.busybox.path, "busybox.path")?;
        check_image_path(&self.busybox.applets_dir, "busybox.applets_dir")?;
        let mut applets = BTreeSet::new();
        for applet in &self.busybox.applets {
            check_file_name(applet, "busybox.applets")?;
            ensure!(applets.insert(applet), "busybox applet {applet:?} is listed twice");
        }
        for mount_point in &self.mount_points {
            check_file_name(mount_point, "mount_points")?;
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

/// The smallest valid recipe, for unit tests here and in `assemble.rs`: one static busybox package
/// and the C library, for both contract arches.
#[cfg(test)]
pub(crate) const MINIMAL_TEST_RECIPE: &str = r#"
suite = "bookworm"
size_budget_bytes = 1000
mount_points = ["proc"]
library_packages = ["libc6"]
overlay_dir = "rootfs-overlay"
busybox = { path = "bin/busybox", applets_dir = "bin", applets = ["sh"] }

[arch.arm64]
deb_arch = "arm64"
triplet = "aarch64-linux-gnu"

[arch.x86_64]
deb_arch = "amd64"
triplet = "x86_64-linux-gnu"

[[package]]
name = "busybox-static"
files = [{ from = "bin/busybox", to = "bin/busybox" }]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_recipe_is_valid() {
        let recipe = Recipe::load(&crate::util::project_root().join("manifests/rootfs.toml")).unwrap();
        assert!(recipe.package_names().contains(&"busybox-static".to_owned()));
    }

    #[test]
    fn parses_a_minimal_recipe_and_expands_the_triplet() {
        let recipe = Recipe::parse(MINIMAL_TEST_RECIPE).unwrap();
        assert_eq!(recipe.package_names(), ["busybox-static", "libc6"]);
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
            Recipe::parse(&MINIMAL_TEST_RECIPE.replace("to = \"bin/busybox\"", "to = \"/bin/busybox\"")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package busybox-static files.to \"/bin/busybox\" must be a relative path without `.`, `..`, \
             empty components or a trailing `/`"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("[arch.x86_64]", "[arch.riscv64]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[arch.x86_64] is missing: the recipe must give deb_arch and triplet for every arch"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("applets = [\"sh\"]", "applets = [\"sh\", \"sh\"]"))
            .unwrap_err();
        assert_eq!(err.to_string(), "busybox applet \"sh\" is listed twice");
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace(
            "library_packages = [\"libc6\"]",
            "library_packages = [\"busybox-static\"]",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "library package \"busybox-static\" is listed twice (or also as a [[package]])"
        );
        let err = Recipe::parse(&MINIMAL_TEST_RECIPE.replace("size_budget_bytes", "size_budget")).unwrap_err();
        assert!(err.to_string().contains("size_budget"), "{err}");
    }
}

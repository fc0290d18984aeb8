//! `cargo xtask fex`: builds FEX's x86-64 interpreter for arm64 as a static-pie executable and
//! stages it as a runtime binary.
//!
//! Reads a FEX source tree (local, or a shallow clone with submodules), `*.patch` files from a
//! patches directory, and `manifests/fex/build.toml` (CMake target, output path, cache entries);
//! cross-compiles with `manifests/fex/aarch64-linux-gnu.cmake` on non-arm64 hosts. Refuses a
//! binary that is not a self-contained aarch64 executable, then writes
//! `{output}/FEX/{safe_version}/arm64/FEX` (0755, atomically) and replaces the FEX entry of the
//! binaries fragment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch, Binary, FileEntry};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::{binaries, elf, flags, util};

/// The runtime binary's name: in the manifest, on the CDN and in the guest (`runtime/bin/FEX`).
const FEX_NAME: &str = "FEX";

/// FEX runs x86-64 programs on arm64 hosts only.
const FEX_ARCH: Arch = Arch::Arm64;

/// Build settings, relative to the repository root.
const BUILD_SETTINGS_PATH: &str = "manifests/fex/build.toml";

/// CMake toolchain file for cross builds, relative to the repository root.
const CROSS_TOOLCHAIN_PATH: &str = "manifests/fex/aarch64-linux-gnu.cmake";

/// What `manifests/fex/build.toml` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSettings {
    /// The CMake target of the interpreter.
    target: String,
    /// Where the build writes it, relative to the build directory.
    output: String,
    /// `-D` cache entries.
    cmake: BTreeMap<String, String>,
}

impl flags::Fex {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let settings_path = util::project_root().join(BUILD_SETTINGS_PATH);
        let settings: BuildSettings = toml::from_str(
            &std::fs::read_to_string(&settings_path).with_context(|| format!("reading {}", settings_path.display()))?,
        )
        .with_context(|| format!("parsing {}", settings_path.display()))?;
        for tool in ["cmake", "ninja", "git"] {
            require_host_tool(sh, tool)?;
        }

        let work = self.build_dir.clone().unwrap_or_else(|| util::build_dir().join("fex"));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let source = self.prepare_source(sh, &work)?;
        let build = work.join("build");

        let started = std::time::Instant::now();
        eprintln!(
            "fex: configuring {} (CMake + Ninja, Release, static-pie arm64)",
            source.display()
        );
        let mut defines: Vec<String> = settings.cmake.iter().map(|(k, v)| format!("-D{k}={v}")).collect();
        if std::env::consts::ARCH != "aarch64" {
            defines.push(format!(
                "-DCMAKE_TOOLCHAIN_FILE={}",
                util::project_root().join(CROSS_TOOLCHAIN_PATH).display()
            ));
        }
        // The caller's entries come last, so they override the checked-in ones.
        defines.extend(self.cmake_define.iter().map(|d| format!("-D{d}")));
        cmd!(sh, "cmake -G Ninja -S {source} -B {build} {defines...}")
            .quiet()
            .run()
            .context("configuring FEX with CMake")?;
        let target = &settings.target;
        let jobs = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .to_string();
        eprintln!("fex: building target {target} ({:.0?} so far)", started.elapsed());
        cmd!(sh, "cmake --build {build} --target {target} --parallel {jobs}")
            .run()
            .context("building FEX")?;
        eprintln!("fex: built in {:.0?}", started.elapsed());

        let built = build.join(&settings.output);
        let bytes =
            std::fs::read(&built).with_context(|| format!("reading the built interpreter {}", built.display()))?;
        let info =
            elf::elf_info(&bytes).with_context(|| format!("reading the built interpreter {}", built.display()))?;
        elf::require_static(
            &info,
            FEX_ARCH,
            &format!("the built FEX interpreter {}", built.display()),
        )
        .context("refusing to stage FEX")?;

        let version = match &self.version {
            Some(version) => version.clone(),
            None => default_version(self.git_ref.as_deref()),
        };
        let staged = stage(&self.output, &version, &bytes)?;
        let fragment = binaries::read_fragment_or_empty(&self.binaries_json)?;
        let entry = Binary {
            name: FEX_NAME.into(),
            version: version.clone(),
            install_dir: None,
            targets: [(
                FEX_ARCH,
                FileEntry {
                    path: cdn::binary_path(FEX_NAME, &version, FEX_ARCH),
                    sha256: util::sha256_bytes(&bytes),
                    size: Some(bytes.len() as u64),
                },
            )]
            .into(),
        };
        binaries::write_fragment(&self.binaries_json, &binaries::replace_entry(&fragment, entry))?;
        eprintln!(
            "fex: staged {} (version {version}); recorded in {}",
            staged.display(),
            self.binaries_json.display()
        );
        Ok(())
    }

    /// The tree to build: the local source (copied when patches must be applied), or a fresh
    /// shallow clone with submodules.
    fn prepare_source(&self, sh: &Shell, work: &Path) -> Result<PathBuf> {
        let patches = match &self.patches_dir {
            Some(dir) => patch_files(dir)?,
            None => Vec::new(),
        };
        let source = match (&self.source, &self.repo) {
            (Some(source), None) => {
                anyhow::ensure!(
                    source.join("CMakeLists.txt").is_file(),
                    "--source {}: no CMakeLists.txt there",
                    source.display()
                );
                if patches.is_empty() {
                    return Ok(source.clone());
                }
                let copy = work.join("src");
                sh.remove_path(&copy)?;
                cmd!(sh, "cp -a {source} {copy}")
                    .run()
                    .context("copying the source tree before patching it")?;
                copy
            }
            (None, Some(repo)) => {
                let git_ref = self
                    .git_ref
                    .as_deref()
                    .context("--repo needs --ref (a tag or branch to build)")?;
                let clone = work.join("src");
                sh.remove_path(&clone)?;
                eprintln!("fex: cloning {repo} at {git_ref} (shallow, with submodules)");
                cmd!(sh, "git clone --quiet --depth 1 --branch {git_ref} --recurse-submodules --shallow-submodules {repo} {clone}")
                    .run()
                    .with_context(|| format!("cloning {repo} at {git_ref}"))?;
                clone
            }
            (Some(_), Some(_)) => bail!("pass either --source or --repo, not both"),
            (None, None) => bail!("pass --source DIR (a FEX tree) or --repo URL --ref REF"),
        };
        for patch in &patches {
            eprintln!("fex: applying {}", patch.display());
            cmd!(sh, "git -C {source} apply --whitespace=nowarn {patch}")
                .run()
                .with_context(|| format!("applying patch {}", patch.display()))?;
        }
        Ok(source)
    }
}

/// The `*.patch` files of a directory, in name order.
fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut patches = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading --patches-dir {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "patch") {
            patches.push(path);
        }
    }
    patches.sort();
    Ok(patches)
}

/// A version key unique to this build: FEX builds are not reproducible, so two builds must never
/// share a CDN path. `{ref}+{UTC time}`, with `local` when no ref was given.
fn default_version(git_ref: Option<&str>) -> String {
    let base: String = git_ref
        .unwrap_or("local")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stamp = boot_assets::manifest::format_utc_timestamp(util::now_epoch()).replace(['-', ':'], "");
    format!("{base}+{}", stamp.trim_end_matches('Z'))
}

/// Writes the binary to `{output}/FEX/{safe_version}/arm64/FEX`, mode 0755, atomically.
fn stage(output: &Path, version: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = output.join(cdn::binary_relative_path(FEX_NAME, version, FEX_ARCH));
    util::write_executable_atomic(&path, bytes)?;
    Ok(path)
}

fn require_host_tool(sh: &Shell, tool: &str) -> Result<()> {
    if cmd!(sh, "sh -c 'command -v \"$0\"' {tool}")
        .quiet()
        .ignore_stdout()
        .run()
        .is_err()
    {
        bail!("`{tool}` is not installed: run `cargo xtask setup --job release` (or `apt-get install -y cmake ninja-build git g++-aarch64-linux-gnu`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_version_is_path_safe_and_unique_per_second() {
        let version = default_version(Some("FEX-2511"));
        assert!(version.starts_with("FEX-2511+"), "{version}");
        assert!(boot_assets::manifest::is_safe_file_name(&version), "{version}");
        assert!(!cdn::safe_version(&version).contains('+'));
        assert!(default_version(Some("refs/tags/x y")).starts_with("refs-tags-x-y+"));
        assert!(default_version(None).starts_with("local+"));
    }

    #[test]
    fn checked_in_settings_build_static_pie() {
        let text = std::fs::read_to_string(util::project_root().join(BUILD_SETTINGS_PATH)).unwrap();
        let settings: BuildSettings = toml::from_str(&text).unwrap();
        assert_eq!(settings.cmake["CMAKE_EXE_LINKER_FLAGS"], "-static-pie");
        assert_eq!(settings.target, "FEXInterpreter");
    }
}

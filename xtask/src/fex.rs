//! `cargo xtask fex`: builds FEX's x86-64 interpreter for arm64 as a static-pie executable and
//! stages it as a runtime binary.
//!
//! Reads a FEX source tree (local, or exactly the pinned commit fetched with its submodules),
//! `*.patch` files from the patches directories (default `manifests/fex/patches`), and
//! `manifests/fex/build.toml` (pinned source, CMake target, output path, cache entries); builds with
//! clang and lld (FEX refuses GCC): `manifests/fex/aarch64-linux-gnu.cmake` cross-compiles on
//! non-arm64 hosts against Debian's arm64 cross sysroot, `manifests/fex/native-clang.cmake` on arm64
//! hosts. Refuses a binary that is not a self-contained aarch64 executable, then writes
//! `{output}/FEX/{safe_version}/arm64/FEX` (0755, atomically) and replaces the FEX entry of the
//! binaries fragment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch, Binary, FileEntry};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::layout::Staging;
use crate::{binaries, elf, flags, util};

/// The runtime binary's name: in the manifest, on the CDN and in the guest (`runtime/bin/FEX`).
const FEX_NAME: &str = "FEX";

/// FEX runs x86-64 programs on arm64 hosts only.
const FEX_ARCH: Arch = Arch::Arm64;

/// Build settings, relative to the repository root.
const BUILD_SETTINGS_PATH: &str = "manifests/fex/build.toml";

/// CMake toolchain file for cross builds (x86_64 → arm64, clang), relative to the repository root.
const CROSS_TOOLCHAIN_PATH: &str = "manifests/fex/aarch64-linux-gnu.cmake";

/// CMake toolchain file for native arm64 builds (clang), relative to the repository root.
const NATIVE_TOOLCHAIN_PATH: &str = "manifests/fex/native-clang.cmake";

/// Our patches to FEX, applied unless `--patches-dir` names other directories.
const DEFAULT_PATCHES_DIR: &str = "manifests/fex/patches";

/// The host tools a FEX build runs (their packages, and the arm64 cross sysroot, are in
/// `manifests/host-packages.toml`). FEX's configure step also runs Python scripts
/// (`find_package(Python 3.9 REQUIRED)`).
const HOST_TOOLS: [&str; 7] = ["cmake", "ninja", "git", "clang", "clang++", "ld.lld", "python3"];

/// What `manifests/fex/build.toml` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSettings {
    /// The FEX release `--repo` builds, pinned by commit.
    source: SourcePin,
    /// The CMake target of the interpreter.
    target: String,
    /// Where the build writes it, relative to the build directory.
    output: String,
    /// `-D` cache entries.
    cmake: BTreeMap<String, String>,
}

/// `[source]` of `manifests/fex/build.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcePin {
    /// The tag the commit is (the default `--ref`, and the version prefix).
    #[serde(rename = "ref")]
    git_ref: String,
    /// The commit of that tag: the only one a `--repo` build fetches without `--commit`.
    commit: String,
    /// Submodule paths not fetched (test binaries the interpreter does not build from).
    skip_submodules: Vec<String>,
}

/// The commit to fetch for `--ref`/`--commit`, or why not: an unpinned ref needs `--commit`.
fn commit_to_fetch<'a>(pin: &'a SourcePin, git_ref: &str, commit: Option<&'a str>) -> Result<&'a str> {
    let commit = match commit {
        Some(commit) => commit,
        None if git_ref == pin.git_ref => &pin.commit,
        None => bail!(
            "--ref {git_ref}: {BUILD_SETTINGS_PATH} pins {} (commit {}); pass --commit SHA to build another ref, \
             or update [source] there",
            pin.git_ref,
            pin.commit
        ),
    };
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("commit {commit:?} is not a full 40-hex-digit commit id ({BUILD_SETTINGS_PATH} [source].commit or --commit)");
    }
    Ok(commit)
}

/// Where the FEX tree comes from.
pub enum Source {
    /// A local tree (or any CMake tree with the same target and output path).
    Local(PathBuf),
    /// A git URL, fetched at the pinned commit or at `commit`, with its submodules.
    Repo { url: String, commit: Option<String> },
}

/// What one FEX build is asked to do (the `fex` flags, or `dist --fex-source`).
pub struct Request {
    pub tree: Tree,
    /// The version key; `{ref}+{UTC time}` when `None`.
    pub version: Option<String>,
    /// Extra CMake cache entries `KEY=VALUE`, which override the checked-in ones.
    pub cmake_defines: Vec<String>,
    /// The clone and the CMake build (`build/fex`).
    pub work_dir: PathBuf,
    /// Where the binary is staged (`dist/bin`), and the fragment whose FEX entry is replaced
    /// (created when missing).
    pub staging: Staging,
}

/// The tree a build starts from.
pub struct Tree {
    pub source: Source,
    /// The FEX ref: the prefix of the default version; with a repo, the pinned ref unless a
    /// commit is given.
    pub git_ref: Option<String>,
    /// Directories of `*.patch` files, applied one directory after the other.
    pub patches_dirs: Vec<PathBuf>,
}

/// What a build wrote.
pub struct FexOutputs {
    /// `{staging.dir}/FEX/{safe_version}/arm64/FEX`.
    pub staged: PathBuf,
    pub version: String,
}

impl flags::Fex {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let source = match (self.source, self.repo) {
            (Some(source), None) => Source::Local(source),
            (None, Some(url)) => Source::Repo {
                url,
                commit: self.commit,
            },
            (Some(_), Some(_)) => bail!("pass either --source or --repo, not both"),
            (None, None) => bail!("pass --source DIR (a FEX tree) or --repo URL --ref REF"),
        };
        build(
            sh,
            &Request {
                tree: Tree {
                    source,
                    git_ref: self.git_ref,
                    patches_dirs: or_default_patches(self.patches_dir),
                },
                version: self.version,
                cmake_defines: self.cmake_define,
                work_dir: self.build_dir.unwrap_or_else(default_work_dir),
                staging: Staging {
                    dir: self.output,
                    fragment: self.binaries_json,
                },
            },
        )?;
        Ok(())
    }
}

impl Request {
    /// A build of a local tree with `patches_dir`'s patches (ours when `None`) in the default
    /// work directory: what `dist --fex-source` asks for.
    pub fn local(source: PathBuf, patches_dir: Option<PathBuf>, staging: Staging) -> Request {
        Request {
            tree: Tree {
                source: Source::Local(source),
                git_ref: None,
                patches_dirs: or_default_patches(patches_dir.into_iter().collect()),
            },
            version: None,
            cmake_defines: Vec::new(),
            work_dir: default_work_dir(),
            staging,
        }
    }
}

/// `build/fex`.
fn default_work_dir() -> PathBuf {
    util::build_dir().join("fex")
}

/// The patches directories asked for, or ours.
fn or_default_patches(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if dirs.is_empty() {
        vec![util::project_root().join(DEFAULT_PATCHES_DIR)]
    } else {
        dirs
    }
}

/// Builds, checks and stages FEX as `request` says, and records it in the fragment.
pub fn build(sh: &Shell, request: &Request) -> Result<FexOutputs> {
    let settings_path = util::project_root().join(BUILD_SETTINGS_PATH);
    let settings: BuildSettings = toml::from_str(
        &std::fs::read_to_string(&settings_path).with_context(|| format!("reading {}", settings_path.display()))?,
    )
    .with_context(|| format!("parsing {}", settings_path.display()))?;
    crate::tools::require_all(&HOST_TOOLS).context("FEX builds with clang and lld")?;

    let work = &request.work_dir;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let (source, fetched) = request.prepare_source(sh, &settings.source)?;
    let build = work.join("build");
    request.configure_and_build(sh, &source, &build, &settings, fetched.as_ref())?;

    let built = build.join(&settings.output);
    let bytes = std::fs::read(&built).with_context(|| format!("reading the built interpreter {}", built.display()))?;
    let info = elf::elf_info(&bytes).with_context(|| format!("reading the built interpreter {}", built.display()))?;
    elf::require_static(
        &info,
        FEX_ARCH,
        &format!("the built FEX interpreter {}", built.display()),
    )
    .context("refusing to stage FEX")?;

    let pinned_ref = matches!(request.tree.source, Source::Repo { .. }).then_some(settings.source.git_ref.as_str());
    let version = match &request.version {
        Some(version) => version.clone(),
        None => default_version(request.tree.git_ref.as_deref().or(pinned_ref)),
    };
    request.stage_and_record(&version, &bytes)
}

impl Request {
    /// Configures the tree with CMake (the checked-in cache entries and toolchain file, the
    /// version of a fetched commit, then the caller's `--cmake-define`s) and builds the
    /// interpreter's target.
    fn configure_and_build(
        &self,
        sh: &Shell,
        source: &Path,
        build: &Path,
        settings: &BuildSettings,
        fetched: Option<&(String, String)>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        eprintln!(
            "fex: configuring {} (CMake + Ninja, clang + lld, Release, static-pie arm64)",
            source.display()
        );
        let mut defines: Vec<String> = settings.cmake.iter().map(|(k, v)| format!("-D{k}={v}")).collect();
        let toolchain = if std::env::consts::ARCH == "aarch64" {
            NATIVE_TOOLCHAIN_PATH
        } else {
            CROSS_TOOLCHAIN_PATH
        };
        defines.push(format!(
            "-DCMAKE_TOOLCHAIN_FILE={}",
            util::project_root().join(toolchain).display()
        ));
        if let Some((git_ref, commit)) = fetched {
            defines.extend(version_defines(git_ref, commit));
        }
        // The caller's entries come last, so they override the checked-in ones.
        defines.extend(self.cmake_defines.iter().map(|d| format!("-D{d}")));
        cmd!(sh, "cmake -G Ninja -S {source} -B {build} {defines...}")
            .quiet()
            .run()
            .context("configuring FEX with CMake (its own refusals, e.g. of GCC or an old Clang, are above)")?;
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
        Ok(())
    }

    /// Stages the checked interpreter and replaces the FEX entry of the binaries fragment.
    fn stage_and_record(&self, version: &str, bytes: &[u8]) -> Result<FexOutputs> {
        let staged = stage(&self.staging.dir, version, bytes)?;
        let fragment = binaries::read_fragment_or_empty(&self.staging.fragment)?;
        let entry = Binary {
            name: FEX_NAME.into(),
            version: version.to_owned(),
            install_dir: None,
            targets: [(
                FEX_ARCH,
                FileEntry {
                    path: cdn::binary_path(FEX_NAME, version, FEX_ARCH),
                    sha256: util::sha256_bytes(bytes),
                    size: Some(bytes.len() as u64),
                },
            )]
            .into(),
        };
        binaries::write_fragment(&self.staging.fragment, &binaries::replace_entry(&fragment, entry))?;
        eprintln!(
            "fex: staged {} (version {version}); recorded in {}",
            staged.display(),
            self.staging.fragment.display()
        );
        Ok(FexOutputs {
            staged,
            version: version.to_owned(),
        })
    }

    /// The tree to build: the local source (copied when patches must be applied), or exactly the
    /// pinned commit fetched with its submodules; for a fetch, also the ref and commit it is.
    fn prepare_source(&self, sh: &Shell, pin: &SourcePin) -> Result<(PathBuf, Option<(String, String)>)> {
        let mut patches = Vec::new();
        for dir in &self.tree.patches_dirs {
            patches.extend(patch_files(dir)?);
        }
        let mut fetched = None;
        let tree = self.work_dir.join("src");
        let source = match &self.tree.source {
            Source::Local(source) => {
                anyhow::ensure!(
                    source.join("CMakeLists.txt").is_file(),
                    "--source {}: no CMakeLists.txt there",
                    source.display()
                );
                if patches.is_empty() {
                    return Ok((source.clone(), None));
                }
                sh.remove_path(&tree)?;
                cmd!(sh, "cp -a {source} {tree}")
                    .run()
                    .context("copying the source tree before patching it")?;
                tree
            }
            Source::Repo { url, commit } => {
                let git_ref = self.tree.git_ref.as_deref().unwrap_or(&pin.git_ref);
                let commit = commit_to_fetch(pin, git_ref, commit.as_deref())?;
                fetch_commit(sh, &tree, url, git_ref, commit, &pin.skip_submodules)?;
                fetched = Some((git_ref.to_owned(), commit.to_owned()));
                tree
            }
        };
        for patch in &patches {
            eprintln!("fex: applying {}", patch.display());
            cmd!(sh, "git -C {source} apply --whitespace=nowarn {patch}")
                .run()
                .with_context(|| format!("applying patch {}", patch.display()))?;
        }
        Ok((source, fetched))
    }
}

/// Fetches exactly `commit` of `repo` into a fresh `clone`, with the submodules it records
/// (but `skip`).
fn fetch_commit(sh: &Shell, clone: &Path, repo: &str, git_ref: &str, commit: &str, skip: &[String]) -> Result<()> {
    sh.remove_path(clone)?;
    eprintln!("fex: fetching {repo} at {git_ref} = commit {commit} (depth 1, with its submodules)");
    cmd!(sh, "git init --quiet {clone}")
        .run()
        .context("creating the FEX clone")?;
    cmd!(sh, "git -C {clone} fetch --quiet --depth 1 {repo} {commit}")
        .run()
        .with_context(|| format!("fetching commit {commit} ({git_ref}) from {repo}"))?;
    cmd!(sh, "git -C {clone} checkout --quiet --detach FETCH_HEAD")
        .run()
        .context("checking out the fetched FEX commit")?;
    let head = cmd!(sh, "git -C {clone} rev-parse HEAD").quiet().read()?;
    if !head.trim().eq_ignore_ascii_case(commit) {
        bail!("{repo} gave commit {} for {commit}: refusing to build it", head.trim());
    }
    let submodules = submodule_paths(sh, clone)?;
    let wanted: Vec<&String> = submodules.iter().filter(|path| !skip.contains(path)).collect();
    if !wanted.is_empty() {
        cmd!(
            sh,
            "git -C {clone} submodule update --quiet --init --recursive --depth 1 -- {wanted...}"
        )
        .run()
        .with_context(|| format!("fetching the submodules of {repo} at {commit}"))?;
    }
    Ok(())
}

/// FEX's version cache entries for a fetched commit. FEX asks `git describe` for its version
/// (shown in the guest's `uname -v`) and `git rev-parse HEAD` for the hash its code cache is keyed
/// by; a depth-1 fetch has no tags, so the describe would come out empty.
fn version_defines(git_ref: &str, commit: &str) -> [String; 2] {
    [
        format!("-DOVERRIDE_VERSION={git_ref}"),
        format!("-DOVERRIDE_HASH={commit}"),
    ]
}

/// The submodule paths `.gitmodules` of a checkout names (none without the file).
fn submodule_paths(sh: &Shell, checkout: &Path) -> Result<Vec<String>> {
    if !checkout.join(".gitmodules").is_file() {
        return Ok(Vec::new());
    }
    let listing = cmd!(sh, "git -C {checkout} config --file .gitmodules --get-regexp path")
        .quiet()
        .read()
        .context("reading .gitmodules of the FEX checkout")?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, path)| path.trim().to_owned()))
        .collect())
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
        assert_eq!(settings.cmake["CMAKE_EXE_LINKER_FLAGS"], "-fuse-ld=lld -static-pie");
        // A release runs on any arm64 host: FEX's default TUNE_CPU=native tunes for the build
        // machine (on an x86-64 one, FEX-2608 ends up with -mcpu=cortex-a78).
        assert_eq!(settings.cmake["TUNE_CPU"], "none");
        // At FEX-2608 the interpreter's target is `FEX`, written to Bin/FEX.
        assert_eq!(settings.target, "FEX");
        assert_eq!(settings.output, "Bin/FEX");
        assert_eq!(settings.source.git_ref, "FEX-2608");
        assert_eq!(
            commit_to_fetch(&settings.source, "FEX-2608", None).unwrap(),
            settings.source.commit
        );
    }

    #[test]
    fn a_fetched_commit_is_fexs_version_and_hash() {
        assert_eq!(
            version_defines("FEX-2608", "e869aa644a16e4332cdc15c1ea0b4d13d482385d"),
            [
                "-DOVERRIDE_VERSION=FEX-2608",
                "-DOVERRIDE_HASH=e869aa644a16e4332cdc15c1ea0b4d13d482385d"
            ]
        );
    }

    #[test]
    fn an_unpinned_ref_needs_a_commit_and_commits_are_full_ids() {
        let pin = SourcePin {
            git_ref: "FEX-2608".into(),
            commit: "e869aa644a16e4332cdc15c1ea0b4d13d482385d".into(),
            skip_submodules: Vec::new(),
        };
        let err = commit_to_fetch(&pin, "FEX-2609", None).unwrap_err().to_string();
        assert!(
            err.contains("--ref FEX-2609: manifests/fex/build.toml pins FEX-2608"),
            "{err}"
        );
        assert!(err.contains("pass --commit SHA"), "{err}");
        let other = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(commit_to_fetch(&pin, "FEX-2609", Some(other)).unwrap(), other);
        let err = commit_to_fetch(&pin, "FEX-2609", Some("e869aa6"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a full 40-hex-digit commit id"), "{err}");
    }
}

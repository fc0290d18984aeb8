//! `cargo xtask stack`: the container stack a release ships (`dockerd`, `containerd`,
//! `containerd-shim-runc-v2`, `runc`, `docker-init`), built for one arch from pinned Debian source
//! packages with Debian's Go, static, on one x86_64 host.
//!
//! Reads `manifests/stack.toml` (one `[[build]]` per source package: its pinned version and
//! suite, its script of `manifests/builds/stack/`, our patches, its outputs) and one lock per
//! build, `manifests/stack/{name}.lock` (the `.dsc` and its files by digest, the Go toolchain and
//! the `golang-*` closure of its Build-Depends for the build host, the target arch's build-only
//! packages). Each build unpacks its source with Debian's patches and ours, unpacks the Go side
//! and the target packages into cached private roots ([`crate::debian::private_root`]) and runs
//! its script (see `manifests/builds/stack/README.md` for the environment).
//!
//! Outputs are cached under `{cache}/stack/{key}/`, keyed by every input; each output must be a
//! static executable of its arch (no `PT_INTERP`, no `DT_NEEDED`). `sync-binaries` takes them
//! through the `stack` source format of `manifests/binaries.toml`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::build_cache::{self, Verify};
use crate::debian::{self, Apt, Lock, LockedPackage, LockedSource, Suite};
use crate::flags::{self, ArchFlag};
use crate::{elf, util};

/// The recipe, relative to the repository root.
pub const RECIPE_PATH: &str = "manifests/stack.toml";

/// The folder of the builds' lock files, relative to the repository root.
const LOCK_DIR: &str = "manifests/stack";

/// The cache kind of built stacks.
const STACK_KIND: &str = "stack";

/// Bumped when the way a build runs changes (the environment, the checks).
const STACK_FORMAT: &str = "boot-assets-stack-v1";

/// The command that re-resolves the locks.
const UPDATE_HINT: &str = "cargo xtask stack --update-lock";

/// The Debian arch of the build host: the Go toolchain runs here and cross-compiles.
const HOST_DEB_ARCH: &str = "amd64";

/// The package every Go build adds to its source's Build-Depends: Debian's default Go.
const GO_PACKAGE: &str = "golang-go";

/// The host tools the scripts run besides Go and the cross compilers (tini's CMake build, the
/// Files-Excluded pass over docker.io's tree).
const REQUIRED_TOOLS: [&str; 4] = ["sh", "make", "cmake", "perl"];

/// The date compiled programs report: fixed, so the bytes depend only on the inputs.
const STACK_SOURCE_DATE_EPOCH: &str = "0";

/// The whole recipe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(rename = "build")]
    pub builds: Vec<StackBuild>,
}

/// One source package built for each arch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackBuild {
    /// The Debian source package; also the build's name and its lock's file name.
    pub source: String,
    /// Its pinned Debian version.
    pub version: String,
    /// The suite of the source and of everything the build unpacks.
    pub suite: String,
    /// Its script, relative to the repository root.
    pub script: String,
    /// A folder of our `*.patch` files, applied after Debian's.
    #[serde(default)]
    pub patches: Option<String>,
    /// Go builds unpack Debian's Go and the `golang-*` closure of the source's Build-Depends.
    #[serde(default)]
    pub go: bool,
    /// Build-Depends left out of that closure (the packages the source itself builds).
    #[serde(default)]
    pub exclude_build_depends: Vec<String>,
    /// Build-only packages of the target arch (static libraries, headers).
    #[serde(default)]
    pub target_packages: Vec<String>,
    /// The executables the script leaves in `$OUT`.
    pub outputs: Vec<String>,
    /// Why this source and version.
    pub why: String,
}

impl flags::Stack {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let recipe = load_recipe()?;
        if self.update_lock {
            for build in &recipe.builds {
                update_lock(sh, build)?;
            }
        }
        let arches: Vec<Arch> = if self.arch.is_empty() {
            Arch::ALL.to_vec()
        } else {
            self.arch.iter().map(|&a: &ArchFlag| a.into()).collect()
        };
        for arch in arches {
            for build in &recipe.builds {
                let dir = build_cached(sh, build, arch)?;
                for output in &build.outputs {
                    let path = dir.join(output);
                    println!("{arch} {output} {} {}", util::file_size(&path)?, path.display());
                }
            }
        }
        Ok(())
    }
}

/// The recipe of the repository, checked.
pub fn load_recipe() -> Result<Recipe> {
    let path = util::project_root().join(RECIPE_PATH);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_recipe(&text, &path.display().to_string())
}

/// Parses and checks a recipe's text; `origin` names it in errors.
fn parse_recipe(text: &str, origin: &str) -> Result<Recipe> {
    let recipe: Recipe = toml::from_str(text).with_context(|| format!("parsing {origin}"))?;
    let mut outputs = std::collections::BTreeMap::new();
    for build in &recipe.builds {
        let at = format!("{origin}: build {:?}", build.source);
        Suite::parse(&build.suite).with_context(|| format!("{at}: suite"))?;
        if build.outputs.is_empty() {
            bail!("{at} has no outputs");
        }
        if build.why.trim().is_empty() {
            bail!("{at}: `why` is empty: say why this source and version");
        }
        for output in &build.outputs {
            if !boot_assets::manifest::is_safe_file_name(output) {
                bail!("{at}: output {output:?} is not a plain file name");
            }
            if let Some(other) = outputs.insert(output.clone(), build.source.clone()) {
                bail!("{at}: output {output:?} is also an output of build {other:?}");
            }
        }
        if !build.go && !build.exclude_build_depends.is_empty() {
            bail!("{at}: exclude_build_depends needs go = true");
        }
    }
    Ok(recipe)
}

/// The cached output file `name` of the recipe's build that makes it, for `arch`.
pub fn built_output(sh: &Shell, name: &str, arch: Arch) -> Result<PathBuf> {
    let recipe = load_recipe()?;
    let build = recipe
        .builds
        .iter()
        .find(|build| build.outputs.iter().any(|output| output == name))
        .with_context(|| format!("no build of {RECIPE_PATH} has an output {name:?}"))?;
    Ok(build_cached(sh, build, arch)?.join(name))
}

/// The lock file of a build.
fn lock_path(build: &StackBuild) -> PathBuf {
    util::project_root()
        .join(LOCK_DIR)
        .join(format!("{}.lock", build.source))
}

/// The lock's header comment.
fn lock_header(build: &StackBuild) -> String {
    format!(
        "# The inputs of the container stack's build of {} ({RECIPE_PATH}): its source package, Debian's Go\n\
         # and the golang-* closure of its Build-Depends ({HOST_DEB_ARCH}, the build host), and the target\n\
         # arches' build-only packages. Written by `{UPDATE_HINT}`; review the diff.\n",
        build.source
    )
}

/// The build's locked inputs: its source, the Go side, and the target arch's packages.
struct Inputs {
    source: LockedSource,
    go: Vec<LockedPackage>,
    target: Vec<LockedPackage>,
}

/// Reads a build's lock and picks what building for `deb_arch` needs.
fn locked_inputs(build: &StackBuild, deb_arch: &str) -> Result<Inputs> {
    let path = lock_path(build);
    let lock = Lock::load(&path, false).with_context(|| format!("run `{UPDATE_HINT}` to write it"))?;
    let source = lock.source(&build.source, UPDATE_HINT)?.clone();
    if source.version != build.version {
        bail!(
            "{}: locks {} {}, but {RECIPE_PATH} asks for {}: run `{UPDATE_HINT}`",
            path.display(),
            build.source,
            source.version,
            build.version
        );
    }
    let target = lock
        .entries_for(deb_arch, &build.target_packages, UPDATE_HINT)
        .with_context(|| format!("lock file {}", path.display()))?;
    let go = lock
        .packages
        .iter()
        .filter(|package| package.for_arch == HOST_DEB_ARCH && is_go_package(&package.name))
        .cloned()
        .collect();
    Ok(Inputs { source, go, target })
}

/// The Go side of a lock: Go itself and the `golang-*-dev` source packages.
fn is_go_package(name: &str) -> bool {
    name.starts_with("golang-")
}

/// Re-resolves a build's lock: the pinned source version, the `golang-*` closure of its
/// Build-Depends, and the target packages of both arches.
fn update_lock(sh: &Shell, build: &StackBuild) -> Result<()> {
    let suite = Suite::parse(&build.suite)?;
    let host = Apt::new(sh, suite, HOST_DEB_ARCH)?;
    host.update(sh)?;
    let source = host.resolve_source_version(sh, &build.source, &build.version)?;
    let mut lock = Lock::default();
    if build.go {
        let dsc = debian::fetch::fetch_source(sh, &source, HOST_DEB_ARCH, UPDATE_HINT)?;
        let text = std::fs::read_to_string(&dsc[0]).with_context(|| format!("reading {}", dsc[0].display()))?;
        let mut names = go_build_depends(&text, &build.exclude_build_depends)?;
        names.push(GO_PACKAGE.to_owned());
        let closure = host.resolve_closure(sh, &names)?;
        lock.packages
            .extend(closure.into_iter().filter(|entry| is_go_package(&entry.name)));
    }
    for arch in Arch::ALL {
        let deb_arch = crate::arch_facts::of(arch).deb_arch;
        if build.target_packages.is_empty() {
            continue;
        }
        let apt = Apt::new(sh, suite, deb_arch)?;
        apt.update(sh)?;
        for entry in apt.resolve_all(sh, &build.target_packages)? {
            if !lock.packages.contains(&entry) {
                lock.packages.push(entry);
            }
        }
    }
    eprintln!(
        "stack: lock {}: {} and {} packages",
        build.source,
        source.describe(),
        lock.packages.len()
    );
    lock.sources.push(source);
    lock.packages
        .sort_by(|a, b| (&a.for_arch, &a.name).cmp(&(&b.for_arch, &b.name)));
    let path = lock_path(build);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    util::write_atomic(&path, lock.render(&lock_header(build)).as_bytes())
}

/// The `golang-*` names of a `.dsc`'s Build-Depends (version constraints, arch lists and build
/// profiles dropped; the first of alternatives), less `excluded` and the virtual `golang-any`.
fn go_build_depends(dsc: &str, excluded: &[String]) -> Result<Vec<String>> {
    let fields = debian::apt::dsc_fields(dsc);
    let depends = fields
        .get("Build-Depends")
        .context("the .dsc has no Build-Depends field")?;
    let mut names: Vec<String> = depends
        .split(',')
        .filter_map(|relation| relation.split('|').next())
        .filter_map(|first| first.split(['(', '[', '<']).next())
        .map(|name| name.trim().to_owned())
        .filter(|name| is_go_package(name) && name != "golang-any" && !excluded.contains(name))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// One build for one arch, from the cache when its key is there.
fn build_cached(sh: &Shell, build: &StackBuild, arch: Arch) -> Result<PathBuf> {
    let facts = crate::arch_facts::of(arch);
    let inputs = locked_inputs(build, facts.deb_arch)?;
    let patch_files = match &build.patches {
        Some(dir) => debian::patches_in(&util::project_root().join(dir))?,
        None => Vec::new(),
    };
    let script = util::project_root().join(&build.script);
    let script_text =
        std::fs::read(&script).with_context(|| format!("reading {} (build {})", script.display(), build.source))?;
    let compiler_version = crate::rootfs::build::compiler_version(sh, facts.triplet)?;
    let mut key = format!(
        "{STACK_FORMAT}\nbuild {}\ntarget {}\ncompiler {}\nepoch {STACK_SOURCE_DATE_EPOCH}\nscript {}\n",
        build.source,
        facts.triplet,
        compiler_version,
        util::sha256_bytes(&script_text)
    );
    for file in &inputs.source.files {
        writeln!(
            key,
            "source {} {} {}",
            inputs.source.version, file.filename, file.sha256
        )
        .expect("writing to a String");
    }
    for patch in &patch_files {
        writeln!(key, "patch {} {}", file_name(patch), util::sha256_file(patch)?).expect("writing to a String");
    }
    for package in inputs.go.iter().chain(&inputs.target) {
        writeln!(key, "package {} {} {}", package.name, package.version, package.sha256).expect("writing to a String");
    }
    for output in &build.outputs {
        writeln!(key, "output {output}").expect("writing to a String");
    }
    build_cache::cached(STACK_KIND, &key, Verify::Digests, |out| {
        run_build(sh, build, arch, &inputs, &patch_files, &script, out)
    })
}

/// Unpacks the inputs, runs the script with `OUT` = `out`, and checks every output.
fn run_build(
    sh: &Shell,
    build: &StackBuild,
    arch: Arch,
    inputs: &Inputs,
    patches: &[PathBuf],
    script: &Path,
    out: &Path,
) -> Result<()> {
    let facts = crate::arch_facts::of(arch);
    crate::tools::require_all(&REQUIRED_TOOLS)?;
    eprintln!(
        "stack: building {} {} for {arch} (a cold build takes minutes)",
        build.source, inputs.source.version
    );
    let started = std::time::Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("stack-build-")
        .tempdir()
        .context("creating a build directory")?;
    let src = debian::unpack_source(
        sh,
        &inputs.source,
        HOST_DEB_ARCH,
        patches,
        &scratch.path().join("src"),
        UPDATE_HINT,
    )?;
    let go_root = root_of(sh, &inputs.go, &scratch.path().join("no-go"))?;
    let target_root = root_of(sh, &inputs.target, &scratch.path().join("no-target"))?;
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;
    let goarch = match arch {
        Arch::Arm64 => "arm64",
        Arch::X86_64 => "amd64",
    };
    let output = cmd!(sh, "sh {script}")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &work)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", STACK_SOURCE_DATE_EPOCH)
        .env("SRC", &src)
        .env("WORK", &work)
        .env("OUT", out)
        .env("GO_DEPS", &go_root)
        .env("TARGET_DEPS", &target_root)
        .env("GOARCH", goarch)
        .env("HOST", facts.triplet)
        .env("CC", format!("{}-gcc", facts.triplet))
        .env("STRIP", format!("{}-strip", facts.triplet))
        .env("JOBS", crate::kernel::DEFAULT_JOBS.to_string())
        .env("VERSION", &inputs.source.version)
        .env(
            "UPSTREAM_VERSION",
            debian::source::upstream_version(&inputs.source.version),
        )
        .quiet()
        .ignore_status()
        .output()?;
    if !output.status.success() {
        bail!(
            "building {} for {arch} failed ({}, {}):\n{}{}\n(the build tree is in {}, kept for you)",
            build.source,
            build.script,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr).trim_end(),
            scratch.keep().display()
        );
    }
    check_outputs(build, arch, out)?;
    eprintln!("stack: built {} for {arch} in {:.1?}", build.source, started.elapsed());
    Ok(())
}

/// Every output of `build` is in `out` and a static executable of `arch`.
fn check_outputs(build: &StackBuild, arch: Arch, out: &Path) -> Result<()> {
    for name in &build.outputs {
        let path = out.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "build {} ({arch}) left no {name} in $OUT ({})",
                build.source, build.script
            )
        })?;
        let info = elf::elf_info(&bytes).with_context(|| format!("{} ({arch})", path.display()))?;
        elf::require_static(&info, arch, &format!("{name} ({arch}, build {})", build.source))?;
    }
    Ok(())
}

/// The private root of `packages`, or an empty folder `empty` when there are none.
fn root_of(sh: &Shell, packages: &[LockedPackage], empty: &Path) -> Result<PathBuf> {
    if packages.is_empty() {
        std::fs::create_dir(empty).with_context(|| format!("creating {}", empty.display()))?;
        return Ok(empty.to_path_buf());
    }
    debian::private_root(sh, packages, UPDATE_HINT)
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_recipe_parses_and_names_every_runtime_binary() {
        let recipe = load_recipe().unwrap();
        let outputs: Vec<&str> = recipe
            .builds
            .iter()
            .flat_map(|build| build.outputs.iter().map(String::as_str))
            .collect();
        for binary in [
            "dockerd",
            "containerd",
            "containerd-shim-runc-v2",
            "runc",
            "docker-init",
        ] {
            assert!(outputs.contains(&binary), "{binary} is no output of {RECIPE_PATH}");
        }
    }

    #[test]
    fn a_recipe_with_one_output_twice_or_a_bad_suite_is_refused() {
        let build = |source: &str, suite: &str| {
            format!(
                "[[build]]\nsource = \"{source}\"\nversion = \"1\"\nsuite = \"{suite}\"\nscript = \"s.sh\"\n\
                 outputs = [\"runc\"]\nwhy = \"w\"\n"
            )
        };
        let twice = format!("{}{}", build("a", "trixie"), build("b", "trixie"));
        let err = parse_recipe(&twice, "r.toml").unwrap_err().to_string();
        assert!(
            err.contains("output \"runc\" is also an output of build \"a\""),
            "{err}"
        );
        let err = format!("{:#}", parse_recipe(&build("a", "jessie"), "r.toml").unwrap_err());
        assert!(err.contains("unknown Debian suite \"jessie\""), "{err}");
    }

    #[test]
    fn go_build_depends_keep_golang_names_without_constraints_or_exclusions() {
        let dsc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: containerd\n\
                   Build-Depends: debhelper-compat (= 13), dh-golang, golang-any,\n golang-github-a-dev (>= 2),\n \
                   golang-github-b-dev [!s390x] <!nocheck>, golang-github-self-dev | golang-x-dev, pkgconf\n";
        let names = go_build_depends(dsc, &["golang-github-self-dev".to_owned()]).unwrap();
        assert_eq!(names, ["golang-github-a-dev", "golang-github-b-dev"]);
    }
}

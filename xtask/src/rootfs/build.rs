//! Tools built from pinned source packages: each `[[build]]` of the recipe unpacks its locked
//! source packages through [`crate::debian::unpack_source`] (Debian's patches, then ours from
//! `manifests/patches/`), unpacks its build-only packages into a private root
//! ([`crate::debian::private_root`]) and runs its script of `manifests/builds/` with the host's
//! compiler for the target arch (see `manifests/builds/README.md` for the script's environment).
//!
//! Outputs are cached with [`crate::build_cache`] under `{cache}/rootfs/tools/{key}/`, keyed by
//! every input (source and patch digests, the script, the build-only packages, the compiler's
//! version, the flags); every hit checks the digest of every output. Writes nothing else outside
//! temporary directories.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use xshell::{cmd, Shell};

use super::recipe::{Recipe, SourceBuild};
use crate::build_cache::{self, Verify};
use crate::debian::deb::{DebContents, DebNode};
use crate::debian::{self, Lock, LockedPackage, LockedSource};
use crate::util;

/// The cache kind of built tools.
const TOOLS_KIND: &str = "rootfs/tools";

/// Bumped when the way a tool is built changes (the environment, the flags, the layout).
const TOOLS_FORMAT: &str = "boot-assets-rootfs-tool-v1";

/// Optimised for size: these tools are run rarely and each byte ships in every image.
const OPTIMIZE_FLAG: &str = "-Os";

/// The date compiled programs report (`__DATE__`, busybox's banner): fixed, so a tool's bytes
/// depend only on its inputs, not on when or for which release it was built.
const TOOLS_SOURCE_DATE_EPOCH: &str = "0";

/// Where the unpacked source trees appear in compiled strings (`__FILE__`, assertions).
const SOURCE_PREFIX: &str = "/usr/src";

/// Where the scratch directory appears in compiled strings.
const BUILD_PREFIX: &str = "/build";

/// The host tools the builds need besides their compiler (erofs-utils runs autoreconf,
/// nfs-utils rpcgen).
const REQUIRED_TOOLS: [&str; 5] = ["make", "sh", "autoreconf", "libtoolize", "rpcgen"];

/// One tool built for one arch: its inputs and its cached outputs.
#[derive(Debug, Clone)]
pub struct BuiltTool {
    /// The build's name: its first source package.
    pub name: String,
    pub sources: Vec<LockedSource>,
    /// Our patches: file name and SHA-256.
    pub patches: Vec<(String, String)>,
    /// The build-only packages it linked or read.
    pub build_packages: Vec<LockedPackage>,
    /// The cache entry holding its outputs.
    pub dir: PathBuf,
    /// The outputs by file name.
    pub outputs: DebContents,
}

/// Everything the builds of one arch need from the lock.
pub struct BuildInputs<'a> {
    pub recipe: &'a Recipe,
    pub lock: &'a Lock,
    pub update_hint: &'a str,
}

/// Builds (or takes from the cache) every tool of the recipe for `arch`.
pub fn build_tools(sh: &Shell, inputs: &BuildInputs<'_>, arch: Arch) -> Result<Vec<BuiltTool>> {
    inputs
        .recipe
        .builds
        .iter()
        .map(|build| build_tool(sh, inputs, build, arch))
        .collect()
}

/// Builds the recipe's build named `name` (a first source package) for `arch`.
pub fn build_named(sh: &Shell, inputs: &BuildInputs<'_>, name: &str, arch: Arch) -> Result<BuiltTool> {
    let build = inputs
        .recipe
        .builds
        .iter()
        .find(|build| build.sources[0] == name)
        .with_context(|| format!("the recipe has no [[build]] of {name}"))?;
    build_tool(sh, inputs, build, arch)
}

/// One build for one arch, from the cache when its key is there.
fn build_tool(sh: &Shell, inputs: &BuildInputs<'_>, build: &SourceBuild, arch: Arch) -> Result<BuiltTool> {
    let name = build.sources[0].clone();
    let facts = crate::arch_facts::of(arch);
    let sources = build
        .sources
        .iter()
        .map(|source| inputs.lock.source(source, inputs.update_hint).cloned())
        .collect::<Result<Vec<_>>>()?;
    let patch_files = match &build.patches {
        Some(dir) => debian::patches_in(&util::project_root().join(dir))?,
        None => Vec::new(),
    };
    let patches = patch_files
        .iter()
        .map(|path| Ok((file_name(path), util::sha256_file(path)?)))
        .collect::<Result<Vec<_>>>()?;
    let build_packages = inputs
        .lock
        .entries_for(facts.deb_arch, &build.build_packages, inputs.update_hint)?;
    let script = util::project_root().join(&build.script);
    let script_text = std::fs::read(&script).with_context(|| format!("reading {} (build {name})", script.display()))?;
    let compiler = compiler_version(sh, facts.triplet)?;
    let key = cache_key(&CacheKeyInput {
        name: &name,
        triplet: facts.triplet,
        sources: &sources,
        patches: &patches,
        script_sha256: &util::sha256_bytes(&script_text),
        build_packages: &build_packages,
        compiler: &compiler,
    });
    let dir = build_cache::cached(TOOLS_KIND, &key, Verify::Digests, |out| {
        let job = BuildJob {
            name: &name,
            arch,
            sources: &sources,
            patch_files: &patch_files,
            build_packages: &build_packages,
            script: &script,
            update_hint: inputs.update_hint,
        };
        run_build(sh, &job, out)
    })?;
    let outputs = read_outputs(&dir)?;
    for rule in &build.files {
        if !outputs.entries.contains_key(&rule.from) {
            bail!(
                "build {name} ({arch}) left no {} in its output (asked for by its `files` rule in the recipe; {} \
                 wrote: {})",
                rule.from,
                build.script,
                outputs.entries.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(BuiltTool {
        name,
        sources,
        patches,
        build_packages,
        dir,
        outputs,
    })
}

/// What a cache key is made of.
struct CacheKeyInput<'a> {
    name: &'a str,
    triplet: &'a str,
    sources: &'a [LockedSource],
    patches: &'a [(String, String)],
    script_sha256: &'a str,
    build_packages: &'a [LockedPackage],
    compiler: &'a str,
}

/// The key text of one build: every input, one per line.
fn cache_key(input: &CacheKeyInput<'_>) -> String {
    let mut key = format!(
        "{TOOLS_FORMAT}\nbuild {}\ntarget {}\ncompiler {}\nflags {OPTIMIZE_FLAG}\nepoch {TOOLS_SOURCE_DATE_EPOCH}\n\
         script {}\n",
        input.name, input.triplet, input.compiler, input.script_sha256
    );
    for source in input.sources {
        for file in &source.files {
            writeln!(
                key,
                "source {} {} {} {}",
                source.name, source.version, file.filename, file.sha256
            )
            .expect("writing to a String");
        }
    }
    for (patch, sha256) in input.patches {
        writeln!(key, "patch {patch} {sha256}").expect("writing to a String");
    }
    for package in input.build_packages {
        writeln!(key, "package {} {} {}", package.name, package.version, package.sha256).expect("writing to a String");
    }
    key
}

/// One build's inputs, ready to run.
struct BuildJob<'a> {
    name: &'a str,
    arch: Arch,
    sources: &'a [LockedSource],
    patch_files: &'a [PathBuf],
    build_packages: &'a [LockedPackage],
    script: &'a Path,
    update_hint: &'a str,
}

/// Unpacks the sources and build-only packages and runs the script with `OUT` = `out`.
fn run_build(sh: &Shell, job: &BuildJob<'_>, out: &Path) -> Result<()> {
    let facts = crate::arch_facts::of(job.arch);
    crate::tools::require_all(&REQUIRED_TOOLS)?;
    let compiler = format!("{}-gcc", facts.triplet);
    crate::tools::require(&compiler)?;
    eprintln!("rootfs: building {} for {} from source", job.name, job.arch);
    let started = std::time::Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("rootfs-tool-")
        .tempdir()
        .context("creating a build directory")?;
    let mut trees = Vec::new();
    for (index, source) in job.sources.iter().enumerate() {
        let patches: &[PathBuf] = if index == 0 { job.patch_files } else { &[] };
        let dest = scratch.path().join("src");
        trees.push(debian::unpack_source(
            sh,
            source,
            facts.deb_arch,
            patches,
            &dest,
            job.update_hint,
        )?);
    }
    let (deps, work, static_libs) = build_dirs(sh, job, scratch.path())?;
    let script = job.script;
    let mut command = cmd!(sh, "sh {script}")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", TOOLS_SOURCE_DATE_EPOCH)
        .env("SRC", &trees[0])
        .env("WORK", &work)
        .env("OUT", out)
        .env("HOST", facts.triplet)
        .env("CC", &compiler)
        .env("AR", format!("{}-ar", facts.triplet))
        .env("RANLIB", format!("{}-ranlib", facts.triplet))
        .env("STRIP", format!("{}-strip", facts.triplet))
        .env("RUN", target_runner(job.arch))
        .env("JOBS", crate::kernel::DEFAULT_JOBS.to_string())
        .env("DEPS", &deps)
        .env("DEPS_LIB", &static_libs)
        .env("VERSION", &job.sources[0].version)
        .env("CFLAGS", compiler_flags(&trees, &work));
    for (source, tree) in job.sources.iter().zip(&trees).skip(1) {
        command = command.env(format!("SRC_{}", env_name(&source.name)), tree);
    }
    let output = command.quiet().ignore_status().output()?;
    if !output.status.success() {
        bail!(
            "building {} for {} failed ({}, {}):\n{}{}\n(the build logs are in {}, kept for you)",
            job.name,
            job.arch,
            job.script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr).trim_end(),
            scratch.keep().join("work").display()
        );
    }
    eprintln!(
        "rootfs: built {} for {} in {:.1?}",
        job.name,
        job.arch,
        started.elapsed()
    );
    Ok(())
}

/// The build-only packages' root (`DEPS`), an empty `WORK` and the static libraries' folder
/// (`DEPS_LIB`) of one build, under `scratch`.
fn build_dirs(sh: &Shell, job: &BuildJob<'_>, scratch: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let deps = if job.build_packages.is_empty() {
        let empty = scratch.join("deps");
        std::fs::create_dir(&empty).with_context(|| format!("creating {}", empty.display()))?;
        empty
    } else {
        debian::private_root(sh, job.build_packages, job.update_hint)?
    };
    let work = scratch.join("work");
    let static_libs = scratch.join("static-libs");
    for dir in [&work, &static_libs] {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let triplet = crate::arch_facts::of(job.arch).triplet;
    link_static_libraries(&deps.join("usr/lib").join(triplet), &static_libs)?;
    Ok((deps, work, static_libs))
}

/// `CFLAGS` of every build: optimised for size, with the source and scratch paths mapped to
/// fixed ones so the outputs do not depend on where they were built.
fn compiler_flags(trees: &[PathBuf], work: &Path) -> String {
    let mut flags = vec![OPTIMIZE_FLAG.to_owned()];
    for tree in trees {
        let name = file_name(tree);
        flags.push(format!("-ffile-prefix-map={}={SOURCE_PREFIX}/{name}", tree.display()));
    }
    flags.push(format!("-ffile-prefix-map={}={BUILD_PREFIX}", work.display()));
    flags.join(" ")
}

/// The command prefix that runs a program of `arch` on this host: nothing for the host's own
/// arch, qemu-user otherwise (busybox's build runs `busybox --list`).
pub fn target_runner(arch: Arch) -> String {
    if Arch::host() == Some(arch) {
        String::new()
    } else {
        crate::arch_facts::of(arch).qemu_user.to_owned()
    }
}

/// Links every static library (`*.a`) of `lib_dir` into `into`: scripts link from there, where
/// no shared library (whose symlink may point at the host's own copy) can be picked instead.
fn link_static_libraries(lib_dir: &Path, into: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(lib_dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.with_context(|| format!("listing {}", lib_dir.display()))?.path();
        if path.extension().is_some_and(|extension| extension == "a") {
            let link = into.join(path.file_name().expect("a listed file has a name"));
            std::os::unix::fs::symlink(&path, &link).with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

/// The first line of `{triplet}-gcc --version`: a new compiler is a new build.
pub fn compiler_version(sh: &Shell, triplet: &str) -> Result<String> {
    let compiler = format!("{triplet}-gcc");
    crate::tools::require(&compiler)?;
    let text = cmd!(sh, "{compiler} --version")
        .quiet()
        .read()
        .with_context(|| format!("asking {compiler} for its version"))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// The regular files of a cache entry (not the cache's own dot files), by name.
fn read_outputs(dir: &Path) -> Result<DebContents> {
    let mut outputs = DebContents::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = file_name(&path);
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata()?.permissions());
        outputs.entries.insert(name, DebNode::File { bytes, mode });
    }
    Ok(outputs)
}

/// The sources' environment names: `libtirpc` → `LIBTIRPC`, `nfs-utils` → `NFS_UTILS`.
fn env_name(source: &str) -> String {
    source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::lock::SourceFile;

    #[test]
    fn the_key_names_every_input_and_changes_with_each() {
        let source = LockedSource {
            name: "e2fsprogs".into(),
            suite: "trixie".into(),
            version: "1.47.2-3".into(),
            files: vec![SourceFile {
                filename: "e2fsprogs_1.47.2-3.dsc".into(),
                size: 1,
                sha256: "ab".repeat(32),
            }],
        };
        let patches = vec![("0001-fix.patch".to_owned(), "cd".repeat(32))];
        let input = CacheKeyInput {
            name: "e2fsprogs",
            triplet: "aarch64-linux-gnu",
            sources: std::slice::from_ref(&source),
            patches: &patches,
            script_sha256: "ef",
            build_packages: &[],
            compiler: "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0",
        };
        let key = cache_key(&input);
        assert!(key.contains(&format!(
            "source e2fsprogs 1.47.2-3 e2fsprogs_1.47.2-3.dsc {}",
            "ab".repeat(32)
        )));
        assert!(key.contains(&format!("patch 0001-fix.patch {}", "cd".repeat(32))));
        assert!(key.contains("target aarch64-linux-gnu\n"));
        let unpatched = cache_key(&CacheKeyInput { patches: &[], ..input });
        assert_ne!(key, unpatched);
    }

    #[test]
    fn source_names_become_environment_names() {
        assert_eq!(env_name("nfs-utils"), "NFS_UTILS");
        assert_eq!(env_name("libtirpc"), "LIBTIRPC");
    }
}

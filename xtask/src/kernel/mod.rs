//! `cargo xtask kernel`: builds the guest kernel from source, or takes a verified prebuilt one.
//!
//! Reads the kernel source (the Debian package pinned in `manifests/kernel/source.lock` unless
//! `--source` names a tree or tarball), the config fragments under `manifests/kernel/` (common +
//! arch, then any `--extra-fragment`) and the container-host requirements (`requirements.rs`).
//! Configures `tinyconfig` + fragments + requirements + `olddefconfig`, checks that every
//! fragment option and every requirement survived, then compiles with pinned `KBUILD_BUILD_*` so
//! the image is reproducible, and refuses an image over the budget in `manifests/kernel/budget.toml`.
//! Results are cached (`cache.rs`) in `{cache}/kernel/{arch}-{key}/` keyed by a hash of the
//! source identity, fragments, requirements, arch, compiler version and build timestamp; the object tree of
//! each (arch, source) pair is kept in `{cache}/kernel/work/` so a changed fragment rebuilds
//! incrementally. Writes the image to `--output` (default `build/{arch}/kernel`) and the final
//! config beside it (`{output}.config`).

mod cache;
mod fragment;
mod prebuilt;
mod progress;
pub mod requirements;
mod source;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use boot_assets::manifest::format_utc_timestamp;
use boot_assets::Arch;
use xshell::{cmd, Shell};

use crate::{flags, util};
use cache::{cache_key_text, lock_cache, read_entry, store_entry, CacheKeyInputs};

/// The folder of the checked-in config fragments, relative to the repository root.
const FRAGMENT_DIR: &str = "manifests/kernel";

/// The fragment every arch merges first.
const COMMON_FRAGMENT: &str = "common.config";

/// The minimal base configuration the fragments are merged over.
const BASE_CONFIG_TARGET: &str = "tinyconfig";

/// The image size budgets, relative to the repository root.
const BUDGET_PATH: &str = "manifests/kernel/budget.toml";

/// The generated fragment of requirement options, inside the work tree.
const REQUIREMENTS_FRAGMENT: &str = "requirements.config";

/// Parallel compile jobs: the build machines have 2 cores shared with other work.
pub const DEFAULT_JOBS: u32 = 2;

/// `KBUILD_BUILD_USER` and `KBUILD_BUILD_HOST`: fixed, so `uname -v` never names the build machine.
const KBUILD_IDENTITY: &str = "boot-assets";

/// `KBUILD_BUILD_VERSION`: the `#1` in the version banner, fixed instead of counting builds.
const KBUILD_VERSION: &str = "1";

/// The build timestamp when SOURCE_DATE_EPOCH is unset: the epoch itself, so it is fixed.
const DEFAULT_BUILD_EPOCH: u64 = 0;

/// The full make output inside a cache entry (and in the work tree while building).
const BUILD_LOG: &str = "build.log";

/// The file name of the default `--output`, under `build/{arch}/`.
const DEFAULT_OUTPUT_FILE: &str = "kernel";

/// How one arch is built: make's ARCH, the cross prefix, the C compiler, the target and image.
struct ArchRecipe {
    make_arch: &'static str,
    cross_compile: Option<&'static str>,
    compiler: &'static str,
    make_target: &'static str,
    image: &'static str,
}

/// The kernel build facts of `arch`, from the per-arch table.
fn recipe(arch: Arch) -> ArchRecipe {
    let facts = crate::arch_facts::of(arch);
    ArchRecipe {
        make_arch: facts.kernel_make_arch,
        cross_compile: facts.kernel_cross_compile,
        compiler: facts.c_compiler,
        make_target: facts.kernel_make_target,
        image: facts.kernel_image,
    }
}

impl flags::Kernel {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arch: Arch = self.arch.into();
        let lock = self
            .source_lock
            .clone()
            .unwrap_or_else(|| util::project_root().join(source::SOURCE_LOCK_PATH));
        if self.update_lock {
            source::update_lock(sh, &lock)?;
        }
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| util::build_dir().join(arch.as_str()).join(DEFAULT_OUTPUT_FILE));
        if let Some(url) = &self.url {
            let sha256 = self
                .sha256
                .as_deref()
                .context("--url needs --sha256 with the image's digest")?;
            let image = prebuilt::fetch(url, sha256)?;
            copy_output(&image, &output)?;
            eprintln!(
                "kernel {arch}: {} (prebuilt from {url}, sha256 verified)",
                output.display()
            );
            return Ok(());
        }
        let built = build(
            sh,
            &KernelRequest {
                arch,
                source: self.source.clone(),
                source_lock: lock,
                extra_fragments: self.extra_fragment.clone(),
                jobs: self.jobs.unwrap_or(DEFAULT_JOBS),
            },
        )?;
        copy_output(&built.image, &output)?;
        copy_output(&built.config, &config_path_for(&output))?;
        let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "kernel {arch}: {} (Linux {}, {size} bytes = {:.1} MiB{}), config {}",
            output.display(),
            built.release,
            size as f64 / (1024.0 * 1024.0),
            if built.cached {
                format!(
                    ", from the cache entry {}",
                    built.image.parent().unwrap_or(&built.image).display()
                )
            } else {
                String::new()
            },
            config_path_for(&output).display()
        );
        Ok(())
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct KernelRequest {
    pub arch: Arch,
    /// A kernel tree or tarball; the locked source package when `None`.
    pub source: Option<PathBuf>,
    /// The source lock naming that package.
    pub source_lock: PathBuf,
    /// Fragments merged after the checked-in ones (and checked like them).
    pub extra_fragments: Vec<PathBuf>,
    /// Parallel make jobs.
    pub jobs: u32,
}

impl KernelRequest {
    /// The default build of `arch`: the locked source, checked-in fragments only.
    pub fn for_arch(arch: Arch) -> KernelRequest {
        KernelRequest {
            arch,
            source: None,
            source_lock: util::project_root().join(source::SOURCE_LOCK_PATH),
            extra_fragments: Vec::new(),
            jobs: DEFAULT_JOBS,
        }
    }
}

/// A built kernel, inside the cache.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    pub image: PathBuf,
    pub config: PathBuf,
    /// The kernel release, e.g. `6.1.192`.
    pub release: String,
    /// Whether it came from the cache without building.
    pub cached: bool,
}

/// The config file written beside an output image: `{output}.config`.
pub fn config_path_for(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".config");
    PathBuf::from(name)
}

/// Builds (or finds in the cache) the kernel `request` describes.
pub fn build(sh: &Shell, request: &KernelRequest) -> Result<BuiltKernel> {
    let started = Instant::now();
    let arch = request.arch;
    let recipe = recipe(arch);
    check_tools(&recipe)?;
    let inputs = load_inputs(arch, &request.extra_fragments)?;
    let source = source::resolve(sh, request.source.as_deref(), &request.source_lock)?;
    eprintln!("kernel {arch}: source {}", source.description);
    let timestamp = format_utc_timestamp(util::source_date_epoch()?.unwrap_or(DEFAULT_BUILD_EPOCH));
    let key_text = cache_key_text(&CacheKeyInputs {
        arch,
        make_target: recipe.make_target,
        fragment_texts: &inputs.fragment_texts,
        source_identity: &source.identity,
        compiler_version: &compiler_version(sh, recipe.compiler)?,
        timestamp: &timestamp,
    });
    let key = util::sha256_bytes(key_text.as_bytes());

    let kernel_cache = util::cache_dir().join("kernel");
    let entry = kernel_cache.join(format!("{arch}-{}", &key[..16]));
    if let Some(cached) = read_entry(&entry)? {
        return check_budget(arch, &cached).map(|()| cached);
    }
    let _lock = lock_cache(arch, &kernel_cache)?;
    // Another process may have built the same entry while this one waited.
    if let Some(cached) = read_entry(&entry)? {
        return check_budget(arch, &cached).map(|()| cached);
    }

    let work = kernel_cache.join("work").join(format!(
        "{arch}-{}",
        &util::sha256_bytes(source.identity.as_bytes())[..16]
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tree = source.tree(sh)?;
    let log = work.join(BUILD_LOG);
    std::fs::write(&log, format!("# cache key inputs\n{key_text}\n"))
        .with_context(|| format!("writing {}", log.display()))?;
    eprintln!(
        "kernel {arch}: building from {} in {} (log: {})",
        tree.display(),
        work.display(),
        log.display()
    );
    let make = Make {
        sh,
        tree: &tree,
        work: &work,
        recipe: &recipe,
        jobs: request.jobs.max(1),
        timestamp: &timestamp,
    };
    let steps = Steps {
        label: format!("kernel {arch}"),
        log: &log,
        started,
    };
    configure(&make, &steps, &inputs)?;
    check_final_config(arch, &work.join(".config"), &inputs)?;
    steps.run(
        &format!("compiling {}", recipe.make_target),
        make.command(recipe.make_target),
    )?;
    let release_path = work.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?
        .trim()
        .to_owned();
    store_entry(&kernel_cache, &entry, &work, &recipe, &release)?;
    eprintln!(
        "kernel {arch}: built Linux {release} in {} (cache entry {})",
        progress::format_elapsed(started.elapsed()),
        entry.display()
    );
    let mut built = read_entry(&entry)?.context("the cache entry just written is incomplete")?;
    built.cached = false;
    check_budget(arch, &built)?;
    Ok(built)
}

/// What the configuration is made of: the fragment files (absolute paths, since
/// merge_config.sh runs in the work tree), their options, and the requirement options.
struct ConfigInputs {
    fragments: Vec<PathBuf>,
    fragment_options: Vec<fragment::FragmentOption>,
    /// The fragment texts and, last, the rendered requirements fragment: the cache key's input.
    fragment_texts: Vec<String>,
    required: Vec<fragment::FragmentOption>,
    required_fragment: String,
}

fn load_inputs(arch: Arch, extra_fragments: &[PathBuf]) -> Result<ConfigInputs> {
    let fragments = fragment_files(arch, extra_fragments)
        .into_iter()
        .map(|path| std::path::absolute(&path).with_context(|| format!("resolving {}", path.display())))
        .collect::<Result<Vec<_>>>()?;
    let mut fragment_options = Vec::new();
    let mut fragment_texts = Vec::new();
    for path in &fragments {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading kernel fragment {}", path.display()))?;
        fragment_options.extend(fragment::parse_fragment(&path.display().to_string(), &text)?);
        fragment_texts.push(text);
    }
    let required = requirements::load(arch)?;
    let required_fragment = requirements::render_fragment(&required);
    fragment_texts.push(required_fragment.clone());
    Ok(ConfigInputs {
        fragments,
        fragment_options,
        fragment_texts,
        required,
        required_fragment,
    })
}

/// The first line of `{compiler} --version`.
fn compiler_version(sh: &Shell, compiler: &str) -> Result<String> {
    let text = cmd!(sh, "{compiler} --version")
        .quiet()
        .read()
        .with_context(|| format!("asking {compiler} for its version"))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// The logged steps of one build: each runs with its output in the build log.
struct Steps<'a> {
    label: String,
    log: &'a Path,
    started: Instant,
}

impl Steps<'_> {
    fn run(&self, step: &str, command: std::process::Command) -> Result<()> {
        progress::run_logged(&self.label, step, command, self.log, self.started)
    }
}

/// `tinyconfig`, then merge the fragments and the requirements, then `olddefconfig`.
fn configure(make: &Make, steps: &Steps, inputs: &ConfigInputs) -> Result<()> {
    let (sh, work) = (make.sh, make.work);
    steps.run("configuring tinyconfig", make.command(BASE_CONFIG_TARGET))?;
    let merge_script = make.tree.join("scripts/kconfig/merge_config.sh");
    let config = work.join(".config");
    let required_path = work.join(REQUIREMENTS_FRAGMENT);
    std::fs::write(&required_path, &inputs.required_fragment)
        .with_context(|| format!("writing {}", required_path.display()))?;
    let fragments = &inputs.fragments;
    let mut merge: std::process::Command = cmd!(
        sh,
        "{merge_script} -m -O {work} {config} {fragments...} {required_path}"
    )
    .env("ARCH", make.recipe.make_arch)
    .into();
    // merge_config.sh keeps its temporary files in the current directory.
    merge.current_dir(work);
    steps.run("merging fragments", merge)?;
    steps.run("configuring olddefconfig", make.command("olddefconfig"))
}

/// Every fragment option and every requirement must have survived `olddefconfig`.
fn check_final_config(arch: Arch, config: &Path, inputs: &ConfigInputs) -> Result<()> {
    let final_config =
        std::fs::read_to_string(config).with_context(|| format!("reading the final config {}", config.display()))?;
    let final_options = fragment::parse_config(&final_config);
    let unmet = fragment::unmet_options(&inputs.fragment_options, &final_options);
    if !unmet.is_empty() {
        bail!(
            "kernel {arch}: {} fragment option(s) did not survive `make olddefconfig` (final config: {}):\n  - {}\n\
             Add the dependency that makes each option visible to the fragment, or remove the option.",
            unmet.len(),
            config.display(),
            unmet.join("\n  - ")
        );
    }
    let unmet = fragment::unmet_options(&inputs.required, &final_options);
    if !unmet.is_empty() {
        bail!(
            "kernel {arch}: {} required option(s) are not `=y` after `make olddefconfig` (final config: {}):\n  - {}\n\
             Add the dependency that makes each option visible to manifests/kernel/common.config or {arch}.config.",
            unmet.len(),
            config.display(),
            unmet.join("\n  - ")
        );
    }
    eprintln!(
        "kernel {arch}: all {} fragment options and {} required options are in the final config",
        inputs.fragment_options.len(),
        inputs.required.len()
    );
    Ok(())
}

/// `manifests/kernel/budget.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Budget {
    image_budget_bytes: std::collections::BTreeMap<String, u64>,
}

/// Fails when the image of `arch` is larger than its budget in `manifests/kernel/budget.toml`.
fn check_budget(arch: Arch, built: &BuiltKernel) -> Result<()> {
    let path = util::project_root().join(BUDGET_PATH);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let budget: Budget = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let limit = *budget
        .image_budget_bytes
        .get(arch.as_str())
        .with_context(|| format!("{}: image_budget_bytes has no entry for {arch}", path.display()))?;
    let size = std::fs::metadata(&built.image)
        .with_context(|| format!("reading {}", built.image.display()))?
        .len();
    image_within_budget(arch, size, limit).with_context(|| format!("budget in {}", path.display()))
}

/// The budget rule itself: `size` may not exceed `limit`.
fn image_within_budget(arch: Arch, size: u64, limit: u64) -> Result<()> {
    if size > limit {
        bail!(
            "the {arch} kernel image is {size} bytes, over its budget of {limit} bytes by {} bytes: \
             drop what the configuration does not need, or raise the budget in the same change that explains why",
            size - limit
        );
    }
    Ok(())
}

/// One `make` in the kernel tree, building into the work tree with the pinned KBUILD_BUILD_*
/// so the output never depends on who built it, where or when.
struct Make<'a> {
    sh: &'a Shell,
    tree: &'a Path,
    work: &'a Path,
    recipe: &'a ArchRecipe,
    jobs: u32,
    timestamp: &'a str,
}

impl Make<'_> {
    fn command(&self, target: &str) -> std::process::Command {
        let sh = self.sh;
        let tree = self.tree;
        let output_dir = format!("O={}", self.work.display());
        let make_arch = format!("ARCH={}", self.recipe.make_arch);
        let cross: Vec<String> = self
            .recipe
            .cross_compile
            .map(|prefix| format!("CROSS_COMPILE={prefix}"))
            .into_iter()
            .collect();
        let jobs = format!("-j{}", self.jobs);
        cmd!(sh, "make -C {tree} {output_dir} {make_arch} {cross...} {jobs} {target}")
            .env("KBUILD_BUILD_TIMESTAMP", self.timestamp)
            .env("KBUILD_BUILD_USER", KBUILD_IDENTITY)
            .env("KBUILD_BUILD_HOST", KBUILD_IDENTITY)
            .env("KBUILD_BUILD_VERSION", KBUILD_VERSION)
            .env("LC_ALL", "C")
            .into()
    }
}

/// The fragment files of `arch`, in merge order: common, arch, extras.
pub fn fragment_files(arch: Arch, extra: &[PathBuf]) -> Vec<PathBuf> {
    let dir = util::project_root().join(FRAGMENT_DIR);
    let mut files = vec![dir.join(COMMON_FRAGMENT), dir.join(format!("{arch}.config"))];
    files.extend(extra.iter().cloned());
    files
}

/// The tools every kernel build runs, beside the arch's C compiler.
const KERNEL_TOOLS: [&str; 8] = ["make", "tar", "xz", "flex", "bison", "bc", "perl", "gcc"];

/// Every tool a build runs, checked once up front with the package that provides it.
fn check_tools(recipe: &ArchRecipe) -> Result<()> {
    crate::tools::require_all(&KERNEL_TOOLS)
        .and_then(|()| crate::tools::require(recipe.compiler).map(drop))
        .context("building the kernel needs tools that are not on PATH")
}

/// Copies a file, naming both ends on failure.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// Writes a cached file to a user-chosen output path atomically.
fn copy_output(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    util::write_atomic(to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_over_its_budget_is_refused_with_the_overshoot() {
        image_within_budget(Arch::Arm64, 100, 100).unwrap();
        assert_eq!(
            image_within_budget(Arch::Arm64, 101, 100).unwrap_err().to_string(),
            "the arm64 kernel image is 101 bytes, over its budget of 100 bytes by 1 bytes: drop what the \
             configuration does not need, or raise the budget in the same change that explains why"
        );
    }

    #[test]
    fn the_checked_in_budget_covers_both_arches() {
        let text = std::fs::read_to_string(util::project_root().join(BUDGET_PATH)).unwrap();
        let budget: Budget = toml::from_str(&text).unwrap();
        for arch in [Arch::Arm64, Arch::X86_64] {
            assert!(budget.image_budget_bytes[arch.as_str()] > 1_000_000, "{arch}");
        }
    }

    #[test]
    fn config_sits_beside_the_image() {
        assert_eq!(
            config_path_for(Path::new("build/arm64/kernel")),
            PathBuf::from("build/arm64/kernel.config")
        );
    }

    #[test]
    fn checked_in_fragments_parse_and_forbid_modules() {
        for arch in [Arch::Arm64, Arch::X86_64] {
            let mut options = Vec::new();
            for path in fragment_files(arch, &[]) {
                let text = std::fs::read_to_string(&path).unwrap();
                options.extend(fragment::parse_fragment(&path.display().to_string(), &text).unwrap());
            }
            let modules = options.iter().find(|o| o.name == "CONFIG_MODULES").unwrap();
            assert_eq!(modules.value, None, "modules must stay off");
            for wanted in [
                "CONFIG_EROFS_FS",
                "CONFIG_VIRTIO_FS",
                "CONFIG_BTRFS_FS",
                "CONFIG_IKCONFIG_PROC",
            ] {
                assert!(options.iter().any(|o| o.name == wanted), "{arch}: {wanted} missing");
            }
        }
    }
}

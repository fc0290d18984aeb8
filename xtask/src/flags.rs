//! The command line of `cargo xtask`, as clap derive types; every `///` here is `--help` text.
//!
//! Each command's behaviour lives in its own module, as `impl flags::X { fn run(self, sh) }`.

use std::path::PathBuf;

use boot_assets::Arch;
use clap::{Parser, Subcommand, ValueEnum};

/// The boot-assets release pipeline: build, assemble, merge and check the boot artifacts of
/// the microVM runtime.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Release(Release),
    MergeManifest(MergeManifest),
    Schema(Schema),
    Fetch(Fetch),
    #[command(hide = true)]
    CdnTree(CdnTree),
    Bench(Bench),
}

/// The guest architecture, spelled as in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchFlag {
    /// 64-bit Arm.
    #[value(name = "arm64")]
    Arm64,
    /// 64-bit x86.
    #[value(name = "x86_64")]
    X86_64,
}

impl From<ArchFlag> for Arch {
    fn from(flag: ArchFlag) -> Arch {
        match flag {
            ArchFlag::Arm64 => Arch::Arm64,
            ArchFlag::X86_64 => Arch::X86_64,
        }
    }
}

/// Assemble one arch's release: tarball, sha256 sidecar and per-arch manifest under
/// `{output-dir}/{arch}/`.
///
/// The output is reproducible: with the same inputs and SOURCE_DATE_EPOCH the bytes are the
/// same, whatever the directory, clock or umask.
#[derive(Debug, clap::Args)]
pub struct Release {
    /// Asset version, a semantic version such as 0.2.0 (no leading `v`).
    #[arg(long)]
    pub version: String,
    /// Guest architecture.
    #[arg(long)]
    pub arch: ArchFlag,
    /// Kernel image to ship (a bzImage on x86_64, an Image on arm64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// EROFS root filesystem image to ship.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Linux version of the kernel; read from the image itself when not given.
    #[arg(long)]
    pub kernel_version: Option<String>,
    /// Repository the kernel was built from (recorded as `source_repo`).
    #[arg(long)]
    pub source_repo: Option<String>,
    /// Git ref of the kernel source (recorded as `source_ref`).
    #[arg(long)]
    pub source_ref: Option<String>,
    /// Git commit of the kernel source (recorded as `source_sha`).
    #[arg(long)]
    pub source_sha: Option<String>,
    /// JSON array of runtime binaries (as written by `sync-binaries` / `fex`); this arch's
    /// entries go into the manifest.
    #[arg(long)]
    pub binaries_json: Option<PathBuf>,
    /// Kernel command line; defaults to the contract's line for the arch.
    #[arg(long)]
    pub kernel_cmdline: Option<String>,
    /// Where `{arch}/…` is written.
    #[arg(long, default_value = "dist")]
    pub output_dir: PathBuf,
}

/// Merge per-arch manifests into one multi-arch manifest.
///
/// Refuses inputs that disagree on asset_version, schema_version or source_*, the same arch
/// twice, or a binary that differs between inputs; validates the result and writes it atomically.
#[derive(Debug, clap::Args)]
pub struct MergeManifest {
    /// Per-arch manifest files, e.g. dist/arm64/manifest.json dist/x86_64/manifest.json.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where the merged manifest is written.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// Write the JSON Schema of manifest.json to manifests/manifest.schema.json.
#[derive(Debug, clap::Args)]
pub struct Schema {
    /// Do not write; fail if the checked-in schema differs from the types.
    #[arg(long)]
    pub check: bool,
}

/// Fetch, verify and install one asset version from a CDN with the AssetManager library, as the
/// runtime does: for humans, CI and post-publish verification.
///
/// Prints the installed paths on stdout; progress goes to stderr.
#[derive(Debug, clap::Args)]
pub struct Fetch {
    /// CDN base URL (https, or http to a loopback host), e.g. https://cdn.example.com/boot.
    #[arg(long)]
    pub cdn: String,
    /// Asset version to install, or `latest` to follow latest.json.
    #[arg(long, default_value = "latest")]
    pub version: String,
    /// Guest architecture; defaults to the host's.
    #[arg(long)]
    pub arch: Option<ArchFlag>,
    /// Cache directory that receives `{version}/{manifest.json, kernel, rootfs.erofs}`;
    /// defaults to ~/.arcbox/boot.
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// Runtime bin directory to install the arch's binaries into (mode 0755); binaries are
    /// skipped when absent.
    #[arg(long)]
    pub binaries: Option<PathBuf>,
    /// Trusted minisign public key file; the manifest's .minisig must verify against it.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Objects downloaded at once.
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Retries of a failing transfer.
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_RETRIES)]
    pub retries: u32,
    /// Seconds a read may wait for data before the transfer counts as stalled.
    #[arg(long, default_value_t = 30)]
    pub read_timeout_secs: u64,
    /// Allow plain http to hosts other than loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// No progress bars (the installed paths are still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Lay out release outputs (`dist/`) as a CDN tree: asset/v{version}/…, bin/…, latest.json.
///
/// Reads `{dist}/manifest.json`, the per-arch tarballs and the staged binaries under
/// `{dist}/bin/{name}/{safe_version}/{arch}/{name}`; every object is checked against the manifest.
#[derive(Debug, clap::Args)]
pub struct CdnTree {
    /// Release outputs: `{arch}/*.tar.gz`, `manifest.json`, `bin/…`.
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// Directory that receives the CDN tree.
    #[arg(long)]
    pub output: PathBuf,
}

/// Measure the pipeline and the consumer library against baselines.
#[derive(Debug, clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    Fetch(BenchFetch),
}

/// Time an AssetManager install of a large asset from nginx on loopback against `curl -o`,
/// `curl -o && sha256sum`, `openssl dgst -sha256` and `curl -o && sync` (the durable
/// baseline), alternating; print medians, ratios and the manager's peak RSS.
#[derive(Debug, clap::Args)]
pub struct BenchFetch {
    /// Size of the served asset in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Timed runs of each contender.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Scratch directory (needs about three times the asset size); a temporary one by default.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

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
    Dist(Dist),
    Release(Release),
    MergeManifest(MergeManifest),
    Schema(Schema),
    Setup(Setup),
    Test(Test),
    Fex(Fex),
    Fetch(Fetch),
    FetchPackages(FetchPackages),
    #[command(hide = true)]
    CdnTree(CdnTree),
    Bench(Bench),
    Publish(Publish),
    Keygen(Keygen),
    VerifyPublished(VerifyPublished),
    Rootfs(Rootfs),
    SyncBinaries(SyncBinaries),
    Stack(Stack),
    Kernel(Kernel),
    Boot(Boot),
    ProbeKvm(ProbeKvm),
}

/// A top-level job, for which `setup` installs host packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Job {
    /// Building a release (`dist`): kernel and rootfs builders.
    Release,
    /// The full test suite (`test`): the release tools plus QEMU, nginx, minisign, ….
    Test,
}

/// Build a whole release: runtime binaries, kernel, rootfs and tarball for every arch, then the
/// merged manifest.
///
/// The main job of a release engineer. Installs missing host packages first (as root). The
/// runtime binaries come from `sync-binaries` (`--binaries-config`, default
/// manifests/binaries.toml: the container stack built from pinned Debian sources, cached) staged
/// into `{output_dir}/bin`, plus FEX built from `--fex-source` (arm64); or from an existing
/// fragment (`--binaries-json`); or none (`--no-binaries`).
#[derive(Debug, clap::Args)]
pub struct Dist {
    /// Asset version, a semantic version such as 0.2.0 (no leading `v`).
    #[arg(long, value_parser = AssetVersion::parse)]
    pub version: AssetVersion,
    /// Arches to build (repeat or comma-separate); all of them when not given.
    #[arg(long, value_delimiter = ',')]
    pub arch: Vec<ArchFlag>,
    #[command(flatten)]
    pub source: KernelSource,
    /// A prebuilt kernel image for one arch, `ARCH=PATH` (repeatable); arches without one are
    /// built with `cargo xtask kernel` (cached).
    #[arg(long = "kernel", value_name = "ARCH=PATH")]
    pub kernels: Vec<String>,
    /// A prebuilt EROFS rootfs for one arch, `ARCH=PATH` (repeatable); arches without one are
    /// built with `cargo xtask rootfs`.
    #[arg(long = "rootfs", value_name = "ARCH=PATH")]
    pub rootfs: Vec<String>,
    /// The runtime binaries config `sync-binaries` downloads, checks and stages into
    /// `{output_dir}/bin` (fragment `{output_dir}/bin/binaries.json`) [default: manifests/binaries.toml].
    #[arg(long, conflicts_with_all = ["binaries_json", "no_binaries"])]
    pub binaries_config: Option<PathBuf>,
    /// A FEX source tree to build with `cargo xtask fex --source` into `{output_dir}/bin` and the
    /// same fragment (needs arm64 among the arches; clang and lld).
    #[arg(long, conflicts_with_all = ["binaries_json", "no_binaries"])]
    pub fex_source: Option<PathBuf>,
    /// Directory of `*.patch` files applied to --fex-source [default: manifests/fex/patches].
    #[arg(long, requires = "fex_source")]
    pub fex_patches_dir: Option<PathBuf>,
    /// An existing binaries fragment (from earlier `sync-binaries` / `fex` runs, binaries already
    /// staged) to list instead of running sync-binaries.
    #[arg(long, conflicts_with = "no_binaries")]
    pub binaries_json: Option<PathBuf>,
    /// Ship no runtime binaries (the manifests carry no `binaries`).
    #[arg(long)]
    pub no_binaries: bool,
    /// DEVELOPMENT ONLY, UNVERIFIED: ship every rootfs without its dm-verity hash tree, booted
    /// from the plain command line (see `release --unverified-rootfs`); never publish it.
    #[arg(long)]
    pub unverified_rootfs: bool,
    /// Where `{arch}/…`, `bin/…` and the merged `manifest.json` are written.
    #[arg(long, default_value = "dist")]
    pub output_dir: PathBuf,
}

/// Install the host packages a job needs (Debian/Ubuntu; apt-get as root, pip).
///
/// The lists live in manifests/host-packages.toml. Only missing packages are installed.
#[derive(Debug, clap::Args)]
pub struct Setup {
    /// Which job to prepare for.
    #[arg(long, value_enum, default_value = "test")]
    pub job: Job,
}

/// Run the full test suite as CI does: setup, `cargo fmt --check`, clippy, `cargo test --workspace`.
#[derive(Debug, clap::Args)]
pub struct Test {
    /// Accelerator of the boot tests of the host's arch (`BOOT_ASSETS_TEST_ACCEL` for the test
    /// binaries): `auto` uses KVM when `cargo xtask probe-kvm` would succeed (/dev/kvm opens, a
    /// probe firmware and then the pipeline's kernel run to their markers under `-accel kvm`),
    /// else TCG (printing why).
    /// A BOOT_ASSETS_TEST_ACCEL already in the environment wins over `auto`.
    #[arg(long, value_enum, default_value_t = TestAccel::Auto)]
    pub accel: TestAccel,
    /// Passed to the test binaries, e.g. a test name filter or `--nocapture`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub filter: Vec<String>,
}

/// Check whether KVM really runs guests here, as `cargo xtask test` does before it picks the
/// boot tests' accelerator: /dev/kvm opens, a 64 KiB probe firmware prints its marker under
/// `-accel kvm -cpu host` within 10 s, then the pipeline's kernel, booted with no root, reaches
/// its "VFS: Unable to mount root fs" panic within 30 s. Exits non-zero with the reason when not.
#[derive(Debug, clap::Args)]
pub struct ProbeKvm {
    /// Guest arch (only the host's can run under KVM; another makes sense with --tcg).
    #[arg(long)]
    pub arch: Option<ArchFlag>,
    /// Kernel image to probe with; built through the kernel cache (as `cargo xtask kernel`) when not given.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Run the same two probe guests under TCG instead: checks the probe itself, not KVM.
    #[arg(long)]
    pub tcg: bool,
    /// QEMU binary (default: qemu-system-{x86_64,aarch64} from PATH).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
}

/// How `cargo xtask test` chooses the boot tests' accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestAccel {
    /// KVM when it really works here (probed), TCG otherwise.
    Auto,
    /// Always TCG.
    Tcg,
    /// KVM for guests of the host's arch; fails up front when KVM does not work.
    Kvm,
}

/// Where the kernel came from, recorded in the manifest's `source_*` fields when given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KernelSource {
    /// Repository the kernel was built from (recorded as `source_repo`).
    #[arg(long)]
    pub source_repo: Option<String>,
    /// Git ref of the kernel source (recorded as `source_ref`).
    #[arg(long)]
    pub source_ref: Option<String>,
    /// Git commit of the kernel source (recorded as `source_sha`).
    #[arg(long)]
    pub source_sha: Option<String>,
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

/// An asset version, checked once when the command line is parsed: a semantic version such as
/// 0.2.0, without a leading `v`. Keeps the text as given (it names paths and is compared with
/// a manifest's `asset_version`) beside its parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetVersion {
    text: String,
    parsed: semver::Version,
}

impl AssetVersion {
    /// Parses `--version`; the error says what a version looks like.
    pub fn parse(text: &str) -> Result<AssetVersion, String> {
        match semver::Version::parse(text) {
            Ok(parsed) => Ok(AssetVersion {
                text: text.to_owned(),
                parsed,
            }),
            Err(e) => Err(format!(
                "--version {text:?} is not a semantic version like 0.2.0 (no leading `v`): {e}"
            )),
        }
    }

    /// The version as given, e.g. `0.2.0`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed version, for precedence.
    pub fn semver(&self) -> &semver::Version {
        &self.parsed
    }

    /// The manifest's `schema_version`: the major component.
    pub fn major(&self) -> u64 {
        self.parsed.major
    }

    /// Whether this is a pre-release (`1.0.0-rc.1`), which `latest.json` never names.
    pub fn is_prerelease(&self) -> bool {
        !self.parsed.pre.is_empty()
    }
}

impl std::fmt::Display for AssetVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
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
    #[arg(long, value_parser = AssetVersion::parse)]
    pub version: AssetVersion,
    /// Guest architecture.
    #[arg(long)]
    pub arch: ArchFlag,
    /// Kernel image to ship (a bzImage on x86_64, an Image on arm64); built from source with
    /// `cargo xtask kernel`'s defaults (cached) when not given.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// EROFS root filesystem image to ship; without it, `cargo xtask rootfs` builds
    /// build/{arch}/rootfs.erofs first.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Linux version of the kernel; read from the image itself when not given.
    #[arg(long)]
    pub kernel_version: Option<String>,
    #[command(flatten)]
    pub source: KernelSource,
    /// JSON array of runtime binaries (as written by `sync-binaries` / `fex`); this arch's
    /// entries go into the manifest.
    #[arg(long)]
    pub binaries_json: Option<PathBuf>,
    /// Kernel command line; defaults to the contract's line for the arch. Its `root=DEVICE`
    /// (the rootfs disk) becomes the verified root: `dm-mod.create=` (the dm-verity table over
    /// DEVICE) `dm-mod.waitfor=DEVICE root=/dev/dm-0`.
    #[arg(long)]
    pub kernel_cmdline: Option<String>,
    /// DEVELOPMENT ONLY, UNVERIFIED: ship the rootfs as given, without its dm-verity hash tree,
    /// with the plain command line (root=/dev/vda) and no recorded root hash. Nothing then checks
    /// the blocks the guest reads; never publish such a release.
    #[arg(long)]
    pub unverified_rootfs: bool,
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

/// Build FEX's x86-64 interpreter for arm64 as a static-pie executable and stage it.
///
/// Builds with clang and lld (FEX refuses GCC), cross-compiling on non-arm64 hosts with Debian's
/// arm64 cross sysroot. Writes `{output}/FEX/{safe_version}/arm64/FEX` and replaces the FEX entry
/// of the binaries fragment. A binary with PT_INTERP or DT_NEEDED, or not for aarch64, is refused.
#[derive(Debug, clap::Args)]
pub struct Fex {
    /// A local FEX source tree (or any CMake tree with the same target and output path).
    #[arg(long, conflicts_with = "repo")]
    pub source: Option<PathBuf>,
    /// Git URL to fetch FEX from instead of --source: exactly the commit pinned in
    /// manifests/fex/build.toml ([source]), or --commit, with the submodules that commit records.
    #[arg(long)]
    pub repo: Option<String>,
    /// The FEX ref being built: the prefix of the default version; with --repo it must be the
    /// pinned ref of manifests/fex/build.toml unless --commit is given [default: the pinned ref].
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// The commit to fetch with --repo (40 hex digits) instead of the pinned one.
    #[arg(long, requires = "repo")]
    pub commit: Option<String>,
    /// Directory of `*.patch` files, applied in name order before building (repeatable: one
    /// directory after the other) [default: manifests/fex/patches].
    #[arg(long)]
    pub patches_dir: Vec<PathBuf>,
    /// Version key of this build; default `{ref}+{UTC time}`, unique per build because FEX
    /// builds are not reproducible.
    #[arg(long)]
    pub version: Option<String>,
    /// Extra CMake cache entry `KEY=VALUE` (repeatable); overrides manifests/fex/build.toml and
    /// the toolchain file choice (e.g. `CMAKE_TOOLCHAIN_FILE=…`).
    #[arg(long)]
    pub cmake_define: Vec<String>,
    /// Work directory for the clone and the CMake build; default build/fex.
    #[arg(long)]
    pub build_dir: Option<PathBuf>,
    /// Staging directory of runtime binaries.
    #[arg(long, default_value = "dist/bin")]
    pub output: PathBuf,
    /// The binaries fragment to update (created when missing).
    #[arg(long)]
    pub binaries_json: PathBuf,
}

/// Fetch, verify and install one asset version from a CDN with the AssetManager library, as the
/// runtime does: for humans, CI and post-publish verification.
///
/// Prints the installed paths on stdout; progress goes to stderr.
#[derive(Debug, clap::Args)]
pub struct Fetch {
    #[command(flatten)]
    pub published: PublishedVersion,
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
    /// Slowest accepted transfer rate in bytes per second over the rate window (0: no check);
    /// a slower transfer is abandoned and retried.
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_MIN_TRANSFER_RATE)]
    pub min_rate: u64,
    /// Seconds over which the transfer rate is measured.
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_RATE_WINDOW.as_secs())]
    pub rate_window_secs: u64,
    /// A mirror with the CDN's layout, tried (in the order given) for an object that fails on
    /// the CDN; repeatable. latest.json is read from --cdn only.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Overall deadline in seconds for installing the boot assets, and again for the binaries:
    /// when it passes, fetch stops with an error and a re-run resumes the partial downloads.
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<u64>,
    /// Connections one large object may use on a slow link when the server answers ranges
    /// (1: one stream).
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Longest Retry-After (seconds) a 429/503 may ask for; a longer one ends the attempts on
    /// that source.
    #[arg(long, default_value_t = boot_assets::asset_manager::DEFAULT_MAX_RETRY_AFTER.as_secs())]
    pub max_retry_after_secs: u64,
    /// Pinned sha256 of the manifest: its bytes must have it before they are parsed or used.
    #[arg(long)]
    pub manifest_sha256: Option<String>,
    /// Allow plain http to hosts other than loopback.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// No progress bars (the installed paths are still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// A published asset version to read back, as the runtime does: `fetch` installs it,
/// `verify-published` checks every arch of it.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishedVersion {
    /// CDN base URL (https, or http to a loopback host), e.g. https://cdn.example.com/boot.
    #[arg(long)]
    pub cdn: String,
    /// Asset version to install, or `latest` to follow latest.json.
    #[arg(long, default_value = "latest")]
    pub version: String,
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
    Boot(BenchBoot),
}

/// Time `cargo xtask fetch` (dev profile, as people run it) and the release-built library
/// installing a large asset from nginx on loopback against `curl -o`,
/// `curl -o && sha256sum`, `openssl dgst -sha256`, `curl -o && sync` (the durable baseline) and
/// a plain write + fsync of the same size (the disk's floor), alternating; print medians, ratios,
/// the floor and the manager's peak RSS.
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
    /// Per-connection rate limit in MiB/s of the rate-capped case (nginx `limit_rate`); 0
    /// skips that case.
    #[arg(long, default_value_t = 16)]
    pub capped_rate_mib: u64,
    /// Connection counts the capped case also times with the release-built library (the
    /// measurements behind the default of `fetch --connections`).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub connections_sweep: Vec<usize>,
    /// Only the rate-capped case.
    #[arg(long)]
    pub capped_only: bool,
}

/// Publish a release to an S3-compatible bucket and its CDN: signed, immutable, verified before
/// latest.json moves.
///
/// Stages the CDN tree from `dist/`, signs the manifest, uploads every object (skips what is
/// there with the same sha256, refuses what differs, deletes nothing), verifies it from the CDN
/// with the AssetManager, then moves `latest.json` forward and, optionally, fills the GitHub
/// release. Safe to re-run after any interruption.
///
/// S3 access: with BOOT_ASSETS_S3_ENDPOINT set, the remote NAME of `--remote NAME:BUCKET` is
/// defined for this run as an S3 remote at that endpoint, with the keys from AWS_ACCESS_KEY_ID
/// and AWS_SECRET_ACCESS_KEY (BOOT_ASSETS_S3_PROVIDER and BOOT_ASSETS_S3_REGION optional);
/// without it, NAME must be a remote of your own rclone config. The signing key comes from
/// `--signing-key` or from BOOT_ASSETS_SIGNING_KEY (the key file's text); it is never printed.
#[derive(Debug, clap::Args)]
pub struct Publish {
    /// Release outputs: `{arch}/*.tar.gz` and sidecars, the merged `manifest.json`, `bin/…`.
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// The asset version to publish; must equal the manifest's asset_version.
    #[arg(long, value_parser = AssetVersion::parse)]
    pub version: AssetVersion,
    /// rclone destination `NAME:BUCKET` (optionally `NAME:BUCKET/prefix`) that the CDN serves.
    #[arg(long)]
    pub remote: String,
    /// Public base URL of the CDN in front of the bucket, used to verify what was uploaded.
    #[arg(long)]
    pub cdn: String,
    /// Also create the GitHub release `v{version}` (with `gh`) and upload the tarballs,
    /// sidecars, merged manifest and signature that it does not have yet.
    #[arg(long)]
    pub github_release: bool,
    /// GitHub repository `OWNER/NAME` for `gh --repo`; gh's default when not given.
    #[arg(long, requires = "github_release")]
    pub github_repo: Option<String>,
    /// Commit to create the tag at when it does not exist yet (gh's `--target`).
    #[arg(long, requires = "github_release")]
    pub github_target: Option<String>,
    /// Minisign secret key file (unencrypted, as written by `keygen`); else BOOT_ASSETS_SIGNING_KEY.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Public key the signature must verify with.
    #[arg(long, default_value = "manifests/minisign.pub")]
    pub public_key: PathBuf,
    /// After the download check, boot every arch with `cargo xtask boot` before moving latest.json.
    #[arg(long)]
    pub boot: bool,
    /// Stage, sign and compare with the bucket, print what would happen, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Time limit in seconds of every rclone call (one upload, one lookup); a call still
    /// running then is killed and publish stops, saying what was and was not uploaded.
    #[arg(long, default_value_t = crate::publish::rclone::DEFAULT_CALL_TIMEOUT_SECS)]
    pub rclone_timeout_secs: u64,
}

impl Publish {
    /// The time limit of one rclone call.
    pub fn rclone_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.rclone_timeout_secs)
    }
}

/// Generate the minisign key pair that signs published manifests.
///
/// Writes `PREFIX.key` (secret, unencrypted, mode 0600) and `PREFIX.pub`; never overwrites.
#[derive(Debug, clap::Args)]
pub struct Keygen {
    /// Path prefix of the two files, e.g. `~/keys/boot-assets`.
    #[arg(long)]
    pub output: PathBuf,
}

/// Verify a published release from its CDN exactly as a user would.
///
/// The AssetManager installs every arch (or one) and every binary into a temporary directory,
/// checking every digest and the manifest signature; with `--boot`, each arch is booted with
/// `cargo xtask boot`.
#[derive(Debug, clap::Args)]
pub struct VerifyPublished {
    #[command(flatten)]
    pub published: PublishedVersion,
    /// Only this arch; every arch of the manifest when not given.
    #[arg(long)]
    pub arch: Option<ArchFlag>,
    /// Trusted minisign public key file.
    #[arg(long, default_value = "manifests/minisign.pub")]
    pub public_key: PathBuf,
    /// Also boot each verified arch with `cargo xtask boot`.
    #[arg(long)]
    pub boot: bool,
}

/// Build the EROFS root filesystem for one arch from the pinned Debian packages of
/// manifests/rootfs.lock, with its SPDX SBOM beside it (`{output}.spdx.json`).
///
/// The same recipe, lock, init/ and rootfs-overlay/ under the same SOURCE_DATE_EPOCH give the
/// same bytes, on any Debian/Ubuntu host, for either arch.
#[derive(Debug, clap::Args)]
pub struct Rootfs {
    /// Guest architecture.
    #[arg(long)]
    pub arch: ArchFlag,
    /// Where the image is written [default: build/{arch}/rootfs.erofs].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Re-resolve every package of the recipe with apt and rewrite this arch's lock entries
    /// before building; review the lock diff.
    #[arg(long)]
    pub update_lock: bool,
    /// The recipe [default: manifests/rootfs.toml]; its relative paths are taken from the
    /// repository root.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// The lock file [default: manifests/rootfs.lock].
    #[arg(long)]
    pub lock: Option<PathBuf>,
}

/// Download, check, extract and stage the runtime binaries of manifests/binaries.toml, and write
/// the binaries fragment that `release --binaries-json` embeds.
///
/// A `stack` source is built by `cargo xtask stack` (cached); every upstream file of the other
/// formats must have a pinned sha256, and `--pin` fills in the missing ones.
#[derive(Debug, clap::Args)]
pub struct SyncBinaries {
    /// The binaries config [default: manifests/binaries.toml].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Arches to sync (repeat or comma-separate); all of them when not given.
    #[arg(long, value_delimiter = ',')]
    pub arch: Vec<ArchFlag>,
    /// Staging directory: `{output}/{name}/{safe_version}/{arch}/{name}`.
    #[arg(long, default_value = "dist/bin")]
    pub output: PathBuf,
    /// The fragment to write [default: {output}/binaries.json].
    #[arg(long)]
    pub binaries_json: Option<PathBuf>,
    /// Download the upstream files that have no sha256 yet and write their digests into the
    /// config file (review the diff before committing it).
    #[arg(long)]
    pub pin: bool,
}

/// Build the container stack (dockerd, containerd, containerd-shim-runc-v2, runc, docker-init) from
/// the pinned Debian source packages of manifests/stack.toml with Debian's Go, static, cached.
///
/// Each build of the recipe unpacks its source (Debian's patches, then ours), Debian's Go and the
/// golang-* closure of its Build-Depends, and the target arch's build-only packages, all pinned
/// in manifests/stack/{source}.lock, and runs its script of manifests/builds/stack/. A cold build
/// of both arches takes about 15 minutes here; the outputs are cached under the cache directory's
/// stack/ by a hash of every input. Prints `ARCH NAME SIZE PATH` per output.
/// `sync-binaries` runs the same builds for the `stack` sources of manifests/binaries.toml.
#[derive(Debug, clap::Args)]
pub struct Stack {
    /// Arches to build (repeat or comma-separate); both when not given.
    #[arg(long, value_delimiter = ',')]
    pub arch: Vec<ArchFlag>,
    /// Re-resolve every build's lock (the pinned source version, the golang-* closure of its
    /// Build-Depends, the target packages) with apt before building; review the lock diff.
    #[arg(long)]
    pub update_lock: bool,
}

/// Fetch the package files a lock pins into a directory, each verified against the lock.
///
/// Reads a lock in the format of manifests/rootfs.lock (e.g. tests/fixtures/containers/packages.lock);
/// fetches each file with the host's apt and the rootfs build's private per-arch state (nothing
/// is installed on the host), checks its sha256, keeps it in the download cache and writes
/// `{output}/{filename}`.
#[derive(Debug, clap::Args)]
pub struct FetchPackages {
    /// The lock file.
    #[arg(long)]
    pub lock: PathBuf,
    /// Where the package files are written, under their archive file names.
    #[arg(long)]
    pub output: PathBuf,
}

/// Build the guest kernel from source (cached), or take a prebuilt one verified by its digest.
///
/// The source is the Debian package pinned in manifests/kernel/source.lock (fetched with private
/// apt state and checked against its sha256; /usr/src is never read). Configures `tinyconfig` +
/// manifests/kernel/common.config + manifests/kernel/{arch}.config + the container-host
/// requirements (manifests/kernel/requirements.toml, iptables-extensions.toml), fails naming every
/// fragment option or requirement the final config dropped or changed, then compiles with
/// pinned KBUILD_BUILD_* (reproducible) and checks the image against its size budget.
/// Writes the image and `{output}.config`.
#[derive(Debug, clap::Args)]
pub struct Kernel {
    /// Guest architecture (arm64 is cross-compiled with aarch64-linux-gnu-gcc).
    #[arg(long)]
    pub arch: ArchFlag,
    /// Kernel tree or source tarball instead of the locked source package.
    #[arg(long, conflicts_with = "url")]
    pub source: Option<PathBuf>,
    /// The source lock to build from (default manifests/kernel/source.lock).
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub source_lock: Option<PathBuf>,
    /// Re-resolve the source package (manifests/kernel/source.toml) with apt and rewrite the
    /// lock before building.
    #[arg(long, conflicts_with = "url")]
    pub update_lock: bool,
    /// Where the image is written (the final config goes to `{output}.config`);
    /// defaults to build/{arch}/kernel.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// More config fragments, merged after the checked-in ones and checked like them.
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub extra_fragment: Vec<PathBuf>,
    /// Parallel make jobs (default 2: the build machines are small and shared).
    #[arg(long)]
    pub jobs: Option<u32>,
    /// Take a prebuilt kernel image from this URL instead of building one (needs --sha256).
    #[arg(long, requires = "sha256")]
    pub url: Option<String>,
    /// The SHA-256 the prebuilt image must have; it is refused otherwise.
    #[arg(long, requires = "url")]
    pub sha256: Option<String>,
}

/// How QEMU runs the guest CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelFlag {
    /// Software emulation (works everywhere; the default).
    Tcg,
    /// Hardware virtualization, for a guest of the host's arch only.
    Kvm,
}

/// Boot a kernel and rootfs (or a release tarball) under QEMU, with the VirtioFS share `arcbox`
/// laid out like the host's, and stream the guest console.
///
/// The `arcbox` share must not change during the boot: the guest keeps its files' pages from one
/// open to the next (virtiofsd `cache=always`); `--virtiofs` shares are checked on every open.
///
/// Succeeds when the guest powers off cleanly; fails at a kernel panic, or at the timeout (QEMU
/// and virtiofsd are then killed), printing the console tail. Prints the time to /sbin/init and
/// to the agent's first line. The console is also fed from stdin.
///
/// Appends `panic=-1` to the command line, and `no_timer_check` for x86_64 under TCG: on a loaded
/// host the emulated CPU otherwise fails the kernel's IO-APIC timer check and panics.
#[derive(Debug, clap::Args)]
pub struct Boot {
    /// Guest architecture.
    #[arg(long)]
    pub arch: ArchFlag,
    /// A release tarball (kernel, rootfs.erofs and the manifest's command line).
    #[arg(long, conflicts_with_all = ["kernel", "rootfs"])]
    pub tarball: Option<PathBuf>,
    /// Kernel image (with --rootfs).
    #[arg(long, requires = "rootfs")]
    pub kernel: Option<PathBuf>,
    /// EROFS root filesystem image (with --kernel); attached read-only as /dev/vda.
    #[arg(long, requires = "kernel")]
    pub rootfs: Option<PathBuf>,
    /// Kernel command line; defaults to the tarball manifest's, else the contract's for the arch.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Words appended to the kernel command line (whichever it is), repeatable: picks a boot
    /// mode, e.g. `--append "init=/sbin/arcbox-storage-recovery arcbox.storage_recovery=1"`.
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub append: Vec<String>,
    /// An extra raw disk, `PATH` or `PATH:ro` (read-only), repeatable, in order: /dev/vdc,
    /// /dev/vdd, … (/dev/vda is the rootfs, /dev/vdb a blank scratch disk). Written in place.
    #[arg(long, value_name = "PATH[:ro]")]
    pub disk: Vec<String>,
    /// An extra VirtioFS share `TAG=DIR`, repeatable, served by its own virtiofsd; the guest
    /// mounts it by its tag (a distro machine's `arcbox.machine_mounts=TAG=/path`).
    #[arg(long, value_name = "TAG=DIR")]
    pub virtiofs: Vec<String>,
    /// The guest agent, served as /arcbox/bin/arcbox-agent.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// A directory whose files are served under /arcbox/runtime/bin/.
    #[arg(long)]
    pub runtime_bin: Option<PathBuf>,
    /// An extra file in the share, as DEST=SOURCE (DEST relative to /arcbox); repeatable.
    #[arg(long, value_name = "DEST=SOURCE")]
    pub share_file: Vec<String>,
    /// Seconds before the guest is declared hung and killed.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// CPU acceleration (KVM only when asked: on some hosts /dev/kvm exists but guests hang).
    #[arg(long, value_enum, default_value_t = AccelFlag::Tcg)]
    pub accel: AccelFlag,
    /// The QEMU binary; defaults to qemu-system-x86_64 / qemu-system-aarch64 from PATH.
    #[arg(long, env = "BOOT_ASSETS_QEMU")]
    pub qemu: Option<PathBuf>,
    /// Give the guest a user-mode network (virtio-net eth0, 10.0.2.15/24 by DHCP) and forward
    /// 127.0.0.1:HOST_PORT on the host to its GUEST_PORT; without it the guest has no network.
    #[arg(long, value_name = "HOST_PORT:GUEST_PORT")]
    pub forward_tcp: Option<crate::boot::qemu::TcpForward>,
}

/// Boot each arch N times from the plain EROFS root and N times from the verified root,
/// alternating, and print the median kernel start → /sbin/init, /sbin/init → agent, kernel
/// start → agent and kernel start → first container output times of each, the verified / plain
/// ratios (target: kernel start → agent at most 5% slower) and the image growth.
///
/// Builds what it boots unless --kernel/--rootfs names it: the kernel through the kernel cache,
/// the rootfs from the pinned recipe into build/{arch}/rootfs.erofs; the verified root is that
/// image with its dm-verity hash tree (as `release` makes it), booted with the verified command
/// line. Boots with the container agent: it mounts cgroup v2, runs one busybox
/// container with runc and powers off (with --docker, the first `docker run` of the stack's
/// dockerd; with --no-containers, an agent that prints one line).
#[derive(Debug, clap::Args)]
pub struct BenchBoot {
    /// Boots per arch and root (plain, verified). A TCG boot's kernel start → agent varies by
    /// about ±0.07 s from boot to boot, a few percent: fewer runs can move the ratio past 1.05×.
    #[arg(long, default_value_t = 15)]
    pub runs: u32,
    /// Arches to measure (repeatable); both when not given.
    #[arg(long)]
    pub arch: Vec<ArchFlag>,
    /// Kernel image to boot instead of building one (with one --arch).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// EROFS rootfs image to boot instead of building build/{arch}/rootfs.erofs (with one --arch);
    /// the verified root is made from it.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Seconds before one boot is declared hung.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The QEMU binary; defaults to qemu-system-x86_64 / qemu-system-aarch64 from PATH.
    #[arg(long, env = "BOOT_ASSETS_QEMU")]
    pub qemu: Option<PathBuf>,
    /// Boot the one-line agent only, without timing kernel start → first container output.
    ///
    /// By default every boot runs one container (`runc run` of a busybox bundle) with runc from
    /// --runtime-bin, or else the release's own: the stack of manifests/stack.toml (`cargo xtask
    /// stack`, built from pinned sources or cached).
    #[arg(long)]
    pub no_containers: bool,
    /// A runtime bin dir with the arch's `runc` (with one --arch), instead of the stack's.
    #[arg(long, conflicts_with = "no_containers")]
    pub runtime_bin: Option<PathBuf>,
    /// Time the first `docker run` instead of `runc run`: the Docker agent
    /// (tests/fixtures/agent/docker-agent.sh) starts containerd and dockerd from the stack's five
    /// runtime binaries, imports a one-file busybox image and runs it, and powers off.
    #[arg(long, conflicts_with_all = ["no_containers", "runtime_bin"])]
    pub docker: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_version_is_semver_without_a_leading_v() {
        let version = AssetVersion::parse("1.4.0-rc.1").unwrap();
        assert_eq!(
            (version.as_str(), version.major(), version.is_prerelease()),
            ("1.4.0-rc.1", 1, true)
        );
        assert!(!AssetVersion::parse("0.2.0").unwrap().is_prerelease());
        let err = AssetVersion::parse("v0.2").unwrap_err();
        assert!(
            err.starts_with("--version \"v0.2\" is not a semantic version like 0.2.0 (no leading `v`)"),
            "{err}"
        );
    }
}

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
    Kernel(Kernel),
    Boot(Boot),
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
    /// Kernel image to ship (a bzImage on x86_64, an Image on arm64); built from source with
    /// `cargo xtask kernel`'s defaults (cached) when not given.
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

/// Build the guest kernel from source (cached), or take a prebuilt one verified by its digest.
///
/// Configures `tinyconfig` + manifests/kernel/common.config + manifests/kernel/{arch}.config,
/// fails naming every fragment option the final config dropped or changed, then compiles with
/// pinned KBUILD_BUILD_* (reproducible). Writes the image and `{output}.config`.
#[derive(Debug, clap::Args)]
pub struct Kernel {
    /// Guest architecture (arm64 is cross-compiled with aarch64-linux-gnu-gcc).
    #[arg(long)]
    pub arch: ArchFlag,
    /// Kernel tree or source tarball; defaults to the distro's /usr/src/linux-source-*.tar.xz.
    #[arg(long, conflicts_with = "url")]
    pub source: Option<PathBuf>,
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
/// Succeeds when the guest powers off cleanly; fails at a kernel panic, or at the timeout (QEMU
/// and virtiofsd are then killed), printing the console tail. Prints the time to /sbin/init and
/// to the agent's first line. The console is also fed from stdin.
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
}

/// Measure the pipeline's outputs.
#[derive(Debug, clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    pub what: BenchTarget,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    Boot(BenchBoot),
}

/// Boot each arch N times and print the median kernel start → /sbin/init and /sbin/init →
/// agent times.
///
/// Uses build/{arch}/kernel (built if missing) and build/{arch}/rootfs.erofs (from
/// `cargo xtask rootfs`), with an agent that prints one line and powers off.
#[derive(Debug, clap::Args)]
pub struct BenchBoot {
    /// Boots per arch.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Arches to measure (repeatable); both when not given.
    #[arg(long)]
    pub arch: Vec<ArchFlag>,
    /// Kernel image to use for every arch instead of build/{arch}/kernel (with one --arch).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Rootfs image to use instead of build/{arch}/rootfs.erofs (with one --arch).
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Seconds before one boot is declared hung.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The QEMU binary; defaults to qemu-system-x86_64 / qemu-system-aarch64 from PATH.
    #[arg(long, env = "BOOT_ASSETS_QEMU")]
    pub qemu: Option<PathBuf>,
}

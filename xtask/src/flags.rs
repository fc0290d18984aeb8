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
    Rootfs(Rootfs),
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
    /// EROFS root filesystem image to ship; without it, `cargo xtask rootfs` builds
    /// build/{arch}/rootfs.erofs first.
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

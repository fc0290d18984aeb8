//! `cargo xtask rootfs`: real builds from empty caches for both arches, extracted without
//! mounting (`fsck.erofs --extract`) and checked by area: what the image holds (`contents`), its
//! programs running (`programs`), reproducibility (`reproducible`), refused inputs and the lock
//! (`inputs`), and the init files (`init`). This module holds the builds they share.
//!
//! Builds are serialized with a mutex (they download and compress); the two cold builds per
//! arch are made once and shared by the tests that read them. "Cold" means empty package and
//! apt caches; the tools built from source (several minutes per arch) come from one shared
//! tool cache (the real one, [`shared_tool_cache`]), except where a test asks for its own.

mod contents;
mod init;
mod inputs;
mod programs;
mod reproducible;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::support::{download_cache, require_tool, run_fails, run_ok, xtask};

/// Serializes the heavy builds of this module.
pub(super) static BUILDS: Mutex<()> = Mutex::new(());

/// SOURCE_DATE_EPOCH of every build here.
pub(super) const EPOCH: &str = "1700000000";

/// The contract's iptables names, all the legacy multi-call binary.
pub(super) const IPTABLES_NAMES: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// Extensions Docker's rules load, with the heading iptables prints once it has dlopened the
/// extension: `-h` loads each one without touching the kernel.
pub(super) const DOCKER_EXTENSIONS: [(&str, &str); 9] = [
    ("-j MASQUERADE", "MASQUERADE target options:"),
    ("-j DNAT", "DNAT target options:"),
    ("-j SNAT", "SNAT target options:"),
    ("-j REJECT", "REJECT target options:"),
    ("-m conntrack", "conntrack match options:"),
    ("-m state", "state match options:"),
    ("-m addrtype", "Address type match options:"),
    ("-m comment", "comment match options:"),
    ("-m physdev", "physdev match options:"),
];

/// The two contract arches with their Debian triplet and ELF machine.
pub(super) const ARCHES: [(&str, &str, u16); 2] = [
    ("arm64", "aarch64-linux-gnu", goblin::elf::header::EM_AARCH64),
    ("x86_64", "x86_64-linux-gnu", goblin::elf::header::EM_X86_64),
];

/// One cold build: its private cache and output directory.
pub(super) struct ColdBuild {
    _dir: tempfile::TempDir,
    pub(super) cache: PathBuf,
    pub(super) image: PathBuf,
    pub(super) sbom: PathBuf,
}

pub(super) fn require_build_tools() {
    require_tool("fsck.erofs");
    require_tool("apt-get");
}

/// The cache kinds the rootfs build compiles into (`{cache}/rootfs/tools`: the tools built
/// from source; `{cache}/debian/roots`: the build-only packages they link).
const TOOL_CACHE_KINDS: [&str; 2] = ["rootfs/tools", "debian/roots"];

/// The cache directory the tests' tool caches link to: the user's (BOOT_ASSETS_CACHE_DIR, else
/// ~/.cache/boot-assets), so the tools are compiled once per machine.
fn shared_tool_cache() -> PathBuf {
    std::env::var_os("BOOT_ASSETS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/boot-assets"))
}

/// Links the tool cache kinds of `cache` to the shared ones.
pub(super) fn share_tool_cache(cache: &Path) {
    for kind in TOOL_CACHE_KINDS {
        let shared = shared_tool_cache().join(kind);
        std::fs::create_dir_all(&shared).unwrap();
        let link = cache.join(kind);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&shared, &link).unwrap();
    }
}

/// A build of `arch` from an empty cache (tools from the shared tool cache), with the output
/// in a fresh directory.
pub(super) fn cold_build(arch: &str) -> ColdBuild {
    cold_build_with(arch, true)
}

/// A build of `arch` from an empty cache; with `share_tools` false the tools are compiled too.
pub(super) fn cold_build_with(arch: &str, share_tools: bool) -> ColdBuild {
    require_build_tools();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    if share_tools {
        share_tool_cache(&cache);
    }
    let image = dir.path().join("out").join("rootfs.erofs");
    let _guard = builds_lock();
    let started = std::time::Instant::now();
    let output = run_ok(
        xtask()
            .current_dir(dir.path())
            .env("BOOT_ASSETS_CACHE_DIR", &cache)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["rootfs", "--arch", arch, "--output"])
            .arg(&image),
    );
    eprintln!(
        "cold build {arch} in {:.1?}:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    let sbom = PathBuf::from(format!("{}.spdx.json", image.display()));
    ColdBuild {
        _dir: dir,
        cache,
        image,
        sbom,
    }
}

/// The first cold build of each arch, shared by the tests that only read it.
pub(super) fn first_builds() -> &'static BTreeMap<&'static str, ColdBuild> {
    static FIRST: OnceLock<BTreeMap<&'static str, ColdBuild>> = OnceLock::new();
    FIRST.get_or_init(|| ARCHES.iter().map(|(arch, _, _)| (*arch, cold_build(arch))).collect())
}

/// Extracts an image with erofs-utils, without mounting it.
pub(super) fn extract(image: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("root");
    run_ok(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", target.display()))
            .arg(image),
    );
    dir
}

pub(super) fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A fresh cache holding copies of the x86_64 package files (no apt lists), tools from the
/// shared tool cache.
pub(super) fn warm_cache_copy() -> tempfile::TempDir {
    let source = download_cache(&first_builds()["x86_64"].cache);
    let dir = tempfile::tempdir().unwrap();
    share_tool_cache(&dir.path().join("cache"));
    let copy = download_cache(&dir.path().join("cache"));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Holds [`BUILDS`], whichever build panicked while holding it before.
pub(super) fn builds_lock() -> MutexGuard<'static, ()> {
    BUILDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `cargo xtask` command that uses the cache of `dir` (a [`warm_cache_copy`]) and builds at
/// [`EPOCH`], ready for its arguments.
pub(super) fn xtask_on_cache_copy(dir: &Path) -> Command {
    let mut command = xtask();
    command
        .env("BOOT_ASSETS_CACHE_DIR", dir.join("cache"))
        .env("SOURCE_DATE_EPOCH", EPOCH);
    command
}

/// Runs a build that must fail; asserts nothing was written at the output path or beside it.
pub(super) fn build_fails(dir: &Path, extra: &[&str]) -> String {
    let output = dir.join("out").join("rootfs.erofs");
    let _guard = builds_lock();
    let stderr = run_fails(
        xtask_on_cache_copy(dir)
            .args(["rootfs", "--arch", "x86_64", "--output"])
            .arg(&output)
            .args(extra),
    );
    assert!(!output.exists(), "{} was written by a failed build", output.display());
    if let Ok(entries) = std::fs::read_dir(dir.join("out")) {
        let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "a failed build left {left:?} in the output directory");
    }
    stderr
}

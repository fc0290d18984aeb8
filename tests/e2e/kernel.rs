//! `cargo xtask kernel`: both arches build from the distro's source with every fragment option
//! in the final config, a second run comes from the cache, a changed fragment rebuilds, an
//! option the kernel cannot satisfy fails naming it, and a prebuilt kernel is verified by its
//! digest before use.
//!
//! Kernel builds are serialized by xtask itself (one lock file per cache); the tests that build
//! also hold a module lock so their timings are not measured while another build runs.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boot_assets::Arch;

use crate::boot_support;
use crate::support::{self, run_fails, run_ok, xtask};

/// A cached kernel is found without building: hashing the source tarball is the main cost.
const CACHED_RUN_LIMIT: Duration = Duration::from_secs(30);

fn kernel_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn build_and_recheck(arch: Arch) {
    boot_support::require_kernel_tools(arch);
    let _lock = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("kernel");
    // The first run builds (or finds an earlier run's build); the second must be a cache hit.
    run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--output"])
            .arg(&output),
    );
    let image = std::fs::read(&output).unwrap();
    match arch {
        // A bzImage carries the "HdrS" boot protocol signature at 0x202.
        Arch::X86_64 => assert_eq!(&image[0x202..0x206], b"HdrS", "not a bzImage"),
        // An arm64 Image carries "ARM\x64" at 0x38.
        Arch::Arm64 => assert_eq!(&image[0x38..0x3c], b"ARM\x64", "not an arm64 Image"),
    }
    let config = std::fs::read_to_string(dir.path().join("kernel.config")).unwrap();
    for line in boot_support::expected_kernel_options(arch).lines() {
        assert!(
            config.lines().any(|l| l == line),
            "{arch}: `{line}` missing from the final config"
        );
    }

    let started = Instant::now();
    let again = run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--output"])
            .arg(&output),
    );
    let elapsed = started.elapsed();
    let report = String::from_utf8_lossy(&again.stderr);
    assert!(
        report.contains("from the cache"),
        "{arch}: the second run was not a cache hit:\n{report}"
    );
    assert!(elapsed < CACHED_RUN_LIMIT, "{arch}: a cached kernel took {elapsed:?}");
    assert_eq!(
        std::fs::read(&output).unwrap(),
        image,
        "{arch}: the cached image differs"
    );
}

#[test]
fn x86_64_kernel_builds_from_source_with_every_fragment_option_and_is_cached() {
    build_and_recheck(Arch::X86_64);
}

#[test]
fn arm64_kernel_builds_from_source_with_every_fragment_option_and_is_cached() {
    build_and_recheck(Arch::Arm64);
}

#[test]
fn a_fragment_option_the_kernel_cannot_satisfy_fails_naming_it() {
    let arch = Arch::X86_64;
    boot_support::require_kernel_tools(arch);
    let _lock = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.config");
    // One symbol that does not exist, and one that exists but whose dependency is off.
    std::fs::write(&bogus, "CONFIG_BOOT_ASSETS_NO_SUCH_OPTION=y\nCONFIG_DRM_VIRTIO_GPU=y\n").unwrap();
    let started = Instant::now();
    let stderr = run_fails(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--extra-fragment"])
            .arg(&bogus)
            .arg("--output")
            .arg(dir.path().join("kernel")),
    );
    assert!(
        stderr.contains("CONFIG_BOOT_ASSETS_NO_SUCH_OPTION=y (") && stderr.contains("does not have"),
        "{stderr}"
    );
    assert!(stderr.contains("CONFIG_DRM_VIRTIO_GPU=y ("), "{stderr}");
    assert!(
        stderr.contains("bogus.config:1"),
        "the error does not name the fragment line:\n{stderr}"
    );
    assert!(
        !stderr.contains("compiling"),
        "the check must fail before compiling:\n{stderr}"
    );
    assert!(!dir.path().join("kernel").exists(), "a failed build wrote an image");
    eprintln!("bogus fragment rejected in {:?}", started.elapsed());
}

#[test]
fn a_changed_fragment_rebuilds() {
    let arch = Arch::X86_64;
    boot_support::require_kernel_tools(arch);
    let _lock = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("bigger-log.config");
    // A value no other test uses, so this is never a cache hit, and the rebuild is small.
    std::fs::write(&extra, "CONFIG_LOG_BUF_SHIFT=16\n").unwrap();
    let output = dir.path().join("kernel");
    let built = run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--extra-fragment"])
            .arg(&extra)
            .arg("--output")
            .arg(&output),
    );
    let config = std::fs::read_to_string(dir.path().join("kernel.config")).unwrap();
    assert!(
        config.lines().any(|l| l == "CONFIG_LOG_BUF_SHIFT=16"),
        "the extra fragment was not applied"
    );
    let report = String::from_utf8_lossy(&built.stderr);
    // Either this run built it, or an earlier run of this same test left it in the cache.
    assert!(
        report.contains("built Linux") || report.contains("from the cache"),
        "{report}"
    );
    let default_config = {
        let default_dir = tempfile::tempdir().unwrap();
        let default_output = default_dir.path().join("kernel");
        run_ok(
            xtask()
                .args(["kernel", "--arch", arch.as_str(), "--output"])
                .arg(&default_output),
        );
        std::fs::read_to_string(default_dir.path().join("kernel.config")).unwrap()
    };
    assert_ne!(config, default_config, "a changed fragment produced the same config");
}

#[test]
fn a_prebuilt_kernel_is_verified_before_use() {
    support::require_tool("curl", "apt-get install -y curl");
    let dir = tempfile::tempdir().unwrap();
    let published = dir.path().join("published-kernel");
    std::fs::write(&published, b"pretend kernel image").unwrap();
    let url = format!("file://{}", published.display());
    let digest = sha256_hex(&published);
    let cache = dir.path().join("cache");
    let output = dir.path().join("out/kernel");

    run_ok(
        xtask()
            .args([
                "kernel", "--arch", "arm64", "--url", &url, "--sha256", &digest, "--output",
            ])
            .arg(&output)
            .env("BOOT_ASSETS_CACHE_DIR", &cache),
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"pretend kernel image");

    let wrong = "0".repeat(64);
    let stderr = run_fails(
        xtask()
            .args([
                "kernel", "--arch", "arm64", "--url", &url, "--sha256", &wrong, "--output",
            ])
            .arg(dir.path().join("out/other"))
            .env("BOOT_ASSETS_CACHE_DIR", &cache),
    );
    assert!(
        stderr.contains(&format!("the kernel downloaded from {url} has sha256 {digest}")),
        "{stderr}"
    );
    assert!(!dir.path().join("out/other").exists(), "a refused kernel was written");
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Two clean builds in different cache directories (so different source and object paths) give
/// the same image bytes. A full cold build: run it on purpose with `--ignored`.
#[test]
#[ignore = "a full cold kernel build (5-15 min); run with --ignored to check reproducibility"]
fn two_clean_kernel_builds_are_byte_identical() {
    let arch = Arch::X86_64;
    boot_support::require_kernel_tools(arch);
    let _lock = kernel_lock();
    let dir = tempfile::tempdir().unwrap();
    let usual = dir.path().join("usual");
    run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--output"])
            .arg(&usual),
    );
    let clean = dir.path().join("clean");
    run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--output"])
            .arg(&clean)
            .env("BOOT_ASSETS_CACHE_DIR", dir.path().join("fresh-cache")),
    );
    assert!(
        std::fs::read(&usual).unwrap() == std::fs::read(&clean).unwrap(),
        "two clean builds of the {arch} kernel differ"
    );
}

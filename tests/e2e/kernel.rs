//! `cargo xtask kernel`: both arches build from the locked Debian source package with every
//! fragment option and requirement in the final config, a second run comes from the cache, a
//! changed fragment rebuilds, an option the kernel cannot satisfy fails naming it, a tampered or
//! missing source package is refused before anything is unpacked, and a prebuilt kernel is
//! verified by its digest before use.
//!
//! Kernel builds are serialized by xtask itself (one lock file per cache); the tests that build
//! also hold a module lock so their timings are not measured while another build runs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boot_assets::Arch;

use crate::boot_support;
use crate::support::{self, run_fails, run_ok, xtask};

/// A cached kernel is found without building or fetching anything.
const CACHED_RUN_LIMIT: Duration = Duration::from_secs(30);

fn kernel_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a test that builds starts with: the kernel build tools of `arch` checked, the module
/// lock held (keep the guard for the whole test), and a fresh work directory.
fn kernel_build_test(arch: Arch) -> (MutexGuard<'static, ()>, tempfile::TempDir) {
    boot_support::require_kernel_tools(arch);
    (kernel_lock(), tempfile::tempdir().unwrap())
}

/// The checked-in lock of the kernel source package.
const SOURCE_LOCK_PATH: &str = "manifests/kernel/source.lock";

/// `cargo xtask kernel --arch {arch} --output {output}`, ready for more arguments.
fn kernel_command(arch: Arch, output: &Path) -> Command {
    let mut command = xtask();
    command
        .args(["kernel", "--arch", arch.as_str(), "--output"])
        .arg(output);
    command
}

/// The text of the checked-in kernel source lock.
fn source_lock_text() -> String {
    let path = support::project_root().join(SOURCE_LOCK_PATH);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn build_and_recheck(arch: Arch) {
    let (_lock, dir) = kernel_build_test(arch);
    let output = dir.path().join("kernel");
    // The first run builds (or finds an earlier run's build); the second must be a cache hit.
    run_ok(&mut kernel_command(arch, &output));
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
    let again = run_ok(&mut kernel_command(arch, &output));
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

support::test_per_case!(build_and_recheck {
    x86_64_kernel_builds_from_source_with_every_fragment_option_and_is_cached: Arch::X86_64,
    arm64_kernel_builds_from_source_with_every_fragment_option_and_is_cached: Arch::Arm64,
});

/// `cargo xtask kernel --arch x86_64` with `cache` as its cache directory and `extra` arguments,
/// which must fail before it writes a kernel; returns its stderr.
fn x86_64_kernel_build_fails(cache: &Path, extra: &[&OsStr]) -> String {
    let arch = Arch::X86_64;
    boot_support::require_kernel_tools(arch);
    let out = tempfile::tempdir().unwrap();
    let kernel = out.path().join("kernel");
    let stderr = run_fails(
        kernel_command(arch, &kernel)
            .env("BOOT_ASSETS_CACHE_DIR", cache)
            .args(extra),
    );
    assert!(!kernel.exists(), "a refused build wrote {}", kernel.display());
    stderr
}

/// The checked-in source lock: its package name, version and sha256, read as text.
fn locked_source() -> (String, String, String) {
    let text = source_lock_text();
    let field = |name: &str| -> String {
        let prefix = format!("{name} = \"");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix('"'))
            .unwrap_or_else(|| panic!("source.lock has no {name}"))
            .to_owned()
    };
    (field("name"), field("version"), field("sha256"))
}

/// The default source is the locked 6.12 package (the host's /usr/src is not consulted): the
/// build says so, and the kernel it gives is 6.12.
#[test]
fn the_default_source_is_the_locked_6_12_package() {
    let arch = Arch::Arm64;
    let (_lock, dir) = kernel_build_test(arch);
    let (name, version, sha256) = locked_source();
    assert_eq!(name, "linux-source-6.12");
    let output = run_ok(&mut kernel_command(arch, &dir.path().join("kernel")));
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains(&format!("source {name} {version} (all) (locked, sha256 {sha256})")),
        "{report}"
    );
    let upstream = version.split('-').next().unwrap();
    assert!(report.contains(&format!("(Linux {upstream}, ")), "{report}");
}

/// A package file in the cache that differs from the lock is refused before it is unpacked,
/// with a message naming the file, both digests and the fix.
#[test]
fn a_tampered_kernel_source_package_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let (name, version, sha256) = locked_source();
    let planted = support::cached_download(cache.path(), &sha256);
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, b"not the package the lock names").unwrap();
    let stderr = x86_64_kernel_build_fails(cache.path(), &[]);
    assert!(
        stderr.contains(&format!(
            "package {name} {version} (all): cached file {}",
            planted.display()
        )) && stderr.contains(&format!("but the lock says {sha256}"))
            && stderr.contains("delete that file to download it again"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("unpacking"),
        "a tampered package was unpacked:\n{stderr}"
    );
}

/// A lock naming a package file the archive does not have fails with the command that
/// re-resolves it.
#[test]
fn a_kernel_source_lock_naming_a_missing_file_fails_clearly() {
    let cache = tempfile::tempdir().unwrap();
    let (name, version, _) = locked_source();
    let missing = "6.12.0-0~boot-assets-missing";
    let lock = cache.path().join("source.lock");
    std::fs::write(&lock, source_lock_text().replace(&version, missing)).unwrap();
    let stderr = x86_64_kernel_build_fails(cache.path(), &["--source-lock".as_ref(), lock.as_os_str()]);
    assert!(
        stderr.contains(&format!(
            "cannot download the locked files package {name} {missing} (all)"
        )) && stderr.contains("run `cargo xtask kernel --arch x86_64 --update-lock`"),
        "{stderr}"
    );
}

/// `--update-lock` re-resolves a stale lock with apt and rewrites it (the build that follows is
/// stopped at the configuration check by a bogus option, so nothing is compiled here).
#[test]
fn update_lock_re_resolves_a_stale_kernel_source_lock() {
    let arch = Arch::X86_64;
    let (_lock, dir) = kernel_build_test(arch);
    let (name, version, sha256) = locked_source();
    let stale_version = "6.12.0-0~boot-assets-stale";
    let stale_sha256 = "0".repeat(64);
    let text = source_lock_text();
    let lock = dir.path().join("source.lock");
    std::fs::write(
        &lock,
        text.replace(&version, stale_version).replace(&sha256, &stale_sha256),
    )
    .unwrap();
    let bogus = dir.path().join("bogus.config");
    std::fs::write(&bogus, "CONFIG_BOOT_ASSETS_NO_SUCH_OPTION=y\n").unwrap();
    let stderr = run_fails(
        kernel_command(arch, &dir.path().join("kernel"))
            .args(["--update-lock", "--source-lock"])
            .arg(&lock)
            .arg("--extra-fragment")
            .arg(&bogus),
    );
    assert!(
        stderr.contains(&format!("kernel: lock: {name} {stale_version} -> ")),
        "{stderr}"
    );
    let rewritten = std::fs::read_to_string(&lock).unwrap();
    assert!(
        rewritten.starts_with("# Generated by `cargo xtask kernel"),
        "{rewritten}"
    );
    assert!(
        !rewritten.contains(stale_version) && !rewritten.contains(&stale_sha256),
        "{rewritten}"
    );
    assert!(rewritten.contains(&format!("name = \"{name}\"")), "{rewritten}");
    assert!(stderr.contains("CONFIG_BOOT_ASSETS_NO_SUCH_OPTION=y ("), "{stderr}");
}

#[test]
fn a_fragment_option_the_kernel_cannot_satisfy_fails_naming_it() {
    let arch = Arch::X86_64;
    let (_lock, dir) = kernel_build_test(arch);
    let bogus = dir.path().join("bogus.config");
    // One symbol that does not exist, and one that exists but whose dependency is off.
    std::fs::write(&bogus, "CONFIG_BOOT_ASSETS_NO_SUCH_OPTION=y\nCONFIG_DRM_VIRTIO_GPU=y\n").unwrap();
    let started = Instant::now();
    let stderr = run_fails(
        kernel_command(arch, &dir.path().join("kernel"))
            .arg("--extra-fragment")
            .arg(&bogus),
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

/// Compiles kernel code on every run, however warm the cache: a `LOCALVERSION` no earlier run
/// used gives a new cache key (a small incremental rebuild in the shared work tree). Then the
/// new cache entry's image is corrupted in place: the next run reports it, rebuilds, and gives
/// the same image again. The entry is removed at the end, so runs do not pile up entries.
#[test]
fn a_changed_fragment_compiles_and_a_corrupted_cache_entry_is_rebuilt() {
    let arch = Arch::X86_64;
    let (_lock, dir) = kernel_build_test(arch);
    let extra = dir.path().join("localversion.config");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let suffix = format!("-ci{nanos}");
    std::fs::write(&extra, format!("CONFIG_LOCALVERSION=\"{suffix}\"\n")).unwrap();
    let output = dir.path().join("kernel");
    let build = || {
        let out = run_ok(kernel_command(arch, &output).arg("--extra-fragment").arg(&extra));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let report = build();
    assert!(report.contains("compiling bzImage"), "{report}");
    let built_line = report
        .lines()
        .find(|line| line.contains(": built Linux "))
        .unwrap_or_else(|| panic!("nothing was built:\n{report}"));
    assert!(built_line.contains(&suffix), "{built_line}");
    let entry = Path::new(
        built_line
            .split("(cache entry ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no cache entry in `{built_line}`")),
    )
    .to_path_buf();
    let image = std::fs::read(&output).unwrap();
    let config = std::fs::read_to_string(dir.path().join("kernel.config")).unwrap();
    assert!(config.lines().any(|l| l == format!("CONFIG_LOCALVERSION=\"{suffix}\"")));

    // Flip one byte of the cached image in place.
    let cached = entry.join("kernel");
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    let again = build();
    assert!(
        again.contains(&format!("cache entry {} is corrupt", entry.display())) && again.contains("rebuilding"),
        "{again}"
    );
    assert!(
        !again.contains("from the cache"),
        "the corrupt entry was served:\n{again}"
    );
    assert_eq!(std::fs::read(&output).unwrap(), image, "the rebuilt image differs");
    std::fs::remove_dir_all(&entry).unwrap();
}

#[test]
fn a_prebuilt_kernel_is_verified_before_use() {
    support::require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let published = dir.path().join("published-kernel");
    std::fs::write(&published, b"pretend kernel image").unwrap();
    let url = format!("file://{}", published.display());
    let digest = support::sha256_file(&published);
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

/// Two clean builds in different cache directories (so different source and object paths) give
/// the same image bytes. A full cold build: run it on purpose with `--ignored`.
#[test]
#[ignore = "a full cold kernel build (5-15 min); run with --ignored to check reproducibility"]
fn two_clean_kernel_builds_are_byte_identical() {
    let arch = Arch::X86_64;
    let (_lock, dir) = kernel_build_test(arch);
    let usual = dir.path().join("usual");
    run_ok(&mut kernel_command(arch, &usual));
    let clean = dir.path().join("clean");
    run_ok(kernel_command(arch, &clean).env("BOOT_ASSETS_CACHE_DIR", dir.path().join("fresh-cache")));
    assert!(
        std::fs::read(&usual).unwrap() == std::fs::read(&clean).unwrap(),
        "two clean builds of the {arch} kernel differ"
    );
}

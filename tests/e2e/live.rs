//! The live check of a published CDN, `#[ignore]`d because it needs the internet:
//!
//! ```sh
//! BOOT_ASSETS_LIVE_CDN_BASE_URL=https://cdn.example.com \
//! BOOT_ASSETS_LIVE_VERSION=0.2.0 BOOT_ASSETS_LIVE_ARCH=x86_64 BOOT_ASSETS_LIVE_PREPARE_BINARIES=true \
//! cargo test --test e2e live::live_published_boot_assets_are_consumable -- --ignored --nocapture
//! ```
//!
//! `BOOT_ASSETS_LIVE_VERSION` defaults to what latest.json names, `BOOT_ASSETS_LIVE_ARCH` to the
//! host's arch; the manifest signature is checked with `manifests/minisign.pub`, or the key file
//! in `BOOT_ASSETS_LIVE_PUBLIC_KEY` (`none` skips it, for CDNs that publish unsigned manifests).
//! The same check runs against the local CDN in `publish.rs`, so it is exercised on every run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use boot_assets::asset_manager::AssetManager;
use boot_assets::{Arch, Manifest};

use crate::support::{project_root, sha256_file};

/// Installs `version` (latest when `None`) for `arch` from `cdn` with the AssetManager, as the
/// runtime does, and checks every installed file against the manifest; with `prepare_binaries`
/// also the arch's runtime binaries (mode 0755).
pub fn check_published(
    cdn: &str,
    version: Option<&str>,
    arch: Arch,
    prepare_binaries: bool,
    public_key: Option<&Path>,
) {
    let cache = tempfile::tempdir().unwrap();
    let mut builder = AssetManager::builder(cdn)
        .version(version.unwrap_or("latest"))
        .arch(arch)
        .cache_dir(cache.path().join("boot"));
    if let Some(key) = public_key {
        builder = builder.trusted_public_key(
            std::fs::read_to_string(key).unwrap_or_else(|e| panic!("reading public key {}: {e}", key.display())),
        );
    }
    let manager = builder.build().expect("AssetManager settings");
    let assets = manager
        .prepare()
        .unwrap_or_else(|e| panic!("installing {arch} boot assets from {cdn}: {e}"));
    if let Some(version) = version {
        assert_eq!(assets.version, version);
    }
    let target = &assets.manifest.targets[&arch];
    assert_eq!(sha256_file(&assets.kernel), target.kernel.sha256, "installed kernel");
    assert_eq!(sha256_file(&assets.rootfs), target.rootfs.sha256, "installed rootfs");
    assert!(!assets.kernel_cmdline.is_empty());
    eprintln!(
        "live: {cdn} v{} {arch}: kernel {} and rootfs verified",
        assets.version, target.kernel.version
    );
    if prepare_binaries {
        let bin = cache.path().join("runtime").join("bin");
        let installed = manager
            .prepare_binaries(&bin)
            .unwrap_or_else(|e| panic!("installing {arch} runtime binaries from {cdn}: {e}"));
        let expected = Manifest::binaries_for(&assets.manifest.binaries, arch).len();
        assert_eq!(installed.len(), expected, "{installed:?}");
        for binary in &installed {
            let mode = std::fs::metadata(&binary.path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{}", binary.path.display());
        }
        eprintln!("live: {} runtime binaries installed and verified", installed.len());
    }
}

#[test]
#[ignore = "needs a published CDN: set BOOT_ASSETS_LIVE_CDN_BASE_URL (see the module docs)"]
fn live_published_boot_assets_are_consumable() {
    let cdn = std::env::var("BOOT_ASSETS_LIVE_CDN_BASE_URL")
        .expect("set BOOT_ASSETS_LIVE_CDN_BASE_URL to the CDN base URL, e.g. https://cdn.example.com");
    let version = std::env::var("BOOT_ASSETS_LIVE_VERSION").ok().filter(|v| !v.is_empty());
    let arch = match std::env::var("BOOT_ASSETS_LIVE_ARCH") {
        Ok(name) if !name.is_empty() => name.parse().expect("BOOT_ASSETS_LIVE_ARCH is arm64 or x86_64"),
        _ => Arch::host().expect("this host's arch is not arm64 or x86_64: set BOOT_ASSETS_LIVE_ARCH"),
    };
    let prepare_binaries = matches!(
        std::env::var("BOOT_ASSETS_LIVE_PREPARE_BINARIES").as_deref(),
        Ok("1" | "true" | "yes")
    );
    let key = match std::env::var("BOOT_ASSETS_LIVE_PUBLIC_KEY") {
        Ok(value) if value == "none" => None,
        Ok(path) if !path.is_empty() => Some(path.into()),
        _ => Some(project_root().join("manifests/minisign.pub")),
    };
    check_published(&cdn, version.as_deref(), arch, prepare_binaries, key.as_deref());
}

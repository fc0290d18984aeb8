//! The verified cache: a warm prepare works offline, files altered on disk are fetched again,
//! and a hostile cache directory (planted links, a linked version directory) is never followed.

use std::time::Duration;

use boot_assets::cdn;

use super::rootfs_requests;
use crate::cdn_fixture::{kernel_path, Fixture, ARCH, VERSION};
use crate::support::sha256_hex;

#[test]
fn warm_prepare_makes_no_request_and_works_offline() {
    let fixture = Fixture::new();
    let first = fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let before = fixture.server.requests().len();
    let second = fixture.manager().prepare().unwrap();
    assert_eq!(
        fixture.server.requests().len(),
        before,
        "a warm prepare fetched something"
    );
    assert_eq!(first.kernel, second.kernel);
    assert_eq!(second.kernel_cmdline, ARCH.default_kernel_cmdline());

    // With the server gone, the verified cache is all it needs.
    let Fixture { server, cache, .. } = fixture;
    let url = server.url();
    drop(server);
    let offline = boot_assets::AssetManager::builder(url)
        .version(VERSION)
        .arch(ARCH)
        .cache_dir(cache.path())
        .retries(0)
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(offline.rootfs, cache.path().join(VERSION).join(cdn::ROOTFS_FILE));
}

#[test]
fn cached_file_altered_on_disk_is_refetched() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let rootfs = fixture.version_dir().join(cdn::ROOTFS_FILE);
    std::thread::sleep(Duration::from_millis(20));
    let mut altered = fixture.rootfs.clone();
    altered[10] ^= 1;
    std::fs::write(&rootfs, &altered).unwrap();

    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(
        rootfs_requests(&fixture).len(),
        2,
        "the altered rootfs was fetched again"
    );
    assert_eq!(
        fixture.server.requests_for(&kernel_path()).len(),
        1,
        "the kernel was not"
    );
}

// ---- A hostile cache directory (issue 11, items 3, 5, 6) ----

/// Collects every `RemovedLink` report of a manager.
fn removed_links() -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    impl Fn(&boot_assets::asset_manager::Progress<'_>) + Send + Sync + 'static,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let callback = move |p: &boot_assets::asset_manager::Progress<'_>| {
        if p.phase == boot_assets::asset_manager::Phase::RemovedLink {
            sink.lock().unwrap().push(p.name.to_owned());
        }
    };
    (seen, callback)
}

fn is_regular_file(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn planted_links_at_every_path_the_client_writes_are_removed_and_never_followed() {
    let mut fixture = Fixture::new();
    fixture.add_binaries(&[
        ("dockerd", None, b"#!/bin/sh\necho dockerd\n"),
        ("docker-init", Some("libexec/docker"), b"init"),
    ]);
    let home = tempfile::tempdir().unwrap();
    let victim = home.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let version_dir = fixture.version_dir();
    let bin_dir = home.path().join("runtime/bin");
    std::fs::create_dir_all(&version_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(home.path().join("runtime/libexec")).unwrap();
    let rootfs_sha = sha256_hex(&fixture.rootfs);
    let planted = [
        version_dir.join(".lock"),
        version_dir.join(format!(".partial-rootfs.erofs.{rootfs_sha}")),
        version_dir.join(".rootfs.erofs.verified"),
        version_dir.join(cdn::ROOTFS_FILE),
        version_dir.join(cdn::KERNEL_FILE),
        version_dir.join(cdn::MANIFEST_FILE),
        fixture
            .cache
            .path()
            .join(boot_assets::asset_manager::LAST_RESOLVED_FILE),
        bin_dir.join(".lock"),
        bin_dir.join("dockerd"),
        home.path().join("runtime/libexec/docker"),
    ];
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    // A dangling link too: creating through it would create its target.
    let dangling_target = home.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&dangling_target, bin_dir.join(".dockerd.verified")).unwrap();

    let (reports, callback) = removed_links();
    let manager = fixture.builder().version("latest").progress(callback).build().unwrap();
    manager.prepare().unwrap();
    manager.prepare_binaries(&bin_dir).unwrap();

    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the link's target was written"
    );
    assert!(!dangling_target.exists(), "a dangling link's target was created");
    fixture.assert_installed();
    for file in [
        version_dir.join(cdn::ROOTFS_FILE),
        version_dir.join(cdn::KERNEL_FILE),
        version_dir.join(cdn::MANIFEST_FILE),
        bin_dir.join("dockerd"),
        home.path().join("runtime/libexec/docker/docker-init"),
    ] {
        assert!(is_regular_file(&file), "{} is not a regular file", file.display());
    }
    let reports = reports.lock().unwrap();
    for link in planted.iter().chain([&bin_dir.join(".dockerd.verified")]) {
        let link = link.display().to_string();
        assert!(
            reports.contains(&link),
            "{link} was not reported as removed: {reports:?}"
        );
    }
}

#[test]
fn a_linked_version_directory_is_replaced_and_its_target_left_alone() {
    let fixture = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), fixture.version_dir()).unwrap();
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert!(std::fs::symlink_metadata(fixture.version_dir()).unwrap().is_dir());
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "files went through the link"
    );
}

#[test]
fn binaries_with_identical_contents_install_from_one_download() {
    let mut fixture = Fixture::new();
    let same = crate::cdn_fixture::random_bytes(200_000);
    fixture.add_binaries(&[
        ("one", None, &same),
        ("two", None, &same),
        ("three", Some("libexec"), &same),
    ]);
    let home = tempfile::tempdir().unwrap();
    let bin_dir = home.path().join("runtime/bin");
    let installed = fixture.manager().prepare_binaries(&bin_dir).unwrap();
    assert_eq!(installed.len(), 3);
    for binary in &installed {
        assert!(
            std::fs::read(&binary.path).unwrap() == same,
            "{} differs",
            binary.path.display()
        );
        assert!(is_regular_file(&binary.path));
    }
    let requests: usize = ["one", "two", "three"]
        .iter()
        .map(|name| {
            fixture
                .server
                .requests_for(&cdn::binary_path(name, "1.0+b", ARCH))
                .len()
        })
        .sum();
    assert_eq!(requests, 1, "identical contents were downloaded more than once");
    let leftovers: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".partial-") || n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn in_place_edit_with_the_mtime_restored_is_refetched() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let rootfs = fixture.version_dir().join(cdn::ROOTFS_FILE);
    let before = std::fs::metadata(&rootfs).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let file = std::fs::OpenOptions::new().write(true).open(&rootfs).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[fixture.rootfs[10] ^ 1], 10).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = std::fs::metadata(&rootfs).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(after.len(), before.len());

    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(
        rootfs_requests(&fixture).len(),
        2,
        "the edited rootfs was served as verified"
    );
}

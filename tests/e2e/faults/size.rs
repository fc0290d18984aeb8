//! The manifest's `size` is enforced on every path that installs a file: a fresh download, a
//! resumed one, a kept partial file whose digest matches, a copy, and a warm start. Larger and
//! smaller both refused, naming both numbers. Before, a `size` larger than the object was
//! accepted: the short transfer was retried and the kept partial installed by its digest alone.

use boot_assets::asset_manager::AssetError;
use boot_assets::cdn;

use crate::cdn_fixture::{Fixture, ARCH, ROOTFS_BYTES};

/// The message of a size refusal, for the rootfs of `fixture`, from `url`.
fn size_message(url: &str, size: u64) -> String {
    format!(
        "rootfs from {url}: the object is {ROOTFS_BYTES} bytes but the manifest's size is {size} bytes; refusing it"
    )
}

#[test]
fn a_size_larger_than_the_object_is_refused_naming_both_numbers() {
    let mut fixture = Fixture::new();
    let size = ROOTFS_BYTES as u64 + 1000;
    fixture.serve_rootfs_size(size);
    let error = fixture.manager().prepare().unwrap_err();
    assert!(matches!(error, AssetError::SizeMismatch { .. }), "{error:?}");
    assert_eq!(error.to_string(), size_message(&fixture.rootfs_url(), size));
    assert!(!fixture.version_dir().join(cdn::ROOTFS_FILE).exists());
}

#[test]
fn a_size_smaller_than_the_object_is_refused_naming_both_numbers() {
    let mut fixture = Fixture::new();
    let size = ROOTFS_BYTES as u64 - 1000;
    fixture.serve_rootfs_size(size);
    let error = fixture.manager().prepare().unwrap_err().to_string();
    assert!(
        error.contains(&format!("longer than the manifest's size of {size} bytes"))
            && error.contains(&format!("(the server announces {ROOTFS_BYTES})")),
        "{error}"
    );
    assert!(!fixture.version_dir().join(cdn::ROOTFS_FILE).exists());
}

#[test]
fn a_kept_partial_with_the_right_digest_but_not_the_size_is_refused() {
    let mut fixture = Fixture::new();
    let size = ROOTFS_BYTES as u64 + 1;
    fixture.serve_rootfs_size(size);
    let partial = fixture.version_dir().join(format!(
        ".partial-{}.{}",
        cdn::ROOTFS_FILE,
        fixture.manifest.targets[&ARCH].rootfs.sha256
    ));
    std::fs::create_dir_all(fixture.version_dir()).unwrap();
    std::fs::write(&partial, &fixture.rootfs).unwrap();
    let error = fixture.manager().prepare().unwrap_err();
    assert_eq!(error.to_string(), size_message(&fixture.rootfs_url(), size));
    assert!(!fixture.version_dir().join(cdn::ROOTFS_FILE).exists());
}

#[test]
fn a_warm_start_with_a_manifest_whose_size_disagrees_is_refused() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    // The cached manifest now says another size (no key or pinned digest: it is trusted).
    let cached = fixture.version_dir().join(cdn::MANIFEST_FILE);
    let text = std::fs::read_to_string(&cached).unwrap();
    let size = ROOTFS_BYTES as u64 + 7;
    let edited = text.replace(&format!("\"size\": {ROOTFS_BYTES}"), &format!("\"size\": {size}"));
    assert_ne!(edited, text);
    std::fs::write(&cached, edited).unwrap();
    let error = fixture.manager().prepare().unwrap_err();
    let local = fixture.version_dir().join(cdn::ROOTFS_FILE);
    assert_eq!(
        error.to_string(),
        format!(
            "rootfs from {}: the object is {ROOTFS_BYTES} bytes but the manifest's size is {size} bytes; refusing it",
            local.display()
        )
    );
}

//! Mirrors: an ordered list of base URLs with the CDN's layout. An object that fails on the CDN
//! comes from the next mirror, checked the same way; `latest.json` comes only from the CDN.

use boot_assets::asset_manager::AssetError;
use boot_assets::{cdn, Latest};

use super::rootfs_requests;
use crate::cdn_fixture::{rootfs_path, Fixture, VERSION};
use crate::fault_server::{Fault, FaultServer};
use crate::support::run_ok;

/// A mirror serving the fixture's files (manifest, kernel, rootfs) at the same paths.
fn mirror_of(fixture: &Fixture) -> FaultServer {
    let mirror = FaultServer::start();
    mirror.put(&cdn::manifest_path(VERSION), fixture.manifest.to_json_pretty());
    mirror.put(&crate::cdn_fixture::kernel_path(), fixture.kernel.clone());
    mirror.put(&rootfs_path(), fixture.rootfs.clone());
    mirror
}

#[test]
fn an_object_the_cdn_refuses_comes_from_the_mirror() {
    let fixture = Fixture::new();
    let mirror = mirror_of(&fixture);
    // The CDN's bot protection answers 403.
    fixture.server.fault_always(&rootfs_path(), Fault::Status(403));
    fixture
        .builder()
        .mirror(mirror.url())
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    fixture.assert_installed();
    assert_eq!(rootfs_requests(&fixture).len(), 1, "a 403 is not retried on the CDN");
    assert_eq!(mirror.requests_for(&rootfs_path()).len(), 1);
    assert!(mirror.requests_for(&crate::cdn_fixture::kernel_path()).is_empty());
}

#[test]
fn a_mirror_with_other_bytes_is_refused_by_the_digest_naming_every_source() {
    let fixture = Fixture::new();
    let mirror = mirror_of(&fixture);
    fixture.server.fault_always(&rootfs_path(), Fault::Status(404));
    mirror.fault_always(&rootfs_path(), Fault::WrongBytes);
    let error = fixture
        .builder()
        .mirror(mirror.url())
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    assert!(matches!(error, AssetError::AllSourcesFailed { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "rootfs: every source failed: GET {}: HTTP status 404; rootfs from {}/",
            fixture.rootfs_url(),
            mirror.url()
        )) && text.contains("sha256 mismatch"),
        "{text}"
    );
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn latest_json_comes_only_from_the_cdn() {
    let fixture = Fixture::new();
    let mirror = mirror_of(&fixture);
    mirror.put(
        cdn::LATEST_PATH,
        Latest {
            version: "9.9.9".into(),
        }
        .to_json_pretty(),
    );
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(404));
    let error = fixture
        .builder()
        .version("latest")
        .mirror(mirror.url())
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("GET {}/latest.json: HTTP status 404", fixture.server.url())
    );
    assert!(
        mirror.requests_for(cdn::LATEST_PATH).is_empty(),
        "a mirror never names the version"
    );
}

#[test]
fn fetch_mirror_is_repeatable_and_tried_in_order() {
    let fixture = Fixture::new();
    let dead = FaultServer::start();
    let mirror = mirror_of(&fixture);
    fixture.server.fault_always(&rootfs_path(), Fault::Status(403));
    let dest = tempfile::tempdir().unwrap();
    run_ok(
        fixture
            .fetch_command(dest.path())
            .args(["--mirror", &dead.url(), "--mirror", &mirror.url()]),
    );
    assert_eq!(
        std::fs::read(dest.path().join(VERSION).join(cdn::ROOTFS_FILE)).unwrap(),
        fixture.rootfs
    );
    assert_eq!(
        dead.requests_for(&rootfs_path()).len(),
        1,
        "the first mirror is asked first (404 there)"
    );
    assert_eq!(mirror.requests_for(&rootfs_path()).len(), 1);
}

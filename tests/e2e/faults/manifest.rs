//! Served manifests that are refused before any asset is requested: unsafe paths, a wrong
//! schema version, a missing arch, a pinned digest that does not match, duplicate keys, a
//! recorded rootfs root hash that disagrees with the command line.

use boot_assets::asset_manager::{AssetError, PreparedAssets};
use boot_assets::cdn;

use super::rootfs_requests;
use crate::cdn_fixture::{kernel_path, rootfs_path, Fixture, ARCH, VERSION};
use crate::fault_server::Request;
use crate::support::sha256_hex;

/// A fresh fixture that serves its manifest's text as `edit` rewrites it; asserts that a prepare
/// fails with an error containing `reason`, and returns the fixture for more checks.
fn refused_edited_manifest(edit: impl FnOnce(&str) -> String, reason: &str) -> Fixture {
    let fixture = Fixture::new();
    fixture.serve_manifest_text(&edit(&fixture.manifest.to_json_pretty()));
    let error = fixture.manager().prepare().unwrap_err().to_string();
    assert!(error.contains(reason), "{error}");
    fixture
}

/// A prepare with the manifest's sha256 pinned to `sha256`.
fn prepare_pinned(fixture: &Fixture, sha256: &str) -> Result<PreparedAssets, AssetError> {
    fixture
        .builder()
        .expected_manifest_sha256(sha256)
        .build()
        .unwrap()
        .prepare()
}

#[test]
fn manifest_path_with_dotdot_is_refused_before_any_request() {
    let fixture = refused_edited_manifest(
        |text| text.replace(&rootfs_path(), "asset/../../../etc/passwd"),
        "targets.x86_64.rootfs.path: \"asset/../../../etc/passwd\" has a `..` component",
    );
    let requested: Vec<String> = fixture.server.requests().into_iter().map(|r: Request| r.path).collect();
    assert_eq!(requested, vec![format!("/{}", cdn::manifest_path(VERSION))]);
    assert!(
        !fixture.version_dir().join(cdn::MANIFEST_FILE).exists(),
        "a refused manifest is not kept"
    );
}

#[test]
fn wrong_schema_version_and_missing_arch_are_clear_errors() {
    refused_edited_manifest(
        |text| text.replace("\"schema_version\": 1", "\"schema_version\": 2"),
        "schema_version: is 2 but must equal the major component",
    );

    let fixture = Fixture::new();
    let error = fixture
        .builder()
        .arch(boot_assets::Arch::Arm64)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "manifest of version 1.2.3 has no target for arm64 (it has: x86_64)"
    );
    assert_eq!(rootfs_requests(&fixture).len(), 0);
}

// ---- Pinned manifest digest (item 9) ----

#[test]
fn a_wrong_pinned_manifest_digest_is_refused_before_the_manifest_is_used() {
    let fixture = Fixture::new();
    let actual = sha256_hex(fixture.manifest.to_json_pretty().as_bytes());
    let wrong = "0".repeat(64);
    let error = prepare_pinned(&fixture, &wrong).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/{}: the manifest's sha256 is {actual}, not the pinned {wrong}; refusing to use it",
            fixture.server.url(),
            cdn::manifest_path(VERSION)
        )
    );
    assert!(rootfs_requests(&fixture).is_empty());
    assert!(!fixture.version_dir().join(cdn::MANIFEST_FILE).exists());

    prepare_pinned(&fixture, &actual).unwrap();
    fixture.assert_installed();
    // A cached manifest that no longer has the pinned digest is not used: it is fetched again.
    let cached = fixture.version_dir().join(cdn::MANIFEST_FILE);
    let mut edited = std::fs::read_to_string(&cached).unwrap();
    edited.push(' ');
    std::fs::write(&cached, edited).unwrap();
    let before = fixture.server.requests_for(&cdn::manifest_path(VERSION)).len();
    prepare_pinned(&fixture, &actual).unwrap();
    assert_eq!(
        fixture.server.requests_for(&cdn::manifest_path(VERSION)).len(),
        before + 1
    );
}

#[test]
fn duplicate_arch_keys_in_a_served_manifest_are_refused() {
    let twice_x86_64 = |text: &str| {
        let start = text.find("\"x86_64\": {").unwrap();
        let end = text[start..].find("\n    }").unwrap() + start + "\n    }".len();
        let target = &text[start..end];
        text.replacen(target, &format!("{target},\n    {target}"), 1)
    };
    let fixture = refused_edited_manifest(
        twice_x86_64,
        "duplicate arch key `x86_64`: each arch may appear only once",
    );
    assert!(rootfs_requests(&fixture).is_empty());
}

// ---- The verified root: the command line and the recorded root hash ----

/// The served manifest with a verified-root command line whose table has root hash
/// `in_cmdline`, and `recorded` as `rootfs_verity_root_hash`.
fn with_verified_root(text: &str, in_cmdline: &str, recorded: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
    let target = &mut value["targets"][ARCH.as_str()];
    target["kernel_cmdline"] = format!(
        "console=ttyS0 dm-mod.create=\"rootfs,,0,ro,0 8 verity 1 /dev/vda /dev/vda 4096 4096 1 1 sha256 \
         {in_cmdline} {}\" dm-mod.waitfor=/dev/vda root=/dev/dm-0 ro rootfstype=erofs earlycon",
        "5".repeat(64)
    )
    .into();
    target["rootfs_verity_root_hash"] = recorded.into();
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn a_recorded_root_hash_that_disagrees_with_the_command_line_is_refused_before_any_asset() {
    let (in_cmdline, recorded) = ("a".repeat(64), "b".repeat(64));
    let fixture = refused_edited_manifest(
        |text| with_verified_root(text, &in_cmdline, &recorded),
        &format!(
            "targets.x86_64.rootfs_verity_root_hash: is {recorded} but kernel_cmdline's dm-verity table has root \
             hash {in_cmdline}: the two must agree"
        ),
    );
    assert!(rootfs_requests(&fixture).is_empty());
    assert!(fixture.server.requests_for(&kernel_path()).is_empty());
    assert!(!fixture.version_dir().join(cdn::MANIFEST_FILE).exists());

    // The same manifest with the two in agreement installs, and its command line is the one
    // the runtime gets.
    let agreeing = Fixture::new();
    agreeing.serve_manifest_text(&with_verified_root(
        &agreeing.manifest.to_json_pretty(),
        &in_cmdline,
        &in_cmdline,
    ));
    let prepared = agreeing.manager().prepare().unwrap();
    assert!(
        prepared.kernel_cmdline.contains(&in_cmdline),
        "{}",
        prepared.kernel_cmdline
    );
    agreeing.assert_installed();
}

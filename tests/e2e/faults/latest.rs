//! `latest.json`: the offline warm start, and a signed `latest.json` that moves back or is
//! replayed.

use boot_assets::asset_manager::{AssetError, AssetManagerBuilder};
use boot_assets::cdn;

use crate::cdn_fixture::{Fixture, VERSION};
use crate::fault_server::Fault;
use crate::signature::SignedFixture;

/// A manager of `latest` that gives up at the first failure, so a fault answers at once.
fn latest_without_retries(fixture: &Fixture) -> AssetManagerBuilder {
    fixture.builder().version("latest").retries(0)
}

#[test]
fn offline_latest_uses_the_last_fully_verified_version_and_says_so() {
    let fixture = Fixture::new();
    let first = fixture.builder().version("latest").build().unwrap().prepare().unwrap();
    assert_eq!(first.offline_fallback, None);
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let before = fixture.server.requests().len();
    let offline = latest_without_retries(&fixture).build().unwrap().prepare().unwrap();
    assert_eq!(offline.version, VERSION);
    let reason = offline.offline_fallback.expect("the fallback is reported");
    assert!(reason.contains("latest.json") && reason.contains("503"), "{reason}");
    let after: Vec<String> = fixture.server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        after,
        vec![format!("/{}", cdn::LATEST_PATH)],
        "only latest.json was asked for"
    );

    // Not fully verified any more: no fallback, the fetch error is the answer.
    std::fs::remove_file(fixture.version_dir().join(cdn::ROOTFS_FILE)).unwrap();
    let error = latest_without_retries(&fixture).build().unwrap().prepare().unwrap_err();
    assert!(
        matches!(error, AssetError::Transfer { .. } | AssetError::HttpStatus { .. }),
        "{error:?}"
    );
}

/// Serves `latest.json` naming `version`, signed by the fixture's key pair; returns (bytes,
/// signature).
fn serve_signed_latest(signed: &SignedFixture, version: &str) -> (String, String) {
    let latest = boot_assets::Latest {
        version: version.into(),
    }
    .to_json_pretty();
    let signature = crate::signature::sign(&signed.pair, latest.as_bytes(), signed.dir.path());
    signed.fixture.server.put(cdn::LATEST_PATH, latest.clone());
    signed
        .fixture
        .server
        .put(&cdn::signature_path(cdn::LATEST_PATH), signature.clone());
    (latest, signature)
}

#[test]
fn a_signed_latest_json_moving_back_or_replayed_is_refused_naming_both_versions() {
    let signed = SignedFixture::new("release");
    let (fixture, key) = (&signed.fixture, signed.public_key());
    let with_key = || fixture.builder().version("latest").trusted_public_key(key.clone());

    // An older release was current once; the client saw it.
    let (old_latest, old_signature) = serve_signed_latest(&signed, "1.0.0");
    assert_eq!(with_key().build().unwrap().resolve_version().unwrap(), "1.0.0");
    // Then the new one, fully installed.
    serve_signed_latest(&signed, VERSION);
    with_key().build().unwrap().prepare().unwrap();

    // A replay of the old, validly signed latest.json is refused before anything is fetched.
    fixture.server.put(cdn::LATEST_PATH, old_latest);
    fixture
        .server
        .put(&cdn::signature_path(cdn::LATEST_PATH), old_signature);
    let error = with_key().build().unwrap().prepare().unwrap_err();
    assert!(matches!(error, AssetError::Rollback { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}/latest.json names version 1.0.0, lower than version {VERSION} verified before: refusing to roll \
             back (a replayed or stale latest.json?)",
            fixture.server.url()
        )
    );

    // A freshly signed latest.json that moves back is refused the same way.
    serve_signed_latest(&signed, "1.2.2");
    let error = with_key().build().unwrap().prepare().unwrap_err().to_string();
    assert!(
        error.contains("names version 1.2.2, lower than version 1.2.3"),
        "{error}"
    );

    // A latest.json whose signature does not match it is refused too.
    fixture.server.put(
        cdn::LATEST_PATH,
        boot_assets::Latest {
            version: "9.9.9".into(),
        }
        .to_json_pretty(),
    );
    let error = with_key().build().unwrap().prepare().unwrap_err();
    assert!(matches!(error, AssetError::Signature { .. }), "{error:?}");
}

#[test]
fn offline_fallback_with_a_key_needs_a_signed_resolution() {
    let signed = SignedFixture::new("release");
    let (fixture, key) = (&signed.fixture, signed.public_key());
    // Resolved without a key: not good enough for a client that trusts one.
    fixture.builder().version("latest").build().unwrap().prepare().unwrap();
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let keyed = || latest_without_retries(fixture).trusted_public_key(key.clone());
    assert!(keyed().build().unwrap().prepare().is_err());

    fixture.server.heal();
    serve_signed_latest(&signed, VERSION);
    keyed().build().unwrap().prepare().unwrap();
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let offline = keyed().build().unwrap().prepare().unwrap();
    assert!(offline.offline_fallback.is_some());
}

//! Transfer faults: resets, short and wrong bodies, HTTP errors, refused resumes and redirects,
//! each against the fault-injecting server, each asserting the end state.

use boot_assets::asset_manager::AssetError;
use boot_assets::cdn;

use super::{rootfs_requests, CUT_AT};
use crate::cdn_fixture::{rootfs_path, Fixture, ROOTFS_BYTES};
use crate::fault_server::Fault;
use crate::support::sha256_hex;

fn resumed_from(requests: &[Option<u64>]) -> u64 {
    requests[1].expect("the second request resumes with a Range header")
}

/// A fresh fixture whose rootfs answers its first requests with `faults`, one each, in turn;
/// asserts that a prepare still installs everything, and returns the fixture and the Range starts
/// of its rootfs requests.
fn installed_despite(faults: &[Fault]) -> (Fixture, Vec<Option<u64>>) {
    let fixture = Fixture::new();
    for fault in faults {
        fixture.server.fault_once(&rootfs_path(), fault.clone());
    }
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    (fixture, requests)
}

#[test]
fn connection_reset_mid_body_resumes() {
    let (fixture, requests) = installed_despite(&[Fault::ResetAfter(CUT_AT)]);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let resumed = resumed_from(&requests);
    assert!(resumed > 0 && resumed <= CUT_AT as u64, "resumed from {resumed}");
    assert!(fixture.partial_files().is_empty());
}

#[test]
fn body_shorter_than_content_length_resumes() {
    let (_fixture, requests) = installed_despite(&[Fault::ShortBody(CUT_AT)]);
    assert_eq!(requests, vec![None, Some(CUT_AT as u64)]);
}

#[test]
fn wrong_bytes_once_restart_from_scratch() {
    let (_fixture, requests) = installed_despite(&[Fault::WrongBytes]);
    assert_eq!(requests, vec![None, None]);
}

#[test]
fn wrong_bytes_twice_fail_naming_object_and_digests() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::WrongBytes);
    let error = fixture.manager().prepare().unwrap_err();
    let mut wrong = fixture.rootfs.clone();
    wrong[ROOTFS_BYTES / 2] ^= 0xff;
    let expected = sha256_hex(&fixture.rootfs);
    let actual = sha256_hex(&wrong);
    assert_eq!(
        error.to_string(),
        format!(
            "rootfs from {}: sha256 mismatch: expected {expected}, got {actual}",
            fixture.rootfs_url()
        )
    );
    assert_eq!(rootfs_requests(&fixture).len(), 2, "one retry from scratch, then fail");
    assert!(!fixture.version_dir().join(cdn::ROOTFS_FILE).exists());
    assert!(fixture.partial_files().is_empty(), "a mismatching download is deleted");
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn not_found_names_the_url_and_is_not_retried() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::Status(404));
    let error = fixture.manager().prepare().unwrap_err();
    assert!(matches!(error, AssetError::HttpStatus { status: 404, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("GET {}: HTTP status 404", fixture.rootfs_url())
    );
    assert_eq!(rootfs_requests(&fixture).len(), 1);
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn server_errors_are_retried_until_success() {
    let (_fixture, requests) = installed_despite(&[Fault::Status(500), Fault::Status(503)]);
    assert_eq!(requests.len(), 3);
}

#[test]
fn server_errors_give_up_after_the_retries() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::Status(503));
    let error = fixture.builder().retries(2).build().unwrap().prepare().unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("HTTP status 503 (gave up after 3 attempt(s))"),
        "{error}"
    );
    assert_eq!(rootfs_requests(&fixture).len(), 3);
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn resume_answered_with_200_restarts_from_zero() {
    let (fixture, requests) = installed_despite(&[Fault::ResetAfter(CUT_AT), Fault::IgnoreRange]);
    assert_eq!(requests.len(), 2);
    assert!(requests[1].is_some(), "the second request asked for a range");
    let served = fixture.server.bytes_served(&rootfs_path());
    assert_eq!(served, (CUT_AT + ROOTFS_BYTES) as u64, "the 200 body was taken whole");
}

/// A cut download whose resume request is answered with `answer`: the client asks for the rest,
/// refuses the answer, and downloads the file again from zero.
fn resume_refused_restarts_from_zero(answer: Fault) {
    let (_fixture, requests) = installed_despite(&[Fault::ResetAfter(CUT_AT), answer]);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[1].is_some() && requests[2].is_none(), "{requests:?}");
}

crate::support::test_per_case!(resume_refused_restarts_from_zero {
    range_not_satisfiable_restarts_from_zero: Fault::RangeNotSatisfiable,
    content_range_not_matching_the_request_restarts_from_zero: Fault::WrongContentRange,
});

#[test]
fn redirect_loop_is_refused_naming_the_url() {
    let fixture = Fixture::new();
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo(format!("/{}", rootfs_path())));
    let error = fixture.manager().prepare().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("GET {}: more than 5 redirects (a redirect loop?)", fixture.rootfs_url())
    );
    assert_eq!(rootfs_requests(&fixture).len(), 6, "the loop is cut, not retried");
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn a_redirect_is_followed_with_its_range() {
    let fixture = Fixture::new();
    fixture.server.put("mirror/rootfs", fixture.rootfs.clone());
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo("/mirror/rootfs".into()));
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let mirror = fixture.server.requests_for("mirror/rootfs");
    assert_eq!(mirror.len(), 1);
    assert!(mirror[0].range_from.is_some(), "the Range header survives the redirect");
}

//! One overall deadline for `prepare()` / `prepare_binaries()` (`fetch --deadline`): when it
//! passes the call fails at once with a clear error, and the partial download it leaves is
//! resumed by the next call.

use std::time::{Duration, Instant};

use boot_assets::asset_manager::AssetError;

use super::rootfs_requests;
use crate::cdn_fixture::{rootfs_path, Fixture, ROOTFS_BYTES};
use crate::support::run_fails;

/// Body rate of the slow server: the fixture rootfs takes about 8 s at it.
const SLOW_BYTES_PER_SECOND: u64 = 256 * 1024;

#[test]
fn the_deadline_ends_a_slow_prepare_and_the_next_one_resumes() {
    let fixture = Fixture::new();
    fixture.server.throttle(Some(SLOW_BYTES_PER_SECOND));
    let started = Instant::now();
    let error = fixture
        .builder()
        .deadline(Duration::from_millis(1500))
        .connections(1)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, AssetError::Deadline { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("the deadline of 1.5 s for this call passed during GET "),
        "{error}"
    );
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    fixture.assert_no_corrupt_final_file();
    assert_eq!(fixture.partial_files().len(), 1, "the partial download is kept");

    fixture.server.throttle(None);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let resumed = rootfs_requests(&fixture).last().copied().flatten();
    assert!(resumed.is_some_and(|from| from > 0), "{:?}", rootfs_requests(&fixture));
    assert!(fixture.server.bytes_served(&rootfs_path()) < 2 * ROOTFS_BYTES as u64);
}

#[test]
fn the_deadline_is_not_waited_past_for_a_retry_after() {
    let (_fixture, error, elapsed) =
        super::prepare_while_unavailable("30", |builder| builder.deadline(Duration::from_secs(3)));
    assert!(matches!(error, AssetError::Deadline { .. }), "{error:?}");
    assert!(elapsed < Duration::from_secs(3), "waited for nothing");
}

#[test]
fn fetch_deadline_fails_with_the_error_and_a_rerun_completes() {
    let fixture = Fixture::new();
    fixture.server.throttle(Some(SLOW_BYTES_PER_SECOND));
    let dest = tempfile::tempdir().unwrap();
    let stderr = run_fails(
        fixture
            .fetch_command(dest.path())
            .args(["--deadline", "1", "--connections", "1"]),
    );
    assert!(
        stderr.contains("the deadline of 1 s for this call passed during GET"),
        "{stderr}"
    );
    fixture.server.throttle(None);
    crate::support::run_ok(&mut fixture.fetch_command(dest.path()));
    assert!(
        rootfs_requests(&fixture).last().unwrap().is_some(),
        "the re-run resumed"
    );
}

//! `Retry-After` on 429/503: honoured (seconds and HTTP-date) within the caller's bounds, and
//! shown in progress. Before, a 503 with `Retry-After` was retried on the client's own short
//! backoff and given up on while the server was still asking for time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use boot_assets::asset_manager::{AssetError, Phase};

use crate::cdn_fixture::{rootfs_path, Fixture};
use crate::fault_server::Fault;

/// Serves the rootfs as `503` with `Retry-After: {value}` for `unavailable`, then normally;
/// prepares with the fixture's short backoff (10 ms, 3 retries) and returns the waits reported
/// (how long, whether the server asked) and the time the prepare took.
fn prepare_through_unavailable(value: &str, unavailable: Duration) -> (Vec<(Duration, bool)>, Duration) {
    let fixture = Fixture::new();
    let until = Instant::now() + unavailable;
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::UnavailableUntil(until, value.to_owned()));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let seen = waits.clone();
    let started = Instant::now();
    fixture
        .builder()
        .progress(move |progress| {
            if progress.phase == Phase::Waiting && progress.name == "rootfs" {
                seen.lock()
                    .unwrap()
                    .push((progress.retry_in.unwrap(), progress.server_asked));
            }
        })
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    let elapsed = started.elapsed();
    fixture.assert_installed();
    let waits = waits.lock().unwrap().clone();
    (waits, elapsed)
}

#[test]
fn retry_after_seconds_is_waited_for_and_shown_in_progress() {
    let (waits, elapsed) = prepare_through_unavailable("1", Duration::from_millis(2500));
    assert!(elapsed >= Duration::from_millis(2500), "took {elapsed:?}");
    assert_eq!(waits.len(), 3, "{waits:?}");
    for (wait, asked) in waits {
        assert!(asked, "the wait is the server's");
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
    }
}

#[test]
fn retry_after_as_an_http_date_is_waited_for() {
    let moment = SystemTime::now() + Duration::from_secs(3);
    let (waits, elapsed) = prepare_through_unavailable(&httpdate::fmt_http_date(moment), Duration::from_millis(1500));
    assert!(elapsed >= Duration::from_millis(1500), "took {elapsed:?}");
    let (first_wait, asked) = waits[0];
    assert!(asked);
    // An HTTP-date has whole seconds: 3 s from now is at least 2 s away.
    assert!(first_wait >= Duration::from_secs(2), "{waits:?}");
}

#[test]
fn a_retry_after_beyond_the_callers_bound_ends_the_attempts_at_once() {
    let (fixture, error, elapsed) =
        super::prepare_while_unavailable("120", |builder| builder.max_retry_after(Duration::from_secs(5)));
    assert!(elapsed < Duration::from_secs(5), "it waited");
    assert!(matches!(error, AssetError::Transfer { attempts: 1, .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .ends_with("HTTP status 503; the server asks to retry after 120 s, more than the 5 s allowed (gave up after 1 attempt(s))"),
        "{error}"
    );
    fixture.assert_no_corrupt_final_file();
}

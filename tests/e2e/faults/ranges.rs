//! Parallel ranges: a large object of known size on a slow link (here a per-connection rate
//! limit) is split over several connections into one verified file; an interrupted split
//! resumes every segment; a server that refuses ranges is read in one stream.

use std::time::{Duration, Instant};

use super::rootfs_requests;
use crate::cdn_fixture::{rootfs_path, Fixture};
use crate::fault_server::{Fault, Request};

/// A rootfs large enough to be split (the rest must be at least 8 MiB).
const LARGE_BYTES: usize = 24 * 1024 * 1024 + 4321;

/// Per-connection rate of the slow server: one stream takes about 8 s for the large rootfs.
const PER_CONNECTION: u64 = 3 * 1024 * 1024;

/// The rootfs requests that asked for a closed range (`bytes=N-M`): the split's segments.
fn segment_requests(fixture: &Fixture) -> Vec<Request> {
    fixture
        .server
        .requests_for(&rootfs_path())
        .into_iter()
        .filter(|request| request.range_to.is_some())
        .collect()
}

/// Segment files (`.partial-…-…` with a range) left in the version directory.
fn segment_files(fixture: &Fixture) -> Vec<std::path::PathBuf> {
    fixture
        .partial_files()
        .into_iter()
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(|c: char| c.is_ascii_digit())
        })
        .collect()
}

#[test]
fn a_slow_large_object_is_split_over_connections_into_one_verified_file() {
    let fixture = Fixture::with_rootfs_bytes(LARGE_BYTES);
    fixture.server.throttle(Some(PER_CONNECTION));
    let started = Instant::now();
    fixture.builder().connections(4).build().unwrap().prepare().unwrap();
    let elapsed = started.elapsed();
    fixture.assert_installed();
    let segments = segment_requests(&fixture);
    assert_eq!(segments.len(), 3, "{segments:?}");
    assert!(fixture.partial_files().is_empty(), "{:?}", fixture.partial_files());
    // One stream would take LARGE_BYTES / PER_CONNECTION ≈ 8 s.
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    // Each byte is fetched once; the server also counts what it wrote into the socket buffers
    // of the stream that stopped where the first segment starts (never read).
    let served = fixture.server.bytes_served(&rootfs_path());
    assert!(served < LARGE_BYTES as u64 * 5 / 4, "served {served}");
}

#[test]
fn an_interrupted_split_resumes_every_segment() {
    let fixture = Fixture::with_rootfs_bytes(LARGE_BYTES);
    fixture.server.throttle(Some(PER_CONNECTION));
    let error = fixture
        .builder()
        .connections(4)
        .deadline(Duration::from_millis(2500))
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    assert!(error.to_string().starts_with("the deadline of 2.5 s"), "{error}");
    assert_eq!(segment_files(&fixture).len(), 3, "{:?}", fixture.partial_files());
    fixture.assert_no_corrupt_final_file();

    fixture.builder().connections(4).build().unwrap().prepare().unwrap();
    fixture.assert_installed();
    // The threads ask in any order: compare the rounds segment by segment (by their end).
    let round = |skip: usize| {
        let mut requests: Vec<Request> = segment_requests(&fixture).into_iter().skip(skip).take(3).collect();
        requests.sort_by_key(|request| request.range_to);
        requests
    };
    let (first_round, resumed) = (round(0), round(3));
    assert_eq!(segment_requests(&fixture).len(), 6, "{:?}", segment_requests(&fixture));
    // A segment resumes where its file ends, not at its start.
    for (before, after) in first_round.iter().zip(&resumed) {
        assert!(after.range_from > before.range_from, "{before:?} then {after:?}");
        assert_eq!(after.range_to, before.range_to);
    }
    // Nothing was fetched twice (a restart would serve at least twice the size); the socket
    // buffers of the streams that stopped account for the rest.
    let served = fixture.server.bytes_served(&rootfs_path());
    assert!(served < LARGE_BYTES as u64 * 5 / 4, "served {served}");
    assert!(fixture.partial_files().is_empty());
}

#[test]
fn a_server_that_refuses_ranges_is_read_in_one_stream() {
    let fixture = Fixture::with_rootfs_bytes(LARGE_BYTES);
    fixture.server.throttle(Some(2 * PER_CONNECTION));
    fixture.server.fault_always(&rootfs_path(), Fault::IgnoreRange);
    fixture.builder().connections(4).build().unwrap().prepare().unwrap();
    fixture.assert_installed();
    assert!(fixture.partial_files().is_empty(), "{:?}", fixture.partial_files());
    let requests = rootfs_requests(&fixture);
    assert!(requests.len() <= 6, "{requests:?}");
}

//! The AssetManager's fault suite: one test per fault, each against the fault-injecting server,
//! each asserting the end state (installed and verified, or a clear error) and that no corrupt
//! file ever sits at a final path.
//!
//! One submodule per area; the helpers all of them use are here.

mod bounded_time;
mod cache;
mod concurrency;
mod deadline;
mod durability;
mod headers;
mod latest;
mod manifest;
mod messages;
mod mirrors;
mod network;
mod ranges;
mod retry_after;
mod size;

use std::time::{Duration, Instant};

use boot_assets::asset_manager::{AssetError, AssetManagerBuilder};

use crate::cdn_fixture::{rootfs_path, Fixture};
use crate::fault_server::Fault;

/// Where the faults below cut the rootfs body.
const CUT_AT: usize = 700_000;

/// A fresh fixture whose rootfs answers `503` with `Retry-After: {retry_after}` for the next
/// ten minutes; prepares it with `configure` applied to the builder, which must fail, and
/// returns the error and how long the prepare took.
fn prepare_while_unavailable(
    retry_after: &str,
    configure: impl FnOnce(AssetManagerBuilder) -> AssetManagerBuilder,
) -> (Fixture, AssetError, Duration) {
    let fixture = Fixture::new();
    let until = Instant::now() + Duration::from_secs(600);
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::UnavailableUntil(until, retry_after.to_owned()));
    let started = Instant::now();
    let error = configure(fixture.builder()).build().unwrap().prepare().unwrap_err();
    let elapsed = started.elapsed();
    (fixture, error, elapsed)
}

fn rootfs_requests(fixture: &Fixture) -> Vec<Option<u64>> {
    fixture
        .server
        .requests_for(&rootfs_path())
        .into_iter()
        .map(|r| r.range_from)
        .collect()
}

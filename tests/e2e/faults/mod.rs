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

use crate::cdn_fixture::{rootfs_path, Fixture};

/// Where the faults below cut the rootfs body.
const CUT_AT: usize = 700_000;

fn rootfs_requests(fixture: &Fixture) -> Vec<Option<u64>> {
    fixture
        .server
        .requests_for(&rootfs_path())
        .into_iter()
        .map(|r| r.range_from)
        .collect()
}

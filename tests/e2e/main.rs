//! The end-to-end suite: one integration-test crate, one submodule per area.
//!
//! Run it with `cargo test --test e2e`. Tests drive the real `cargo xtask` binary and real tools;
//! a missing tool fails the test with the line that installs it.

mod bench;
mod boot;
mod boot_modes;
mod boot_support;
mod cdn_fixture;
mod containers;
mod containers_support;
mod contract;
mod dist;
mod docker;
mod fault_server;
mod faults;
mod fetch;
mod fex;
mod fixtures;
mod init_scripts;
mod interop;
mod kernel;
mod live;
mod nginx;
mod publish;
mod publish_boot;
mod publish_support;
mod recipe;
mod reproducible;
mod rootfs;
mod signature;
mod storage;
mod support;
mod sync_binaries;
mod tidy;
mod verity;
mod workflows;

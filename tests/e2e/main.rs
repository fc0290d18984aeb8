//! The end-to-end suite: one integration-test crate, one submodule per area.
//!
//! Run it with `cargo test --test e2e`. Tests drive the real `cargo xtask` binary and real tools;
//! a missing tool fails the test with the line that installs it.

mod boot;
mod boot_support;
mod kernel;
mod support;

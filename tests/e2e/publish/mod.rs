//! `cargo xtask publish`, `keygen` and `verify-published` against a real S3-compatible server
//! (`rclone serve s3` on loopback) with nginx serving the same directory as the CDN, on two-arch
//! releases made by the real `release` and `merge-manifest` commands.
//!
//! One submodule per area; the helpers are in `publish_support.rs`.

mod bucket;
mod github;
mod keys;
mod preflight;
mod remote;

//! `cargo xtask sync-binaries`: downloads the pinned upstream files of the runtime binaries,
//! extracts and stages them, and writes the binaries fragment.
//!
//! - `config`: `manifests/binaries.toml` parsing, validation and pinning.
//! - `extract`: one member out of a `.tgz`, streamed.

// The command itself is wired to the library's downloader when it lands.
#![allow(dead_code)]

mod config;
mod extract;

//! The boot-assets consumer library: the one contract between the release pipeline and the
//! runtime that boots the microVM.
//!
//! - [`manifest`]: the `manifest.json` / `latest.json` types, parsing and validation.
//! - [`cdn`]: where every object lives on the CDN, relative to its base URL.
//! - [`sidecar`]: the `sha256sum` sidecar format of the release tarballs.
//! - [`fsutil`]: atomic writes (temporary file beside the target, then rename).
//! - [`asset_manager`]: the [`AssetManager`] that fetches, verifies and installs a version's
//!   boot assets and runtime binaries from the CDN (the only module that does I/O on its own).

pub mod asset_manager;
pub mod cdn;
pub mod fsutil;
pub mod manifest;
pub mod sidecar;

pub use asset_manager::{AssetError, AssetManager};
pub use manifest::{Arch, Binary, FileEntry, KernelEntry, Latest, Manifest, ManifestError, Target};

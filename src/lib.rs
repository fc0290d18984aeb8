//! The boot-assets consumer library: the one contract between the release pipeline and the
//! runtime that boots the microVM.
//!
//! - [`manifest`]: the `manifest.json` / `latest.json` types, parsing and validation.
//! - [`cdn`]: where every object lives on the CDN, relative to its base URL.
//! - [`sidecar`]: the `sha256sum` sidecar format of the release tarballs.
//! - [`fsutil`]: atomic writes (temporary file beside the target, then rename).
//!
//! It reads and writes nothing on its own; callers hand it bytes, values and paths.

pub mod cdn;
pub mod fsutil;
pub mod manifest;
pub mod sidecar;

pub use manifest::{Arch, Binary, FileEntry, KernelEntry, Latest, Manifest, ManifestError, Target};

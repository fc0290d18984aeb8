//! The one Debian service of the pipeline: fetching from any suite (bookworm, trixie, sid),
//! binary or source, locking by digest, and unpacking what a build needs — used by the rootfs,
//! the kernel source, `fetch-packages` and the builds from source packages.
//!
//! - [`suite`]: the suites and the private `sources.list` of each, from the host's archive address
//! - [`apt`]: private apt state per suite and arch; resolving names to lock entries; downloads
//! - [`lock`]: lock files of binary package files and source packages
//! - [`fetch`]: locked files from the digest-named download cache, verified before use
//! - [`deb`]: a `.deb` unpacked in memory; [`root`]: packages unpacked into a cached private root
//! - [`source`]: a source package unpacked with Debian's patches and ours
//!
//! Nothing here installs anything on the host or reads its package database.

pub mod apt;
pub mod deb;
pub mod fetch;
pub mod lock;
pub mod root;
pub mod source;
pub mod suite;

pub use apt::Apt;
pub use fetch::fetch_locked;
pub use lock::{Lock, LockedPackage, LockedSource};
pub use root::private_root;
pub use source::{patches_in, unpack_source};
pub use suite::Suite;

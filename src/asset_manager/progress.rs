//! The progress layer: what the AssetManager tells its caller while it works, and the one
//! reporter of removed links. Every other layer reports through these functions; this file
//! imports from none of them.
//!
//! Reads and writes nothing: it only calls the caller's callback.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The stage an object is in, as reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking at what is already on disk.
    Checking,
    /// Receiving bytes from the CDN.
    Downloading,
    /// Hashing bytes already on disk (a kept partial download, or a file without a record).
    Verifying,
    /// Waiting before the next attempt: [`Progress::retry_in`] says how long, and whether the
    /// server asked for it (`Retry-After`).
    Waiting,
    /// Downloaded, verified and installed.
    Ready,
    /// Already installed and verified; nothing was fetched.
    Cached,
    /// A link (or FIFO, socket, device) found where a file of ours belongs was removed, never
    /// followed; `name` is its path.
    RemovedLink,
}

/// One progress report.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The object: `manifest`, `kernel`, `rootfs`, or a binary's name.
    pub name: &'a str,
    /// What is happening to it.
    pub phase: Phase,
    /// Bytes done in this phase (received, or hashed).
    pub bytes_done: u64,
    /// Bytes in all, when known.
    pub bytes_total: Option<u64>,
    /// With [`Phase::Waiting`]: how long until the next attempt.
    pub retry_in: Option<Duration>,
    /// With [`Phase::Waiting`]: true when the wait is the server's `Retry-After`, false for the
    /// client's own backoff.
    pub server_asked: bool,
}

/// The progress callback; it is called from download threads, so it must be `Send + Sync`.
pub type ProgressCallback = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Reports `phase` of `object` with its byte counts.
pub(crate) fn report(
    progress: &ProgressCallback,
    object: &str,
    phase: Phase,
    bytes_done: u64,
    bytes_total: Option<u64>,
) {
    progress(&Progress {
        name: object,
        phase,
        bytes_done,
        bytes_total,
        retry_in: None,
        server_asked: false,
    });
}

/// Reports that `object` waits `wait` before its next attempt.
pub(crate) fn report_wait(progress: &ProgressCallback, object: &str, wait: Duration, server_asked: bool) {
    progress(&Progress {
        name: object,
        phase: Phase::Waiting,
        bytes_done: 0,
        bytes_total: None,
        retry_in: Some(wait),
        server_asked,
    });
}

/// A callback that does nothing.
pub(crate) fn silent() -> ProgressCallback {
    Arc::new(|_: &Progress<'_>| {})
}

/// Reports a removed link as a [`Phase::RemovedLink`] progress event (the link reporter every
/// directory handle gets).
pub(crate) fn link_reporter(progress: &ProgressCallback) -> Arc<dyn Fn(&Path) + Send + Sync> {
    let progress = progress.clone();
    Arc::new(move |path: &Path| {
        let name = path.display().to_string();
        report(&progress, &name, Phase::RemovedLink, 0, None);
    })
}

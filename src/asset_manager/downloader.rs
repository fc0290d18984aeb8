//! One object at a time with the AssetManager's download rules (resume with `Range`, retries
//! with backoff, sha256 checked while writing, atomic rename), for callers that fetch files a
//! manifest does not list — such as the release pipeline's pinned upstream binaries.
//!
//! Writes only the target (through its `.partial-{sha256}` file beside it).

use std::path::Path;
use std::sync::Arc;

use super::download::{Http, Job};
use super::{AssetError, Progress, ProgressCallback};
use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF};

/// Downloads single objects whose sha256 is known in advance.
pub struct Downloader {
    http: Http,
    progress: ProgressCallback,
}

impl Downloader {
    /// A downloader with the AssetManager's default timeouts and retries; plain http only to
    /// loopback.
    pub fn new() -> Downloader {
        Downloader::with_options(false, Arc::new(|_: &Progress<'_>| {}))
    }

    /// A downloader that may use plain http to any host when `allow_insecure_http`, and reports
    /// progress through `progress`.
    pub fn with_options(allow_insecure_http: bool, progress: ProgressCallback) -> Downloader {
        let http = Http::new(
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_READ_TIMEOUT,
            DEFAULT_RETRIES,
            DEFAULT_RETRY_BACKOFF,
            allow_insecure_http,
        );
        Downloader { http, progress }
    }

    /// Downloads `url` to `target` (mode `mode`) if its bytes hash to `sha256`; a kept partial
    /// file is resumed. `object` names the download in progress reports and errors.
    pub fn download(&self, object: &str, url: &str, sha256: &str, target: &Path, mode: u32) -> Result<(), AssetError> {
        self.http.check_url(url)?;
        let job = Job {
            object: object.to_owned(),
            url: url.to_owned(),
            sha256: sha256.to_owned(),
            target: target.to_path_buf(),
            mode,
        };
        self.http.download(&job, &self.progress)
    }
}

impl Default for Downloader {
    fn default() -> Downloader {
        Downloader::new()
    }
}

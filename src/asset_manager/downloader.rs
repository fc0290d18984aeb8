//! One object at a time with the AssetManager's download rules (resume with `Range`, retries
//! with backoff, sha256 checked while writing, atomic rename), for callers that fetch files a
//! manifest does not list — such as the release pipeline's pinned upstream binaries.
//!
//! Writes only the target (through its `.partial-{name}.{sha256}` file beside it), relative to
//! a handle on the target's directory, never through a link.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::error::AssetError;
use super::http::{Http, Limits};
use super::install::{Context, Job};
use super::progress::{self, ProgressCallback};
use super::ranges::DEFAULT_CONNECTIONS;
use super::safe_fs::Dir;

/// Downloads single objects whose sha256 is known in advance.
pub struct Downloader {
    http: Http,
    progress: ProgressCallback,
}

impl Downloader {
    /// A downloader with the AssetManager's default timeouts and retries; plain http only to
    /// loopback.
    pub fn new() -> Downloader {
        Downloader::with_options(false, progress::silent())
    }

    /// A downloader that may use plain http to any host when `allow_insecure_http`, and reports
    /// progress through `progress`.
    pub fn with_options(allow_insecure_http: bool, progress: ProgressCallback) -> Downloader {
        let http = Http::new(Limits {
            allow_insecure_http,
            ..Limits::default()
        });
        Downloader { http, progress }
    }

    /// Downloads `url` to `target` (mode `mode`) if its bytes hash to `sha256`; a kept partial
    /// file is resumed. `object` names the download in progress reports and errors.
    pub fn download(&self, object: &str, url: &str, sha256: &str, target: &Path, mode: u32) -> Result<(), AssetError> {
        self.http.check_url(url)?;
        let (Some(parent), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str())) else {
            return Err(AssetError::Config(format!(
                "download target {} has no file name",
                target.display()
            )));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let job = Job {
            object: object.to_owned(),
            urls: vec![url.to_owned()],
            sha256: sha256.to_owned(),
            size: None,
            dir: Arc::new(Dir::open_root(parent, progress::link_reporter(&self.progress))?),
            name: name.to_owned(),
            mode,
        };
        let context = Context {
            http: &self.http,
            progress: &self.progress,
            connections: DEFAULT_CONNECTIONS,
        };
        context.download(&job)
    }
}

impl Downloader {
    /// Downloads `url`, whose digest is not known yet, into `dir` as `{dir}/{sha256}` (mode
    /// `mode`, through a temporary file) and returns that sha256. For pinning a new upstream
    /// file: there is no digest to resume or verify against, so a retry starts from zero.
    pub fn download_unpinned(&self, url: &str, dir: &Path, mode: u32) -> Result<String, AssetError> {
        self.http.check_url(url)?;
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(AssetError::io("creating a temporary file in", dir))?;
        let digest = self.http.fetch_into(url, temp.as_file_mut())?;
        let target = dir.join(&digest);
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(AssetError::io("setting the mode of", temp.path()))?;
        temp.persist(&target)
            .map_err(|e| AssetError::io("renaming into place", &target)(e.error))?;
        Ok(digest)
    }
}

impl Default for Downloader {
    fn default() -> Downloader {
        Downloader::new()
    }
}

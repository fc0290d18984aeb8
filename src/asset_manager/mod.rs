//! The AssetManager: fetches, verifies and installs one asset version's boot assets and runtime
//! binaries from the CDN, the way the runtime does on every user's machine.
//!
//! Reads `latest.json` (and `latest.json.minisig` when a key is trusted),
//! `asset/v{version}/manifest.json` (and its `.minisig`) and the objects the manifest names, over
//! HTTP(S) with blocking I/O. Writes `{cache}/{version}/{manifest.json, kernel, rootfs.erofs}` and
//! the runtime binaries, each through a partial file that is hashed while written and renamed
//! into place only once its digest is proven, plus a `.verified` record per file so a warm start
//! does not re-hash, and in `{cache}` the last resolved version ([`LAST_RESOLVED_FILE`]) and the
//! highest version a signed `latest.json` named ([`HIGHEST_VERIFIED_FILE`]). Nothing below the
//! cache dir or the runtime bin dir is reached through a link (see `safe_fs`).
//!
//! # Worst-case duration
//!
//! Every network wait is bounded. One attempt at one object of `S` bytes takes at most
//! `2 × connect_timeout` (name resolution, connection) + `2 × read_timeout` (sending the request,
//! receiving the response headers) + `S / min_transfer_rate + rate_window + read_timeout` (the
//! body: every full window must reach the minimum rate, and the read that ends a window waits at
//! most `read_timeout`). An object gets `retries + 1` attempts with backoff between them (at most
//! 1.5 × the doubling delays), and one more such round after a digest mismatch.
//!
//! With the defaults (connect 15 s, read 30 s, 32 KiB/s over 30 s, 3 retries, 0.5 s backoff):
//! - one attempt: at most 150 s + `S` / 32 KiB/s; a server trickling a byte every few seconds is
//!   abandoned after at most 60 s of body (window + one read);
//! - a document (`latest.json`, a manifest, a signature: a few KiB) gives up after at most
//!   4 × 150 s + 5.25 s ≈ 10.1 min;
//! - `prepare()` of `latest` with a trusted key makes four documents one after the other
//!   (≤ 40.4 min), then downloads kernel and rootfs in parallel: for a largest object of 20 MiB,
//!   at most 2 × (4 × (150 s + 640 s) + 5.25 s) ≈ 105.5 min, so ≤ 2.4 h in all before it fails.
//!   Lower `read_timeout`, `rate_window` or `retries`, or raise `min_transfer_rate`, to shorten
//!   it; the formula holds for any setting (a `Retry-After` wait counts as one backoff of at
//!   most `max_retry_after`, and each mirror adds its own round). A warm `prepare()` of an
//!   installed version makes no request at all.
//! - Or set one bound for the whole call: [`AssetManagerBuilder::deadline`]. When it passes,
//!   `prepare()` / `prepare_binaries()` return [`AssetError::Deadline`] at once; partial
//!   downloads are kept and the next call resumes them.
//!
//! # Layers
//!
//! `progress` (types, the one link reporter) ← `http` (requests, retries, `Retry-After`,
//! deadline, sources) ← `install` + `ranges` (the per-file job: partials, hashing, rename,
//! records) ← this facade; `records` (the three on-disk records, one format) and `safe_fs`
//! (no link followed) serve the install layer and the facade. No layer imports one above it.
//!
//! ```no_run
//! use boot_assets::asset_manager::AssetManager;
//!
//! let manager = AssetManager::builder("https://cdn.example.com")
//!     .version("latest")
//!     .build()?;
//! let assets = manager.prepare()?;
//! println!("boot {} with {:?}", assets.kernel.display(), assets.kernel_cmdline);
//! manager.prepare_binaries("/home/me/.arcbox/runtime/bin".as_ref())?;
//! # Ok::<(), boot_assets::asset_manager::AssetError>(())
//! ```

mod downloader;
mod error;
mod http;
mod install;
mod lock;
mod progress;
mod ranges;
mod records;
mod safe_fs;
mod signature;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use downloader::Downloader;
pub use error::AssetError;
pub use http::{
    DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRY_AFTER, DEFAULT_MIN_TRANSFER_RATE,
    DEFAULT_RATE_WINDOW, DEFAULT_READ_TIMEOUT, DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF,
};
pub use progress::{Phase, Progress, ProgressCallback};
pub use ranges::DEFAULT_CONNECTIONS;
pub use records::{HIGHEST_VERIFIED_FILE, LAST_RESOLVED_FILE};
pub use signature::public_key_base64;

use sha2::Digest;

use crate::cdn;
use crate::manifest::{Arch, FileEntry, Latest, Manifest};
use http::{Deadline, Http, Limits, Sources};
use install::{Context, Job};
use safe_fs::{Dir, Durability};

/// The special version that means "whatever `latest.json` names".
pub const LATEST: &str = "latest";

/// Unix mode of installed boot assets and manifests.
const ASSET_MODE: u32 = 0o644;

/// Unix mode of installed runtime binaries.
const BINARY_MODE: u32 = 0o755;

/// What [`AssetManager::prepare`] installed: everything needed to boot.
#[derive(Debug, Clone)]
pub struct PreparedAssets {
    /// The asset version (resolved from `latest.json` when asked for `latest`).
    pub version: String,
    /// `{cache}/{version}`.
    pub dir: PathBuf,
    /// The verified manifest.
    pub manifest: Manifest,
    /// The installed kernel image.
    pub kernel: PathBuf,
    /// The installed root filesystem image.
    pub rootfs: PathBuf,
    /// The command line to boot the kernel with.
    pub kernel_cmdline: String,
    /// Set when `latest` was asked for, `latest.json` could not be fetched, and the last
    /// resolved version (fully verified in the cache) was used instead: why it could not.
    pub offline_fallback: Option<String>,
}

/// One runtime binary installed by [`AssetManager::prepare_binaries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledBinary {
    /// The binary's name (also its file name).
    pub name: String,
    /// Its upstream version.
    pub version: String,
    /// Where it was installed (mode 0755).
    pub path: PathBuf,
}

/// What [`AssetManager::prune`] removed or left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Versions whose directories were removed.
    pub removed_versions: Vec<String>,
    /// Partial downloads and temporary files removed from the kept versions.
    pub removed_partials: Vec<PathBuf>,
    /// Versions left alone because another process holds their lock.
    pub in_use: Vec<String>,
}

/// Configures an [`AssetManager`]; start with [`AssetManager::builder`].
pub struct AssetManagerBuilder {
    cdn_base_url: String,
    mirrors: Vec<String>,
    version: String,
    arch: Option<Arch>,
    cache_dir: Option<PathBuf>,
    concurrency: usize,
    connections: usize,
    retries: u32,
    retry_backoff: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    min_transfer_rate: u64,
    rate_window: Duration,
    max_retry_after: Duration,
    deadline: Option<Duration>,
    public_keys: Vec<String>,
    expected_manifest_sha256: Option<String>,
    allow_insecure_http: bool,
    progress: Option<ProgressCallback>,
}

/// Builder setters that only store their argument in the field named like the setter, written
/// as `fn field(argument: Type);` so that the documented signature keeps its argument's name.
macro_rules! plain_setters {
    ($($(#[$doc:meta])* fn $field:ident($argument:ident: $type:ty);)*) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $argument: $type) -> Self {
                self.$field = $argument;
                self
            }
        )*
    };
}

impl AssetManagerBuilder {
    /// The version to install: `0.2.0`, or `latest` (the default) to follow `latest.json`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The guest arch; defaults to the host's.
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = Some(arch);
        self
    }

    /// Where versions are installed; defaults to `~/.arcbox/boot`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    plain_setters! {
        /// How many objects download at once (default [`DEFAULT_CONCURRENCY`]).
        fn concurrency(concurrency: usize);
        /// How many times a failing transfer is retried (default [`DEFAULT_RETRIES`]).
        fn retries(retries: u32);
        /// The first retry delay (default [`DEFAULT_RETRY_BACKOFF`]); it doubles per attempt.
        fn retry_backoff(delay: Duration);
        /// Time allowed to open a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
        fn connect_timeout(timeout: Duration);
        /// Time one read may wait for data before the transfer counts as stalled
        /// (default [`DEFAULT_READ_TIMEOUT`]).
        fn read_timeout(timeout: Duration);
        /// The slowest accepted transfer rate in bytes per second, averaged over the rate window
        /// (default [`DEFAULT_MIN_TRANSFER_RATE`]; 0 turns the check off). A transfer below it is
        /// abandoned and retried, resuming where it stopped.
        fn min_transfer_rate(bytes_per_second: u64);
        /// The window the transfer rate is measured over (default [`DEFAULT_RATE_WINDOW`]).
        fn rate_window(window: Duration);
        /// The longest `Retry-After` a 429 or 503 may ask for (default
        /// [`DEFAULT_MAX_RETRY_AFTER`]): a shorter one is waited for before the next attempt
        /// (reported as [`Phase::Waiting`]), a longer one ends the attempts on that source.
        fn max_retry_after(limit: Duration);
        /// How many connections one large object of known size may use when the link is slow
        /// and the server answers ranges (default [`DEFAULT_CONNECTIONS`]; 1 keeps one stream).
        fn connections(connections: usize);
        /// Allows plain http to hosts other than loopback (default: refused).
        fn allow_insecure_http(allow: bool);
    }

    /// Adds a mirror: a base URL with the CDN's layout, tried in the order added after the CDN
    /// (and after the mirrors before it) for an object that fails there. Manifests, signatures
    /// and objects are checked exactly as from the CDN; `latest.json` comes only from the CDN,
    /// so a mirror cannot move anyone to another version.
    pub fn mirror(mut self, base_url: impl Into<String>) -> Self {
        self.mirrors.push(base_url.into());
        self
    }

    /// One overall deadline for each [`AssetManager::prepare`] and
    /// [`AssetManager::prepare_binaries`] call, counted from its start: no request, retry or
    /// wait runs past it, and the call then fails with [`AssetError::Deadline`], keeping its
    /// partial downloads for the next call to resume.
    pub fn deadline(mut self, limit: Duration) -> Self {
        self.deadline = Some(limit);
        self
    }

    /// Pins the manifest: its bytes (fetched or cached) must have this sha256 before they are
    /// parsed or used.
    pub fn expected_manifest_sha256(mut self, sha256: impl Into<String>) -> Self {
        self.expected_manifest_sha256 = Some(sha256.into());
        self
    }

    /// Trusts a minisign public key (a `.pub` file's text or its base64 line). With at least one
    /// key, `manifest.json.minisig` must verify before the manifest is used, and when following
    /// `latest`, `latest.json.minisig` must verify and `latest.json` may not name a version lower
    /// than one it named before.
    pub fn trusted_public_key(mut self, key: impl Into<String>) -> Self {
        self.public_keys.push(key.into());
        self
    }

    /// Receives progress reports from the download threads.
    pub fn progress(mut self, callback: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// Checks the configuration and makes the manager; nothing is fetched yet.
    pub fn build(self) -> Result<AssetManager, AssetError> {
        let arch = match self.arch {
            Some(arch) => arch,
            None => Arch::host().ok_or_else(|| {
                AssetError::Config(format!(
                    "the host arch {} is not one the contract knows: set the arch explicitly",
                    std::env::consts::ARCH
                ))
            })?,
        };
        let cache_dir = match self.cache_dir {
            Some(dir) => dir,
            None => default_cache_dir()?,
        };
        if self.concurrency == 0 || self.connections == 0 {
            return Err(AssetError::Config(
                "concurrency and connections must be at least 1".into(),
            ));
        }
        if self.version != LATEST {
            semver::Version::parse(&self.version).map_err(|e| {
                AssetError::Config(format!(
                    "version {:?} is neither `latest` nor a semantic version like 0.2.0: {e}",
                    self.version
                ))
            })?;
        }
        if self.rate_window.is_zero() {
            return Err(AssetError::Config("the rate window must be longer than zero".into()));
        }
        if let Some(sha256) = &self.expected_manifest_sha256 {
            if !crate::manifest::is_sha256_hex(sha256) {
                return Err(AssetError::Config(format!(
                    "expected manifest sha256 {sha256:?} is not 64 lowercase hex digits"
                )));
            }
        }
        for url in std::iter::once(&self.cdn_base_url).chain(&self.mirrors) {
            http::check_url_policy(url, self.allow_insecure_http)?;
        }
        let public_keys = self
            .public_keys
            .iter()
            .map(|text| signature::parse_public_key(text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AssetManager {
            sources: Sources::new(&self.cdn_base_url, &self.mirrors),
            requested_version: self.version,
            resolved_version: OnceLock::new(),
            arch,
            cache_dir,
            concurrency: self.concurrency,
            connections: self.connections,
            deadline: self.deadline,
            public_keys,
            expected_manifest_sha256: self.expected_manifest_sha256,
            http: Http::new(Limits {
                connect_timeout: self.connect_timeout,
                read_timeout: self.read_timeout,
                min_bytes_per_second: self.min_transfer_rate,
                rate_window: self.rate_window,
                retries: self.retries,
                retry_backoff: self.retry_backoff,
                max_retry_after: self.max_retry_after,
                allow_insecure_http: self.allow_insecure_http,
            }),
            progress: self.progress.unwrap_or_else(progress::silent),
        })
    }
}

/// Installs verified boot assets and runtime binaries from a CDN; see the module docs.
pub struct AssetManager {
    sources: Sources,
    requested_version: String,
    resolved_version: OnceLock<(String, Option<String>)>,
    arch: Arch,
    cache_dir: PathBuf,
    concurrency: usize,
    connections: usize,
    deadline: Option<Duration>,
    public_keys: Vec<minisign_verify::PublicKey>,
    expected_manifest_sha256: Option<String>,
    http: Http,
    progress: ProgressCallback,
}

impl AssetManager {
    /// Starts configuring a manager for the CDN at `cdn_base_url`.
    pub fn builder(cdn_base_url: impl Into<String>) -> AssetManagerBuilder {
        let limits = Limits::default();
        AssetManagerBuilder {
            cdn_base_url: cdn_base_url.into(),
            mirrors: Vec::new(),
            version: LATEST.to_owned(),
            arch: None,
            cache_dir: None,
            concurrency: DEFAULT_CONCURRENCY,
            connections: DEFAULT_CONNECTIONS,
            retries: limits.retries,
            retry_backoff: limits.retry_backoff,
            connect_timeout: limits.connect_timeout,
            read_timeout: limits.read_timeout,
            min_transfer_rate: limits.min_bytes_per_second,
            rate_window: limits.rate_window,
            max_retry_after: limits.max_retry_after,
            deadline: None,
            public_keys: Vec::new(),
            expected_manifest_sha256: None,
            allow_insecure_http: false,
            progress: None,
        }
    }

    /// The guest arch this manager installs for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The directory versions are installed under.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The version to install: the requested one, or the one `latest.json` names (fetched once
    /// per manager, so `prepare` and `prepare_binaries` agree).
    ///
    /// With a trusted key, `latest.json.minisig` must verify and the version may not be lower
    /// than the highest a signed `latest.json` named before. When `latest.json` cannot be
    /// fetched, the last resolved version is used if it is fully verified in the cache (with a
    /// trusted key: only if its manifest signature verifies).
    pub fn resolve_version(&self) -> Result<String, AssetError> {
        self.resolve(&self.call_http()).map(|(version, _)| version)
    }

    /// The HTTP settings of one public call: bounded by the deadline, counted from now.
    fn call_http(&self) -> Http {
        self.http.until(self.deadline.map(Deadline::after))
    }

    /// Reports waits before retries of `object`.
    fn waiting<'a>(&'a self, object: &'a str) -> impl Fn(Duration, bool) + 'a {
        move |wait, asked| progress::report_wait(&self.progress, object, wait, asked)
    }

    fn resolve(&self, http: &Http) -> Result<(String, Option<String>), AssetError> {
        if self.requested_version != LATEST {
            return Ok((self.requested_version.clone(), None));
        }
        if let Some(resolved) = self.resolved_version.get() {
            return Ok(resolved.clone());
        }
        let root = self.cache_root()?;
        // Only the primary CDN says which version is the latest: a mirror cannot move anyone.
        let url = cdn::join_url(self.sources.primary(), cdn::LATEST_PATH);
        let resolved = match self.fetch_latest(http, &url) {
            Ok(version) => {
                if !self.public_keys.is_empty() {
                    self.refuse_rollback(&root, &url, &version)?;
                }
                records::write_last_resolved(&root, &version, !self.public_keys.is_empty())?;
                (version, None)
            }
            Err(error @ (AssetError::Transfer { .. } | AssetError::HttpStatus { .. } | AssetError::Tls { .. })) => {
                match self.offline_version(&root)? {
                    Some(version) => (version, Some(error.to_string())),
                    None => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };
        Ok(self.resolved_version.get_or_init(|| resolved).clone())
    }

    /// Fetches `latest.json` (and with trusted keys its signature, which must verify).
    fn fetch_latest(&self, http: &Http, url: &str) -> Result<String, AssetError> {
        let bytes = http.fetch_document(url, &self.waiting(cdn::LATEST_PATH))?;
        if !self.public_keys.is_empty() {
            let signature_url = cdn::signature_path(url);
            let waiting = self.waiting(cdn::LATEST_PATH);
            let signature = http.fetch_document(&signature_url, &waiting).map_err(|e| match e {
                AssetError::HttpStatus { status: 404, .. } => AssetError::Signature {
                    url: url.to_owned(),
                    reason: format!("{signature_url} does not exist (HTTP 404)"),
                },
                other => other,
            })?;
            signature::verify(&self.public_keys, &bytes, &signature, url)?;
        }
        let latest = Latest::from_json(&bytes).map_err(|error| AssetError::Manifest {
            url: url.to_owned(),
            error,
        })?;
        Ok(latest.version)
    }

    /// Refuses a signed `latest.json` that names a version lower than the highest one a signed
    /// `latest.json` named before, and remembers the new highest.
    fn refuse_rollback(&self, root: &Dir, url: &str, version: &str) -> Result<(), AssetError> {
        let offered = parse_version(version)?;
        let highest =
            records::read_highest_verified(root).and_then(|text| semver::Version::parse(&text).ok().map(|v| (text, v)));
        match highest {
            Some((text, highest)) if offered < highest => Err(AssetError::Rollback {
                url: url.to_owned(),
                offered: version.to_owned(),
                highest: text,
            }),
            Some((_, highest)) if offered == highest => Ok(()),
            _ => records::write_highest_verified(root, version),
        }
    }

    /// The last resolved version, if it is fully verified in the cache for this arch: its
    /// manifest trusted (signature, pinned digest) and its kernel and rootfs records valid.
    fn offline_version(&self, root: &Dir) -> Result<Option<String>, AssetError> {
        let Some((version, signed)) = records::read_last_resolved(root) else {
            return Ok(None);
        };
        if semver::Version::parse(&version).is_err() {
            return Ok(None);
        }
        if !self.public_keys.is_empty() && !signed {
            return Ok(None);
        }
        if root.kind(&version)? != safe_fs::EntryKind::Directory {
            return Ok(None);
        }
        let dir = root.subdir(&version)?;
        let Some(manifest) = self.local_manifest(&dir, &version)? else {
            return Ok(None);
        };
        let Some(target) = manifest.targets.get(&self.arch) else {
            return Ok(None);
        };
        let verified = records::is_verified(&dir, cdn::KERNEL_FILE, &target.kernel.sha256)
            && records::is_verified(&dir, cdn::ROOTFS_FILE, &target.rootfs.sha256);
        Ok(verified.then_some(version))
    }

    /// Installs the kernel and rootfs of this arch under `{cache}/{version}/` and returns where
    /// they are. When everything is already installed and verified, no request is made.
    pub fn prepare(&self) -> Result<PreparedAssets, AssetError> {
        let http = self.call_http();
        let (version, offline_fallback) = self.resolve(&http)?;
        let dir = Arc::new(self.cache_root()?.subdir(&version)?);
        let _lock = lock::lock_dir(&dir)?;
        let manifest = self.load_manifest(&http, &version, &dir)?;
        let target = manifest
            .targets
            .get(&self.arch)
            .ok_or_else(|| AssetError::MissingArch {
                version: version.clone(),
                arch: self.arch.to_string(),
                available: manifest
                    .targets
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
            .clone();
        let kernel = FileEntry {
            path: target.kernel.path.clone(),
            sha256: target.kernel.sha256.clone(),
            size: target.kernel.size,
        };
        let jobs = [
            self.job("kernel", &kernel, &dir, cdn::KERNEL_FILE, ASSET_MODE),
            self.job("rootfs", &target.rootfs, &dir, cdn::ROOTFS_FILE, ASSET_MODE),
        ];
        self.run_jobs(&http, &jobs)?;
        Ok(PreparedAssets {
            version,
            kernel: dir.join(cdn::KERNEL_FILE),
            rootfs: dir.join(cdn::ROOTFS_FILE),
            dir: dir.path().to_path_buf(),
            kernel_cmdline: target.kernel_cmdline.clone(),
            manifest,
            offline_fallback,
        })
    }

    /// Installs this arch's runtime binaries, mode 0755: into `runtime_bin_dir/{name}`, or, for
    /// a binary with `install_dir`, into `{parent of runtime_bin_dir}/{install_dir}/{name}`.
    pub fn prepare_binaries(&self, runtime_bin_dir: &Path) -> Result<Vec<InstalledBinary>, AssetError> {
        let http = self.call_http();
        let (version, _) = self.resolve(&http)?;
        let version_dir = self.cache_root()?.subdir(&version)?;
        let manifest = {
            let _lock = lock::lock_dir(&version_dir)?;
            self.load_manifest(&http, &version, &version_dir)?
        };
        let bin_dir = Arc::new(Dir::open_root(runtime_bin_dir, self.link_reporter())?);
        let _lock = lock::lock_dir(&bin_dir)?;
        let mut install_dirs: HashMap<String, Arc<Dir>> = HashMap::new();
        let mut installed = Vec::new();
        let mut jobs = Vec::new();
        for binary in Manifest::binaries_for(&manifest.binaries, self.arch) {
            let file = &binary.targets[&self.arch];
            let dir = match &binary.install_dir {
                None => bin_dir.clone(),
                Some(relative) => match install_dirs.get(relative) {
                    Some(dir) => dir.clone(),
                    None => {
                        let dir = Arc::new(self.open_install_dir(runtime_bin_dir, &binary.name, relative)?);
                        install_dirs.insert(relative.clone(), dir.clone());
                        dir
                    }
                },
            };
            jobs.push(self.job(&binary.name, file, &dir, &binary.name, BINARY_MODE));
            installed.push(InstalledBinary {
                name: binary.name.clone(),
                version: binary.version.clone(),
                path: dir.join(&binary.name),
            });
        }
        self.run_jobs(&http, &jobs)?;
        Ok(installed)
    }

    /// `{parent of runtime_bin_dir}/{install_dir}`, each component below the parent opened (or
    /// created) without following a link; errors speak of that local directory.
    fn open_install_dir(&self, runtime_bin_dir: &Path, binary: &str, relative: &str) -> Result<Dir, AssetError> {
        let local = install_dir_of(runtime_bin_dir, Some(relative));
        let error = |error: String| AssetError::InstallDir {
            binary: binary.to_owned(),
            install_dir: relative.to_owned(),
            path: local.clone(),
            error,
        };
        if let Some(problem) = crate::manifest::relative_path_problem(relative) {
            return Err(error(problem));
        }
        let parent = runtime_bin_dir.parent().unwrap_or(Path::new("."));
        let parent = Dir::open_root(parent, self.link_reporter()).map_err(|e| error(e.to_string()))?;
        parent.subdir_path(relative).map_err(|e| error(e.to_string()))
    }

    /// Removes every installed version except those in `keep` (directories named like a
    /// semantic version only, and only when no other process holds their lock), and the partial
    /// downloads and temporary files left in the kept ones.
    pub fn prune(&self, keep: &[&str]) -> Result<PruneReport, AssetError> {
        let mut report = PruneReport::default();
        let entries = match std::fs::read_dir(&self.cache_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(AssetError::io("listing", &self.cache_dir)(e)),
        };
        // `file_type` does not follow links: a link named like a version is not a version.
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| semver::Version::parse(name).is_ok())
            .collect();
        names.sort();
        let root = self.cache_root()?;
        for name in names {
            let dir = root.subdir(&name)?;
            let Some(lock) = lock::try_lock_dir(&dir)? else {
                report.in_use.push(name);
                continue;
            };
            if keep.contains(&name.as_str()) {
                report.removed_partials.extend(remove_stray_files(&dir)?);
            } else {
                // std's remove_dir_all removes links as links, never what they point to.
                std::fs::remove_dir_all(dir.path()).map_err(AssetError::io("removing", dir.path()))?;
                report.removed_versions.push(name);
            }
            drop(lock);
        }
        Ok(report)
    }

    /// The cache dir, opened (and created); everything below it is reached through this handle.
    fn cache_root(&self) -> Result<Dir, AssetError> {
        Dir::open_root(&self.cache_dir, self.link_reporter())
    }

    /// Reports a removed link as a [`Phase::RemovedLink`] progress event.
    fn link_reporter(&self) -> safe_fs::LinkReporter {
        progress::link_reporter(&self.progress)
    }

    /// The verified local copy of the manifest, when there is one that is still trusted.
    fn local_manifest(&self, dir: &Dir, version: &str) -> Result<Option<Manifest>, AssetError> {
        let Some(bytes) = dir.read_small(cdn::MANIFEST_FILE, http::MAX_DOCUMENT_BYTES)? else {
            return Ok(None);
        };
        let label = dir.join(cdn::MANIFEST_FILE).display().to_string();
        if self.check_pinned_digest(&label, &bytes).is_err() {
            return Ok(None);
        }
        let signature_name = cdn::signature_path(cdn::MANIFEST_FILE);
        let signature = || dir.read_small(&signature_name, http::MAX_DOCUMENT_BYTES).ok().flatten();
        Ok(self.trust_manifest(&bytes, signature, &label, version).ok())
    }

    /// The manifest of `version`: the verified local copy when there is one, else fetched,
    /// checked against the pinned digest and the signature (when configured), validated and
    /// stored.
    fn load_manifest(&self, http: &Http, version: &str, dir: &Dir) -> Result<Manifest, AssetError> {
        if let Some(manifest) = self.local_manifest(dir, version)? {
            self.report_manifest(Phase::Cached, 0);
            return Ok(manifest);
        }

        self.report_manifest(Phase::Downloading, 0);
        let urls = self.sources.urls(&cdn::manifest_path(version));
        let (bytes, signature, manifest) = http::try_in_order("manifest", &urls, |url| {
            let bytes = http.fetch_document(url, &self.waiting("manifest"))?;
            self.check_pinned_digest(url, &bytes)?;
            let signature = self.fetch_manifest_signature(http, url)?;
            let manifest = self.trust_manifest(&bytes, || signature.clone(), url, version)?;
            Ok((bytes, signature, manifest))
        })?;
        if let Some(signature) = &signature {
            let name = cdn::signature_path(cdn::MANIFEST_FILE);
            dir.write_atomic(&name, signature, ASSET_MODE, Durability::Now)?;
        }
        dir.write_atomic(cdn::MANIFEST_FILE, &bytes, ASSET_MODE, Durability::Now)?;
        self.report_manifest(Phase::Ready, bytes.len() as u64);
        Ok(manifest)
    }

    /// The signature of the manifest at `url`, when keys are trusted (then it must exist).
    fn fetch_manifest_signature(&self, http: &Http, url: &str) -> Result<Option<Vec<u8>>, AssetError> {
        if self.public_keys.is_empty() {
            return Ok(None);
        }
        let signature_url = cdn::signature_path(url);
        let signature = http
            .fetch_document(&signature_url, &self.waiting("manifest"))
            .map_err(|e| AssetError::Signature {
                url: url.to_owned(),
                reason: format!("cannot fetch {signature_url}: {e}"),
            })?;
        Ok(Some(signature))
    }

    /// Refuses manifest bytes whose sha256 is not the pinned one (when one is pinned).
    fn check_pinned_digest(&self, label: &str, bytes: &[u8]) -> Result<(), AssetError> {
        let Some(expected) = &self.expected_manifest_sha256 else {
            return Ok(());
        };
        let actual = format!("{:x}", sha2::Sha256::digest(bytes));
        if &actual == expected {
            Ok(())
        } else {
            Err(AssetError::ManifestDigest {
                url: label.to_owned(),
                expected: expected.clone(),
                actual,
            })
        }
    }

    /// Checks the signature (when keys are trusted), the contract rules and the version.
    fn trust_manifest(
        &self,
        bytes: &[u8],
        signature: impl FnOnce() -> Option<Vec<u8>>,
        label: &str,
        version: &str,
    ) -> Result<Manifest, AssetError> {
        if !self.public_keys.is_empty() {
            let signature = signature().ok_or_else(|| AssetError::Signature {
                url: label.to_owned(),
                reason: format!("no {} signature was found", cdn::SIGNATURE_SUFFIX),
            })?;
            signature::verify(&self.public_keys, bytes, &signature, label)?;
        }
        let manifest = Manifest::from_json_validated(bytes).map_err(|error| AssetError::Manifest {
            url: label.to_owned(),
            error,
        })?;
        if manifest.asset_version != version {
            return Err(AssetError::VersionMismatch {
                url: label.to_owned(),
                expected: version.to_owned(),
                actual: manifest.asset_version,
            });
        }
        Ok(manifest)
    }

    fn report_manifest(&self, phase: Phase, bytes: u64) {
        progress::report(&self.progress, "manifest", phase, bytes, Some(bytes).filter(|&b| b > 0));
    }

    /// The job that installs `file` (the manifest's entry of `object`) as `dir/name`.
    fn job(&self, object: &str, file: &FileEntry, dir: &Arc<Dir>, name: &str, mode: u32) -> Job {
        Job {
            object: object.to_owned(),
            urls: self.sources.urls(&file.path),
            sha256: file.sha256.clone(),
            size: file.size,
            dir: dir.clone(),
            name: name.to_owned(),
            mode,
        }
    }

    /// Runs the jobs on up to `concurrency` threads; the first error (in job order) wins.
    ///
    /// Jobs with the same digest form one group, run by one thread: the first is downloaded, the
    /// others are copied from it (each through its own partial file), so identical contents are
    /// fetched once and never share a temporary.
    fn run_jobs(&self, http: &Http, jobs: &[Job]) -> Result<(), AssetError> {
        let context = Context {
            http,
            progress: &self.progress,
            connections: self.connections,
        };
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            match groups.iter_mut().find(|group| jobs[group[0]].sha256 == job.sha256) {
                Some(group) => group.push(index),
                None => groups.push(vec![index]),
            }
        }
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<(), AssetError>>>> = Mutex::new(jobs.iter().map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(groups.len()) {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(group) = groups.get(index) else { break };
                    let first = &jobs[group[0]];
                    let result = context.ensure_installed(first, None);
                    let first_ok = result.is_ok();
                    results.lock().expect("no job panics while holding the lock")[group[0]] = Some(result);
                    for &other in &group[1..] {
                        let result = context.ensure_installed(&jobs[other], first_ok.then_some(first));
                        results.lock().expect("no job panics while holding the lock")[other] = Some(result);
                    }
                });
            }
        });
        let results = results.into_inner().expect("no job panics while holding the lock");
        results.into_iter().flatten().collect()
    }
}

/// Parses a version that `latest.json` named (already checked to be semantic by its parser).
fn parse_version(version: &str) -> Result<semver::Version, AssetError> {
    semver::Version::parse(version).map_err(|e| AssetError::Config(format!("version {version:?}: {e}")))
}

/// `{runtime_bin_dir}`, or `{parent of runtime_bin_dir}/{install_dir}` per the contract.
pub fn install_dir_of(runtime_bin_dir: &Path, install_dir: Option<&str>) -> PathBuf {
    match install_dir {
        None => runtime_bin_dir.to_path_buf(),
        Some(dir) => runtime_bin_dir.parent().unwrap_or(Path::new("")).join(dir),
    }
}

/// `~/.arcbox/boot`.
fn default_cache_dir() -> Result<PathBuf, AssetError> {
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or_else(|| AssetError::Config("HOME is not set: set the cache dir explicitly".into()))?;
    Ok(PathBuf::from(home).join(".arcbox").join("boot"))
}

/// Removes `.partial-*` and `.tmp-*` entries from `dir` (links as links); returns what it removed.
fn remove_stray_files(dir: &Dir) -> Result<Vec<PathBuf>, AssetError> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir.path()).map_err(AssetError::io("listing", dir.path()))? {
        let entry = entry.map_err(AssetError::io("listing", dir.path()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(install::PARTIAL_PREFIX) || name.starts_with(safe_fs::TEMP_PREFIX) {
            dir.remove(&name)?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_dir_rule_follows_the_contract() {
        let bin = Path::new("/home/u/.arcbox/runtime/bin");
        assert_eq!(install_dir_of(bin, None), bin);
        assert_eq!(
            install_dir_of(bin, Some("libexec/docker")),
            Path::new("/home/u/.arcbox/runtime/libexec/docker")
        );
    }

    #[test]
    fn builder_refuses_bad_settings() {
        let err = |builder: AssetManagerBuilder| builder.build().err().expect("must fail").to_string();
        let base = || AssetManager::builder("https://cdn.example").cache_dir("/tmp/x");
        assert!(err(base().concurrency(0)).contains("concurrency and connections must be at least 1"));
        assert!(err(base().connections(0)).contains("concurrency and connections must be at least 1"));
        assert!(err(base().mirror("http://mirror.example")).contains("refusing plain-http"));
        assert!(err(base().version("v1")).contains("version \"v1\" is neither `latest` nor a semantic version"));
        assert!(err(AssetManager::builder("http://cdn.example").cache_dir("/tmp/x")).contains("refusing plain-http"));
        assert!(err(base().trusted_public_key("nope")).contains("not a minisign public key"));
        base().version("0.2.0").arch(Arch::Arm64).build().unwrap();
    }

    #[test]
    fn prune_keeps_what_it_is_told_and_skips_locked_versions() {
        let cache = tempfile::tempdir().unwrap();
        for version in ["0.1.0", "0.2.0", "0.3.0"] {
            std::fs::create_dir_all(cache.path().join(version)).unwrap();
        }
        std::fs::create_dir_all(cache.path().join("not-a-version")).unwrap();
        std::fs::write(cache.path().join("0.3.0").join(".partial-abc"), b"x").unwrap();
        std::fs::write(cache.path().join("0.3.0").join("kernel"), b"k").unwrap();
        let held_dir = Dir::open_root(&cache.path().join("0.2.0"), Arc::new(|_: &Path| {})).unwrap();
        let held = lock::lock_dir(&held_dir).unwrap();

        let manager = AssetManager::builder("https://cdn.example")
            .cache_dir(cache.path())
            .arch(Arch::X86_64)
            .build()
            .unwrap();
        let report = manager.prune(&["0.3.0"]).unwrap();
        drop(held);
        assert_eq!(report.removed_versions, vec!["0.1.0".to_owned()]);
        assert_eq!(report.in_use, vec!["0.2.0".to_owned()]);
        assert_eq!(
            report.removed_partials,
            vec![cache.path().join("0.3.0").join(".partial-abc")]
        );
        assert!(cache.path().join("0.3.0/kernel").exists());
        assert!(cache.path().join("not-a-version").exists());
        assert!(!cache.path().join("0.1.0").exists());
    }
}

//! The AssetManager: fetches, verifies and installs one asset version's boot assets and runtime
//! binaries from the CDN, the way the runtime does on every user's machine.
//!
//! Reads `latest.json`, `asset/v{version}/manifest.json` (and its `.minisig` when a key is
//! trusted) and the objects the manifest names, over HTTP(S) with blocking I/O. Writes
//! `{cache}/{version}/{manifest.json, kernel, rootfs.erofs}` and the runtime binaries, each
//! through a partial file that is hashed while written and renamed into place only once its
//! digest is proven, plus a `.verified` record per file so a warm start does not re-hash.
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

mod cache;
mod download;
mod downloader;
mod error;
mod lock;
mod signature;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use downloader::Downloader;
pub use error::AssetError;

use crate::manifest::{Arch, Latest, Manifest};
use crate::{cdn, fsutil};
use download::{Http, Job};

/// Objects downloaded at once by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Retries of a failing transfer by default (so up to 4 attempts in all).
pub const DEFAULT_RETRIES: u32 = 3;

/// First retry delay by default; it doubles per attempt and gets up to 50% jitter.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Time allowed to open a connection by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Time a read may wait for the next byte by default before the transfer counts as stalled.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The special version that means "whatever `latest.json` names".
pub const LATEST: &str = "latest";

/// Unix mode of installed boot assets and manifests.
const ASSET_MODE: u32 = 0o644;

/// Unix mode of installed runtime binaries.
const BINARY_MODE: u32 = 0o755;

/// The stage an object is in, as reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking at what is already on disk.
    Checking,
    /// Receiving bytes from the CDN.
    Downloading,
    /// Hashing bytes already on disk (a kept partial download, or a file without a record).
    Verifying,
    /// Downloaded, verified and installed.
    Ready,
    /// Already installed and verified; nothing was fetched.
    Cached,
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
}

/// The progress callback; it is called from download threads, so it must be `Send + Sync`.
pub type ProgressCallback = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

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
    version: String,
    arch: Option<Arch>,
    cache_dir: Option<PathBuf>,
    concurrency: usize,
    retries: u32,
    retry_backoff: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    public_keys: Vec<String>,
    allow_insecure_http: bool,
    progress: Option<ProgressCallback>,
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

    /// How many objects download at once (default [`DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How many times a failing transfer is retried (default [`DEFAULT_RETRIES`]).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The first retry delay (default [`DEFAULT_RETRY_BACKOFF`]); it doubles per attempt.
    pub fn retry_backoff(mut self, delay: Duration) -> Self {
        self.retry_backoff = delay;
        self
    }

    /// Time allowed to open a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time one read may wait for data before the transfer counts as stalled
    /// (default [`DEFAULT_READ_TIMEOUT`]).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Trusts a minisign public key (a `.pub` file's text or its base64 line). With at least one
    /// key, `manifest.json.minisig` must verify before the manifest is used.
    pub fn trusted_public_key(mut self, key: impl Into<String>) -> Self {
        self.public_keys.push(key.into());
        self
    }

    /// Allows plain http to hosts other than loopback (default: refused).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
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
        if self.concurrency == 0 {
            return Err(AssetError::Config("concurrency must be at least 1".into()));
        }
        if self.version != LATEST {
            semver::Version::parse(&self.version).map_err(|e| {
                AssetError::Config(format!(
                    "version {:?} is neither `latest` nor a semantic version like 0.2.0: {e}",
                    self.version
                ))
            })?;
        }
        download::check_url_policy(&self.cdn_base_url, self.allow_insecure_http)?;
        let public_keys = self
            .public_keys
            .iter()
            .map(|text| signature::parse_public_key(text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AssetManager {
            cdn_base_url: self.cdn_base_url.trim_end_matches('/').to_owned(),
            requested_version: self.version,
            resolved_version: OnceLock::new(),
            arch,
            cache_dir,
            concurrency: self.concurrency,
            public_keys,
            http: Http::new(
                self.connect_timeout,
                self.read_timeout,
                self.retries,
                self.retry_backoff,
                self.allow_insecure_http,
            ),
            progress: self.progress.unwrap_or_else(|| Arc::new(|_: &Progress<'_>| {})),
        })
    }
}

/// Installs verified boot assets and runtime binaries from a CDN; see the module docs.
pub struct AssetManager {
    cdn_base_url: String,
    requested_version: String,
    resolved_version: OnceLock<String>,
    arch: Arch,
    cache_dir: PathBuf,
    concurrency: usize,
    public_keys: Vec<minisign_verify::PublicKey>,
    http: Http,
    progress: ProgressCallback,
}

impl AssetManager {
    /// Starts configuring a manager for the CDN at `cdn_base_url`.
    pub fn builder(cdn_base_url: impl Into<String>) -> AssetManagerBuilder {
        AssetManagerBuilder {
            cdn_base_url: cdn_base_url.into(),
            version: LATEST.to_owned(),
            arch: None,
            cache_dir: None,
            concurrency: DEFAULT_CONCURRENCY,
            retries: DEFAULT_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            public_keys: Vec::new(),
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
    pub fn resolve_version(&self) -> Result<String, AssetError> {
        if self.requested_version != LATEST {
            return Ok(self.requested_version.clone());
        }
        if let Some(version) = self.resolved_version.get() {
            return Ok(version.clone());
        }
        let url = cdn::join_url(&self.cdn_base_url, cdn::LATEST_PATH);
        let bytes = self.http.fetch_document(&url)?;
        let latest = Latest::from_json(&bytes).map_err(|error| AssetError::Manifest { url, error })?;
        Ok(self.resolved_version.get_or_init(|| latest.version).clone())
    }

    /// Installs the kernel and rootfs of this arch under `{cache}/{version}/` and returns where
    /// they are. When everything is already installed and verified, no request is made.
    pub fn prepare(&self) -> Result<PreparedAssets, AssetError> {
        let version = self.resolve_version()?;
        let dir = self.cache_dir.join(&version);
        let _lock = lock::lock_dir(&dir)?;
        let manifest = self.load_manifest(&version, &dir)?;
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
        let kernel = dir.join(cdn::KERNEL_FILE);
        let rootfs = dir.join(cdn::ROOTFS_FILE);
        let jobs = [
            self.job(
                "kernel",
                &target.kernel.path,
                &target.kernel.sha256,
                &kernel,
                ASSET_MODE,
            ),
            self.job(
                "rootfs",
                &target.rootfs.path,
                &target.rootfs.sha256,
                &rootfs,
                ASSET_MODE,
            ),
        ];
        self.run_jobs(&jobs)?;
        Ok(PreparedAssets {
            version,
            dir,
            kernel,
            rootfs,
            kernel_cmdline: target.kernel_cmdline.clone(),
            manifest,
        })
    }

    /// Installs this arch's runtime binaries, mode 0755: into `runtime_bin_dir/{name}`, or, for
    /// a binary with `install_dir`, into `{parent of runtime_bin_dir}/{install_dir}/{name}`.
    pub fn prepare_binaries(&self, runtime_bin_dir: &Path) -> Result<Vec<InstalledBinary>, AssetError> {
        let version = self.resolve_version()?;
        let version_dir = self.cache_dir.join(&version);
        let manifest = {
            let _lock = lock::lock_dir(&version_dir)?;
            self.load_manifest(&version, &version_dir)?
        };
        let _lock = lock::lock_dir(runtime_bin_dir)?;
        let mut installed = Vec::new();
        let mut jobs = Vec::new();
        for binary in Manifest::binaries_for(&manifest.binaries, self.arch) {
            let file = &binary.targets[&self.arch];
            let dir = install_dir_of(runtime_bin_dir, binary.install_dir.as_deref());
            std::fs::create_dir_all(&dir).map_err(AssetError::io("creating directory", &dir))?;
            let path = dir.join(&binary.name);
            jobs.push(self.job(&binary.name, &file.path, &file.sha256, &path, BINARY_MODE));
            installed.push(InstalledBinary {
                name: binary.name.clone(),
                version: binary.version.clone(),
                path,
            });
        }
        self.run_jobs(&jobs)?;
        Ok(installed)
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
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| semver::Version::parse(name).is_ok())
            .collect();
        names.sort();
        for name in names {
            let dir = self.cache_dir.join(&name);
            let Some(lock) = lock::try_lock_dir(&dir)? else {
                report.in_use.push(name);
                continue;
            };
            if keep.contains(&name.as_str()) {
                report.removed_partials.extend(remove_stray_files(&dir)?);
            } else {
                std::fs::remove_dir_all(&dir).map_err(AssetError::io("removing", &dir))?;
                report.removed_versions.push(name);
            }
            drop(lock);
        }
        Ok(report)
    }

    /// The manifest of `version`: the verified local copy when there is one, else fetched,
    /// signature-checked (when keys are trusted), validated and stored.
    fn load_manifest(&self, version: &str, dir: &Path) -> Result<Manifest, AssetError> {
        let local = dir.join(cdn::MANIFEST_FILE);
        let local_signature = dir.join(format!("{}{}", cdn::MANIFEST_FILE, cdn::SIGNATURE_SUFFIX));
        let local_label = local.display().to_string();
        if let Ok(bytes) = std::fs::read(&local) {
            if let Ok(manifest) =
                self.trust_manifest(&bytes, || std::fs::read(&local_signature).ok(), &local_label, version)
            {
                self.report_manifest(Phase::Cached, bytes.len() as u64);
                return Ok(manifest);
            }
        }

        self.report_manifest(Phase::Downloading, 0);
        let url = cdn::join_url(&self.cdn_base_url, &cdn::manifest_path(version));
        let bytes = self.http.fetch_document(&url)?;
        let signature_url = format!("{url}{}", cdn::SIGNATURE_SUFFIX);
        let mut signature = None;
        if !self.public_keys.is_empty() {
            signature = Some(
                self.http
                    .fetch_document(&signature_url)
                    .map_err(|e| AssetError::Signature {
                        url: url.clone(),
                        reason: format!("cannot fetch {signature_url}: {e}"),
                    })?,
            );
        }
        let manifest = self.trust_manifest(&bytes, || signature.clone(), &url, version)?;
        if let Some(signature) = &signature {
            fsutil::write_atomic(&local_signature, signature).map_err(AssetError::io("writing", &local_signature))?;
        }
        fsutil::write_atomic(&local, &bytes).map_err(AssetError::io("writing", &local))?;
        self.report_manifest(Phase::Ready, bytes.len() as u64);
        Ok(manifest)
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
        (self.progress)(&Progress {
            name: "manifest",
            phase,
            bytes_done: bytes,
            bytes_total: Some(bytes).filter(|&b| b > 0),
        });
    }

    fn job(&self, object: &str, path: &str, sha256: &str, target: &Path, mode: u32) -> Job {
        Job {
            object: object.to_owned(),
            url: cdn::join_url(&self.cdn_base_url, path),
            sha256: sha256.to_owned(),
            target: target.to_path_buf(),
            mode,
        }
    }

    /// Runs the jobs on up to `concurrency` threads; the first error (in job order) wins.
    fn run_jobs(&self, jobs: &[Job]) -> Result<(), AssetError> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<(), AssetError>>>> = Mutex::new(jobs.iter().map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(jobs.len()) {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    let result = self.ensure_installed(job);
                    results.lock().expect("no job panics while holding the lock")[index] = Some(result);
                });
            }
        });
        let results = results.into_inner().expect("no job panics while holding the lock");
        results.into_iter().flatten().collect()
    }

    /// Makes sure one file is installed and verified: by its record, by hashing it, or by
    /// downloading it.
    fn ensure_installed(&self, job: &Job) -> Result<(), AssetError> {
        download::report(&self.progress, job, Phase::Checking, 0, None);
        if cache::is_verified(&job.target, &job.sha256) {
            ensure_mode(&job.target, job.mode)?;
            let size = std::fs::metadata(&job.target).map(|m| m.len()).unwrap_or(0);
            download::report(&self.progress, job, Phase::Cached, size, Some(size));
            return Ok(());
        }
        cache::remove_record(&job.target);
        if job.target.is_file() {
            // Installed before, but without a valid record: the digest decides.
            let actual = download::hash_file(&job.target, job, &self.progress)
                .map_err(AssetError::io("hashing", &job.target))?;
            if actual == job.sha256 {
                ensure_mode(&job.target, job.mode)?;
                cache::write_record(&job.target, &job.sha256)?;
                let size = std::fs::metadata(&job.target).map(|m| m.len()).unwrap_or(0);
                download::report(&self.progress, job, Phase::Cached, size, Some(size));
                return Ok(());
            }
            // Changed on disk: it must not stay where the runtime would boot it.
            std::fs::remove_file(&job.target).map_err(AssetError::io("removing the altered file", &job.target))?;
        }
        self.http.download(job, &self.progress)?;
        cache::write_record(&job.target, &job.sha256)?;
        let size = std::fs::metadata(&job.target).map(|m| m.len()).unwrap_or(0);
        download::report(&self.progress, job, Phase::Ready, size, Some(size));
        Ok(())
    }
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

/// Removes `.partial-*` and `.tmp-*` files from `dir`; returns what it removed.
fn remove_stray_files(dir: &Path) -> Result<Vec<PathBuf>, AssetError> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(AssetError::io("listing", dir))? {
        let entry = entry.map_err(AssetError::io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(download::PARTIAL_PREFIX) || name.starts_with(".tmp-") {
            std::fs::remove_file(entry.path()).map_err(AssetError::io("removing", entry.path()))?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(unix)]
fn ensure_mode(path: &Path, mode: u32) -> Result<(), AssetError> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)
        .map_err(AssetError::io("reading metadata of", path))?
        .permissions()
        .mode()
        & 0o7777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(AssetError::io("setting the mode of", path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_mode(_path: &Path, _mode: u32) -> Result<(), AssetError> {
    Ok(())
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
        assert!(err(base().concurrency(0)).contains("concurrency must be at least 1"));
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
        let held = lock::lock_dir(&cache.path().join("0.2.0")).unwrap();

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

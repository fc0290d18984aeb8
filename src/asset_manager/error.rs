//! The AssetManager's error type: every variant names the object, URL or path it concerns and,
//! for digests, the expected and the actual value, so a user can act on the message alone.
//! Each message is complete on its own (the underlying error is part of it, not a separate
//! `source()`), so a `{:#}` chain does not print the same cause twice.

use std::path::PathBuf;

use crate::manifest::ManifestError;

/// Everything that can go wrong while resolving, fetching, verifying or installing assets.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The builder was given a value it cannot use (bad URL, zero concurrency, bad key, …).
    #[error("invalid AssetManager configuration: {0}")]
    Config(String),
    /// A plain-http URL to a non-loopback host, while insecure http is not allowed.
    #[error("refusing plain-http URL {url}: use https, a loopback host, or allow insecure http explicitly")]
    InsecureUrl {
        /// The refused URL.
        url: String,
    },
    /// The server answered with a status that will not get better by retrying (404, 403, …),
    /// or kept answering with a retryable one until the retries ran out.
    #[error("GET {url}: HTTP status {status}")]
    HttpStatus {
        /// The URL that was requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The transfer kept failing (connection reset, short body, idle timeout, …) until the
    /// retries ran out.
    #[error("GET {url}: {message} (gave up after {attempts} attempt(s))")]
    Transfer {
        /// The URL that was requested.
        url: String,
        /// What went wrong on the last attempt.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The redirect chain was longer than the limit (a redirect loop, most likely).
    #[error("GET {url}: more than {limit} redirects (a redirect loop?)")]
    TooManyRedirects {
        /// The URL first requested.
        url: String,
        /// The number of redirects followed before giving up.
        limit: u32,
    },
    /// A redirect was not followed: it pointed somewhere the URL policy refuses.
    #[error("GET {from}: refusing the redirect to {to}: {reason}")]
    RedirectRefused {
        /// The URL that answered with the redirect.
        from: String,
        /// Where it pointed.
        to: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TLS handshake or certificate check failed; not retried, the next attempt would meet
    /// the same certificate.
    #[error("GET {url}: TLS error (not retried): {message}")]
    Tls {
        /// The URL that was requested.
        url: String,
        /// The TLS library's message.
        message: String,
    },
    /// The server sends (or announces) more bytes than the manifest's `size` of the object.
    #[error("{object} from {url}: the body is longer than the manifest's size of {size} bytes{}; nothing more was written", announced.map(|a| format!(" (the server announces {a})")).unwrap_or_default())]
    TooLong {
        /// What the object is.
        object: String,
        /// Where it came from.
        url: String,
        /// The manifest's size.
        size: u64,
        /// The length the server announced, when it announced one.
        announced: Option<u64>,
    },
    /// An object's bytes have the manifest's digest but not its `size` (a manifest that
    /// contradicts itself, or a size that was never checked when it was written).
    #[error("{object} from {url}: the object is {actual} bytes but the manifest's size is {size} bytes; refusing it")]
    SizeMismatch {
        /// What the object is.
        object: String,
        /// Where it came from (or the local file it was checked at).
        url: String,
        /// The manifest's size.
        size: u64,
        /// The object's length.
        actual: u64,
    },
    /// The caller's overall deadline passed; partial downloads are kept, so the next call
    /// resumes them.
    #[error("the deadline of {} s for this call passed during GET {url}; what was downloaded is kept and the next call resumes it", limit.as_secs_f64())]
    Deadline {
        /// The deadline the caller set.
        limit: std::time::Duration,
        /// The request that was running (or about to run).
        url: String,
    },
    /// A range request for part of a large object was not answered with exactly that range
    /// (the download goes on in one stream).
    #[error("GET {url}: the server does not answer range requests as asked (HTTP status {status}); reading it in one stream")]
    RangesRefused {
        /// The URL that was requested.
        url: String,
        /// The status it answered with.
        status: u16,
    },
    /// Every source (the CDN and each mirror) failed for one object.
    #[error("{object}: every source failed: {failures}")]
    AllSourcesFailed {
        /// What the object is.
        object: String,
        /// What each source said, in order, separated by `; `.
        failures: String,
    },
    /// The manifest bytes do not have the digest the caller pinned.
    #[error("{url}: the manifest's sha256 is {actual}, not the pinned {expected}; refusing to use it")]
    ManifestDigest {
        /// Where the manifest came from.
        url: String,
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A signed `latest.json` names a version lower than one verified before.
    #[error("{url} names version {offered}, lower than version {highest} verified before: refusing to roll back (a replayed or stale latest.json?)")]
    Rollback {
        /// Where `latest.json` came from.
        url: String,
        /// The version it names.
        offered: String,
        /// The highest version whose signed `latest.json` was verified before.
        highest: String,
    },
    /// The local directory a binary's `install_dir` names cannot be used.
    #[error("binary {binary}: cannot use the local directory {} (install_dir {install_dir:?}, relative to the parent of the runtime bin dir): {error}", path.display())]
    InstallDir {
        /// The binary's name.
        binary: String,
        /// The manifest's `install_dir`.
        install_dir: String,
        /// The local directory it names.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// A downloaded object did not have the digest the manifest promises, twice in a row.
    #[error("{object} from {url}: sha256 mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the object is (`kernel`, `rootfs`, a binary's name).
        object: String,
        /// Where it came from.
        url: String,
        /// The digest from the manifest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// `manifest.json` or `latest.json` is malformed or breaks a contract rule.
    #[error("{url}: {error}")]
    Manifest {
        /// Where the document came from (a URL or a cached file).
        url: String,
        /// The parse or validation error, naming the field.
        error: ManifestError,
    },
    /// The manifest fetched for one version declares another.
    #[error("{url}: declares asset_version {actual:?}, but version {expected:?} was requested")]
    VersionMismatch {
        /// Where the manifest came from.
        url: String,
        /// The requested version.
        expected: String,
        /// The manifest's `asset_version`.
        actual: String,
    },
    /// The manifest has no boot assets for the requested arch.
    #[error("manifest of version {version} has no target for {arch} (it has: {available})")]
    MissingArch {
        /// The asset version.
        version: String,
        /// The requested arch.
        arch: String,
        /// The arches the manifest does have, comma-separated.
        available: String,
    },
    /// The manifest's minisign signature is missing, malformed, or not made by a trusted key.
    #[error("signature of {url}: {reason}")]
    Signature {
        /// The manifest URL (its signature is `{url}.minisig`).
        url: String,
        /// Why the signature was refused.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{step} {}: {error}", path.display())]
    Io {
        /// What was being done (`creating`, `renaming into place`, `locking`, …).
        step: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
}

impl AssetError {
    /// Whether another source (a mirror) could do better: not after a local error, a passed
    /// deadline, a bad configuration or a manifest that contradicts itself.
    pub(crate) fn another_source_may_help(&self) -> bool {
        !matches!(
            self,
            AssetError::Io { .. }
                | AssetError::Deadline { .. }
                | AssetError::Config(_)
                | AssetError::SizeMismatch { .. }
                | AssetError::InstallDir { .. }
        )
    }

    /// An [`AssetError::Io`] for `step` on `path`.
    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AssetError {
        let path = path.into();
        move |error| AssetError::Io { step, path, error }
    }
}

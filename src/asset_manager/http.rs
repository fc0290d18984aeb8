//! The HTTP layer: every request of the AssetManager, its time limits, retries and sources.
//!
//! Reads from the network only; writes nothing (a caller's closure receives the body). Every
//! request goes through [`Http::get`], which enforces the URL policy (https, or http to
//! loopback only unless allowed) on every redirect hop and names both ends of a refused
//! redirect. Imports only the progress layer and the error type.
//!
//! - Network errors, short bodies, idle timeouts, transfers slower than the minimum rate over
//!   the rate window, and 5xx/408/429 are retried with exponential backoff and jitter; other
//!   statuses and certificate errors fail at once, naming the URL.
//! - A 429 or 503 with `Retry-After` (seconds, or an HTTP-date) waits at least that long before
//!   the next attempt, reported as [`Phase::Waiting`](super::Phase::Waiting); a wait longer than
//!   `max_retry_after`, or one that would pass the deadline, ends the attempts at once.
//! - With a deadline, every request's whole exchange is bounded by the time left, and no wait
//!   or attempt starts after it: the call fails with [`AssetError::Deadline`].
//! - [`Sources`] and [`try_in_order`]: an object that fails on one base URL is fetched from the
//!   next.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::error::AssetError;

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

/// The slowest transfer rate accepted by default, in bytes per second, averaged over
/// [`DEFAULT_RATE_WINDOW`]: a transfer below it is abandoned and retried (resuming).
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 32 * 1024;

/// The window over which the transfer rate is measured by default.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

/// The longest `Retry-After` honoured by default; a server asking for more is given up on
/// (the next mirror is tried) instead of being waited for.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Redirects followed before a request is given up as a loop.
pub(crate) const MAX_REDIRECTS: u32 = 5;

/// Largest small document (manifest, `latest.json`, signature) accepted into memory.
pub(crate) const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Size of one read of a document body.
const DOCUMENT_CHUNK_BYTES: usize = 64 * 1024;

/// The time limits and retry policy of every request; [`Limits::default`] is the one place
/// the transfer defaults are written.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub min_bytes_per_second: u64,
    pub rate_window: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub max_retry_after: Duration,
    pub allow_insecure_http: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            min_bytes_per_second: DEFAULT_MIN_TRANSFER_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
            retries: DEFAULT_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            allow_insecure_http: false,
        }
    }
}

/// An overall deadline: the moment, and the limit it was set from (for messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub at: Instant,
    pub limit: Duration,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub(crate) fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn error(&self, url: &str) -> AssetError {
        AssetError::Deadline {
            limit: self.limit,
            url: url.to_owned(),
        }
    }
}

/// The HTTP settings shared by every request of one AssetManager (cheap to clone: the agent
/// is shared).
#[derive(Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
    pub(crate) limits: Limits,
    deadline: Option<Deadline>,
}

/// Why one attempt failed, and so what to do next.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying (a partial file is kept and resumed).
    Transient(String),
    /// Worth retrying, but not before the server's `Retry-After`.
    RetryAfter(String, Duration),
    /// Retrying cannot help.
    Permanent(AssetError),
    /// The whole body arrived but hashed to `actual`.
    Mismatch { actual: String },
}

/// A response with its body still to read.
pub(crate) type Response = ureq::http::Response<ureq::Body>;

impl Http {
    pub(crate) fn new(limits: Limits) -> Http {
        // Every phase of a request has its own bound (see the worst case in the module docs of
        // `asset_manager`); the body's is the rate window, enforced by `RateGuard`.
        let agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(limits.connect_timeout))
            .timeout_connect(Some(limits.connect_timeout))
            .timeout_send_request(Some(limits.read_timeout))
            .timeout_per_write(Some(limits.read_timeout))
            .timeout_per_read(Some(limits.read_timeout))
            .timeout_recv_response(Some(limits.read_timeout))
            // Statuses and redirects are handled here, so that every hop is checked and a
            // `Range` header survives a redirect.
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("boot-assets/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http {
            agent,
            limits,
            deadline: None,
        }
    }

    /// The same settings, bounded by `deadline` (or by none).
    pub(crate) fn until(&self, deadline: Option<Deadline>) -> Http {
        Http {
            deadline,
            ..self.clone()
        }
    }

    /// Refuses any scheme but https, and http to anything but loopback unless allowed.
    pub(crate) fn check_url(&self, url: &str) -> Result<(), AssetError> {
        check_url_policy(url, self.limits.allow_insecure_http)
    }

    /// A rate guard for one body, bounded by this call's deadline too.
    pub(crate) fn rate_guard(&self, url: &str) -> RateGuard {
        RateGuard::new(&self.limits, self.deadline, url)
    }

    /// Fetches a small document into memory, with retries and the same rate rule as downloads;
    /// `waiting` hears of every wait before a retry.
    pub(crate) fn fetch_document(&self, url: &str, waiting: &dyn Fn(Duration, bool)) -> Result<Vec<u8>, AssetError> {
        self.with_retries(url, waiting, || {
            let mut bytes = Vec::new();
            self.read_body_chunks(url, |chunk| {
                if (bytes.len() + chunk.len()) as u64 > MAX_DOCUMENT_BYTES {
                    return Err(Failure::Permanent(AssetError::Transfer {
                        url: url.to_owned(),
                        message: format!("document is larger than {MAX_DOCUMENT_BYTES} bytes"),
                        attempts: 1,
                    }));
                }
                bytes.extend_from_slice(chunk);
                Ok(())
            })?;
            Ok(bytes)
        })
    }

    /// Streams `url` into `file` (from its start, again on every retry) and returns the sha256 of
    /// what it wrote: for a file whose digest is not known yet, so nothing to resume or verify.
    pub(crate) fn fetch_into(&self, url: &str, file: &mut File) -> Result<String, AssetError> {
        self.with_retries(url, &|_, _| {}, || {
            let local = |e: std::io::Error| {
                Failure::Permanent(AssetError::Transfer {
                    url: url.to_owned(),
                    message: format!("writing the download: {e}"),
                    attempts: 1,
                })
            };
            file.set_len(0).and_then(|()| file.rewind()).map_err(local)?;
            let mut hasher = Sha256::new();
            self.read_body_chunks(url, |chunk| {
                hasher.update(chunk);
                file.write_all(chunk).map_err(local)
            })?;
            file.sync_all().map_err(local)?;
            Ok(hex(hasher.finalize().as_slice()))
        })
    }

    /// One GET of `url` that must answer 200, its body handed to `chunk` piece by piece under
    /// the rate rule.
    fn read_body_chunks(&self, url: &str, mut chunk: impl FnMut(&[u8]) -> Result<(), Failure>) -> Result<(), Failure> {
        let response = self.get(url, None)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status_failure(url, &response));
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; DOCUMENT_CHUNK_BYTES];
        let mut rate = self.rate_guard(url);
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Transient(format!("reading the body: {e}"))),
            };
            chunk(&buffer[..read])?;
            rate.received(read as u64)?;
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, the retries run out or the deadline
    /// passes; `waiting` hears of every wait (and whether the server asked for it).
    pub(crate) fn with_retries<T>(
        &self,
        url: &str,
        waiting: &dyn Fn(Duration, bool),
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, AssetError> {
        let mut attempts = 0;
        loop {
            if let Some(deadline) = self.deadline.filter(|d| d.left().is_zero()) {
                return Err(deadline.error(url));
            }
            attempts += 1;
            let (message, asked) = match attempt() {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(error)) => return Err(error),
                Err(Failure::Mismatch { actual }) => {
                    return Err(AssetError::DigestMismatch {
                        object: String::new(),
                        url: url.to_owned(),
                        expected: String::new(),
                        actual,
                    })
                }
                Err(Failure::Transient(message)) => (message, None),
                Err(Failure::RetryAfter(message, wait)) => (message, Some(wait)),
            };
            let transfer = |message: String| AssetError::Transfer {
                url: url.to_owned(),
                message,
                attempts,
            };
            if attempts > self.limits.retries {
                return Err(transfer(message));
            }
            if asked.is_some_and(|wait| wait > self.limits.max_retry_after) {
                let wait = asked.unwrap_or_default().as_secs();
                let allowed = self.limits.max_retry_after.as_secs();
                return Err(transfer(format!(
                    "{message}; the server asks to retry after {wait} s, more than the {allowed} s allowed"
                )));
            }
            let wait = backoff(self.limits.retry_backoff, attempts).max(asked.unwrap_or_default());
            if let Some(deadline) = self.deadline.filter(|d| d.left() <= wait) {
                return Err(deadline.error(url));
            }
            waiting(wait, asked.is_some());
            std::thread::sleep(wait);
        }
    }

    /// One GET, following redirects by hand (each hop checked against the URL policy), with
    /// `Range: bytes={from}-` (or `bytes={from}-{last}`) when asked.
    pub(crate) fn get(&self, url: &str, range: Option<(u64, Option<u64>)>) -> Result<Response, Failure> {
        self.check_url(url).map_err(Failure::Permanent)?;
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&current);
            if let Some((from, last)) = range {
                let last = last.map(|l| l.to_string()).unwrap_or_default();
                request = request.header("Range", format!("bytes={from}-{last}"));
            }
            if let Some(deadline) = self.deadline {
                if deadline.left().is_zero() {
                    return Err(Failure::Permanent(deadline.error(url)));
                }
                request = request.config().timeout_global(Some(deadline.left())).build();
            }
            let response = request.call().map_err(|e| classify_ureq_error(&current, e))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = header(&response, "location").ok_or_else(|| {
                Failure::Permanent(AssetError::HttpStatus {
                    url: current.clone(),
                    status: response.status().as_u16(),
                })
            })?;
            let next = resolve_location(&current, location);
            if let Some(reason) = redirect_refusal(&current, &next, self.limits.allow_insecure_http) {
                return Err(Failure::Permanent(AssetError::RedirectRefused {
                    from: current,
                    to: next,
                    reason,
                }));
            }
            current = next;
        }
        Err(Failure::Permanent(AssetError::TooManyRedirects {
            url: url.to_owned(),
            limit: MAX_REDIRECTS,
        }))
    }
}

/// The base URLs objects come from, in order: the primary CDN, then the mirrors (same layout).
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    bases: Vec<String>,
}

impl Sources {
    /// `primary` first, then `mirrors`, each without a trailing slash.
    pub(crate) fn new(primary: &str, mirrors: &[String]) -> Sources {
        let bases = std::iter::once(primary)
            .chain(mirrors.iter().map(String::as_str))
            .map(|base| base.trim_end_matches('/').to_owned())
            .collect();
        Sources { bases }
    }

    /// The primary CDN's base URL (the only source of `latest.json`).
    pub(crate) fn primary(&self) -> &str {
        &self.bases[0]
    }

    /// The URL of `path` on every source, primary first.
    pub(crate) fn urls(&self, path: &str) -> Vec<String> {
        self.bases.iter().map(|base| crate::cdn::join_url(base, path)).collect()
    }
}

/// Runs `fetch` with each of `urls` (the same object on each source) in order until one
/// succeeds. With one URL its error is returned as it is; with more, an error naming what each
/// one said. A local error, a passed deadline or a manifest that contradicts itself ends the
/// loop: another source cannot help.
pub(crate) fn try_in_order<T>(
    object: &str,
    urls: &[String],
    mut fetch: impl FnMut(&str) -> Result<T, AssetError>,
) -> Result<T, AssetError> {
    let mut failures = Vec::new();
    for url in urls {
        match fetch(url) {
            Ok(value) => return Ok(value),
            Err(error) if urls.len() == 1 || !error.another_source_may_help() => return Err(error),
            Err(error) => failures.push(error.to_string()),
        }
    }
    Err(AssetError::AllSourcesFailed {
        object: object.to_owned(),
        failures: failures.join("; "),
    })
}

/// Why a redirect from `from` to `to` must not be followed, or `None` when it may.
fn redirect_refusal(from: &str, to: &str, allow_insecure_http: bool) -> Option<String> {
    if from.starts_with("https://") && to.starts_with("http://") {
        return Some("it would downgrade https to plain http".into());
    }
    match check_url_policy(to, allow_insecure_http) {
        Ok(()) => None,
        Err(AssetError::InsecureUrl { .. }) => {
            Some("the target is plain http to a host that is not loopback (insecure http is not allowed)".into())
        }
        Err(AssetError::Config(message)) => Some(message),
        Err(other) => Some(other.to_string()),
    }
}

/// Abandons a transfer that is slower than the minimum rate over a whole window, so that a
/// server trickling bytes (each read arriving before the idle timeout) cannot hold it for hours,
/// and one that would run past the call's deadline.
pub(crate) struct RateGuard {
    min_bytes_per_second: u64,
    window: Duration,
    window_started: Instant,
    window_bytes: u64,
    deadline: Option<Deadline>,
    url: String,
}

impl RateGuard {
    fn new(limits: &Limits, deadline: Option<Deadline>, url: &str) -> RateGuard {
        RateGuard {
            min_bytes_per_second: limits.min_bytes_per_second,
            window: limits.rate_window,
            window_started: Instant::now(),
            window_bytes: 0,
            deadline,
            url: url.to_owned(),
        }
    }

    /// Counts `bytes` more; an error once a whole window has passed below the minimum rate, or
    /// once the deadline has passed (what arrived is kept: the next call resumes it).
    pub(crate) fn received(&mut self, bytes: u64) -> Result<(), Failure> {
        if let Some(deadline) = self.deadline.filter(|d| d.left().is_zero()) {
            return Err(Failure::Permanent(deadline.error(&self.url)));
        }
        self.window_bytes += bytes;
        let elapsed = self.window_started.elapsed();
        if self.min_bytes_per_second == 0 || elapsed < self.window {
            return Ok(());
        }
        let needed = self.min_bytes_per_second as f64 * elapsed.as_secs_f64();
        if (self.window_bytes as f64) < needed {
            return Err(Failure::Transient(format!(
                "the transfer is slower than the minimum rate of {} bytes/s ({} bytes in {:.1} s): abandoned",
                self.min_bytes_per_second,
                self.window_bytes,
                elapsed.as_secs_f64()
            )));
        }
        self.window_started = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

/// A response header as text.
pub(crate) fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|value| value.to_str().ok())
}

/// A status that is not a success: 5xx, 408 and 429 are worth retrying (429 and 503 not before
/// their `Retry-After`); the rest are not.
pub(crate) fn status_failure(url: &str, response: &Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after = match status {
        429 | 503 => header(response, "retry-after").and_then(|value| parse_retry_after(value, SystemTime::now())),
        _ => None,
    };
    match retry_after {
        Some(wait) => Failure::RetryAfter(format!("HTTP status {status}"), wait),
        None if status >= 500 || status == 408 || status == 429 => Failure::Transient(format!("HTTP status {status}")),
        None => Failure::Permanent(AssetError::HttpStatus {
            url: url.to_owned(),
            status,
        }),
    }
}

/// `Retry-After` as a wait from `now`: delay-seconds, or an HTTP-date (a past date is no wait).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let moment = httpdate::parse_http_date(value).ok()?;
    Some(moment.duration_since(now).unwrap_or_default())
}

/// Network trouble is worth retrying; a bad URL or a TLS/certificate error is not (the next
/// attempt would meet the same certificate).
fn classify_ureq_error(url: &str, error: ureq::Error) -> Failure {
    let tls = |message: String| {
        Failure::Permanent(AssetError::Tls {
            url: url.to_owned(),
            message,
        })
    };
    match error {
        ureq::Error::BadUri(message) => Failure::Permanent(AssetError::Config(format!("bad URL {url}: {message}"))),
        ureq::Error::Tls(message) => tls(message.to_owned()),
        ureq::Error::Rustls(error) => tls(error.to_string()),
        ureq::Error::Io(error) if is_tls_error(&error) => tls(error.to_string()),
        other => Failure::Transient(other.to_string()),
    }
}

/// True for an I/O error that carries a rustls error (how a failed handshake surfaces).
fn is_tls_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// Exponential backoff from `base`, doubled per attempt, with up to 50% random jitter so that
/// many clients failing together do not retry together.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let jitter = exponential.mul_f64(fastrand::f64() * 0.5);
    exponential + jitter
}

/// A parsed `Content-Range: bytes {start}-{end}/{total|*}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

pub(crate) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        number => Some(number.parse().ok()?),
    };
    (start <= end).then_some(ContentRange { start, end, total })
}

/// The policy every URL and redirect hop must meet.
pub(crate) fn check_url_policy(url: &str, allow_insecure_http: bool) -> Result<(), AssetError> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| AssetError::Config(format!("bad URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if allow_insecure_http || uri.host().is_some_and(is_loopback_host) => Ok(()),
        Some("http") => Err(AssetError::InsecureUrl { url: url.to_owned() }),
        _ => Err(AssetError::Config(format!(
            "URL {url:?} must start with https:// (or http:// to a loopback host)"
        ))),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a `Location` header against the URL that answered with it.
fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..authority_end])
    } else {
        let path = base[..base.find(['?', '#']).unwrap_or(base.len())].to_owned();
        let dir_end = path.rfind('/').filter(|&i| i >= authority_end).map(|i| i + 1);
        match dir_end {
            Some(end) => format!("{}{location}", &path[..end]),
            None => format!("{path}/{location}"),
        }
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_and_rejects() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(parse_content_range("bytes 0-9/*").unwrap().total, None);
        assert_eq!(parse_content_range("bytes 9-0/10"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("4", now), Some(Duration::from_secs(4)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 02 Dec 2026 12:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Wed, 02 Dec 2026 11:59:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn http_is_refused_except_to_loopback() {
        for ok in [
            "https://cdn.example/x",
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]:99/x",
        ] {
            check_url_policy(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = check_url_policy("http://cdn.example/x", false).unwrap_err().to_string();
        assert_eq!(
            err,
            "refusing plain-http URL http://cdn.example/x: use https, a loopback host, or allow insecure http explicitly"
        );
        check_url_policy("http://cdn.example/x", true).unwrap();
        assert!(check_url_policy("ftp://h/x", true)
            .unwrap_err()
            .to_string()
            .contains("https://"));
    }

    #[test]
    fn locations_resolve_like_a_browser() {
        let base = "http://h:1/a/b/c.json?x=1";
        assert_eq!(resolve_location(base, "https://o/p"), "https://o/p");
        assert_eq!(resolve_location(base, "/root"), "http://h:1/root");
        assert_eq!(resolve_location(base, "d.json"), "http://h:1/a/b/d.json");
        assert_eq!(resolve_location("http://h", "x"), "http://h/x");
    }

    #[test]
    fn backoff_grows_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..5 {
            let exponential = base * (1 << (attempt - 1));
            let delay = backoff(base, attempt);
            assert!(delay >= exponential && delay <= exponential.mul_f64(1.5), "{delay:?}");
        }
    }

    #[test]
    fn refused_redirects_say_why() {
        assert_eq!(
            redirect_refusal("https://cdn.example/a", "http://cdn.example/a", true).unwrap(),
            "it would downgrade https to plain http"
        );
        assert!(redirect_refusal("http://127.0.0.1/a", "http://evil.example/a", false)
            .unwrap()
            .contains("plain http to a host that is not loopback"));
        assert!(redirect_refusal("http://127.0.0.1/a", "ftp://x/a", false)
            .unwrap()
            .contains("https://"));
        assert_eq!(
            redirect_refusal("http://127.0.0.1/a", "http://localhost/b", false),
            None
        );
    }

    #[test]
    fn rate_guard_abandons_only_after_a_slow_window() {
        let limits = Limits {
            min_bytes_per_second: 1000,
            rate_window: Duration::from_millis(50),
            ..Limits::default()
        };
        let mut guard = RateGuard::new(&limits, None, "u");
        guard.received(10).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let Err(Failure::Transient(err)) = guard.received(1) else {
            panic!("a slow window must be a transient failure")
        };
        assert!(
            err.starts_with("the transfer is slower than the minimum rate of 1000 bytes/s (11 bytes in"),
            "{err}"
        );
        let mut fast = RateGuard::new(&limits, None, "u");
        std::thread::sleep(Duration::from_millis(60));
        assert!(fast.received(1_000_000).is_ok());
    }

    #[test]
    fn rate_guard_stops_at_the_deadline() {
        let deadline = Deadline::after(Duration::from_millis(20));
        let mut guard = RateGuard::new(&Limits::default(), Some(deadline), "http://h/x");
        assert!(guard.received(1).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        let Err(Failure::Permanent(error)) = guard.received(1) else {
            panic!("a passed deadline must end the transfer")
        };
        assert!(matches!(error, AssetError::Deadline { .. }), "{error}");
    }

    #[test]
    fn sources_try_the_next_one_and_name_every_failure() {
        let urls = Sources::new("http://a/", &["http://b".to_owned()]).urls("k");
        let mut asked = Vec::new();
        let value = try_in_order("kernel", &urls, |url| {
            asked.push(url.to_owned());
            if url.starts_with("http://a") {
                Err(AssetError::HttpStatus {
                    url: url.to_owned(),
                    status: 403,
                })
            } else {
                Ok(7)
            }
        });
        assert_eq!(value.unwrap(), 7);
        assert_eq!(asked, ["http://a/k", "http://b/k"]);
        let error = try_in_order("kernel", &urls, |url| -> Result<(), _> {
            Err(AssetError::HttpStatus {
                url: url.to_owned(),
                status: 404,
            })
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "kernel: every source failed: GET http://a/k: HTTP status 404; GET http://b/k: HTTP status 404"
        );
    }
}

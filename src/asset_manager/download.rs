//! HTTP for the AssetManager: small documents (`latest.json`, manifests, signatures) fetched
//! into memory, and large objects streamed into a partial file beside their target while they
//! are hashed, then renamed into place (fsynced first where the platform names no boot: see
//! `cache`).
//!
//! Reads from the network and from partial files; writes only `{dir}/.partial-{name}.{sha256}`
//! and, once its digest is proven, the target itself, both through the directory handle
//! ([`Dir`]: no link is ever followed or created). Every request goes through [`Http::get`],
//! which enforces the URL policy (https, or http to loopback only unless allowed) on every
//! redirect hop and names both ends of a refused redirect.
//!
//! The rules for a download, each shown by a case in `tests/e2e/faults.rs`:
//! - A partial download is kept under a name keyed by its destination and its expected digest
//!   (so two destinations never share one) and resumed with `Range`; the kept prefix is
//!   re-hashed first. A resume is accepted only as a `206` whose `Content-Range` starts exactly
//!   where the prefix ends; a `200`, `416` or any other range restarts from zero.
//! - Network errors, short bodies, idle timeouts, transfers slower than the minimum rate over
//!   the rate window, and 5xx/408/429 are retried with exponential backoff and jitter, keeping
//!   the partial file; other statuses and certificate errors fail at once, naming the URL.
//! - A body longer than the manifest's `size` is refused before a byte of it is written.
//! - A digest mismatch deletes the partial file and starts over once; a second mismatch fails,
//!   naming the object, the expected and the actual digest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cache;
use super::error::AssetError;
use super::safe_fs::{self, Dir};
use super::{Phase, Progress, ProgressCallback};

/// Size of one read from the body: large enough that syscalls are not the limit, small enough
/// to stay in the CPU cache between hashing and writing, and to keep memory flat.
const CHUNK_BYTES: usize = 256 * 1024;

/// Longest nap of the hashing thread when it has caught up with the writer (it is woken
/// earlier by every write).
const HASHER_IDLE_WAIT: Duration = Duration::from_millis(5);

/// Bytes between two `Downloading` progress reports.
const PROGRESS_EVERY_BYTES: u64 = 1024 * 1024;

/// Redirects followed before a request is given up as a loop.
pub(crate) const MAX_REDIRECTS: u32 = 5;

/// Largest small document (manifest, `latest.json`, signature) accepted into memory.
pub(crate) const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Prefix of a partial download's file name; the destination's name and the digest follow.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// The time limits and retry policy of every request.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub min_bytes_per_second: u64,
    pub rate_window: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub allow_insecure_http: bool,
}

/// The HTTP settings shared by every request of one AssetManager.
pub(crate) struct Http {
    agent: ureq::Agent,
    limits: Limits,
}

/// One object to install: where it comes from, what it must hash to, where it goes.
#[derive(Clone)]
pub(crate) struct Job {
    /// Shown in progress and errors: `kernel`, `rootfs`, a binary's name.
    pub object: String,
    /// The full URL.
    pub url: String,
    /// The manifest's digest.
    pub sha256: String,
    /// The manifest's size, when it gives one.
    pub size: Option<u64>,
    /// The directory it is installed into.
    pub dir: Arc<Dir>,
    /// Its file name in that directory.
    pub name: String,
    /// Unix mode of the installed file.
    pub mode: u32,
}

impl Job {
    /// The final path, for messages.
    pub(crate) fn target(&self) -> std::path::PathBuf {
        self.dir.join(&self.name)
    }

    /// `.partial-{name}.{sha256}`: found again by what it must become, and distinct for every
    /// destination, so that two files with identical contents never share one.
    pub(crate) fn partial_name(&self) -> String {
        format!("{PARTIAL_PREFIX}{}.{}", self.name, self.sha256)
    }
}

/// Why one attempt failed, and so what to do next.
enum Failure {
    /// Worth retrying (the partial file is kept and resumed).
    Transient(String),
    /// Retrying cannot help.
    Permanent(AssetError),
    /// The whole body arrived but hashed to `actual`.
    Mismatch { actual: String },
}

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
        Http { agent, limits }
    }

    /// Refuses any scheme but https, and http to anything but loopback unless allowed.
    pub(crate) fn check_url(&self, url: &str) -> Result<(), AssetError> {
        check_url_policy(url, self.limits.allow_insecure_http)
    }

    /// Fetches a small document into memory, with retries and the same rate rule as downloads.
    pub(crate) fn fetch_document(&self, url: &str) -> Result<Vec<u8>, AssetError> {
        self.with_retries(url, || {
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
        self.with_retries(url, || {
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
            return Err(status_failure(url, status));
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut rate = RateGuard::new(&self.limits);
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Transient(format!("reading the body: {e}"))),
            };
            chunk(&buffer[..read])?;
            rate.received(read as u64).map_err(Failure::Transient)?;
        }
    }

    /// Downloads `job` into place, resuming a kept partial file, with retries.
    pub(crate) fn download(&self, job: &Job, progress: &ProgressCallback) -> Result<(), AssetError> {
        let mut restarted_after_mismatch = false;
        loop {
            let result = self.with_retries(&job.url, || download_attempt(self, job, progress));
            match result {
                Err(AssetError::DigestMismatch { .. }) if !restarted_after_mismatch => {
                    restarted_after_mismatch = true;
                }
                Err(AssetError::DigestMismatch { actual, .. }) => {
                    return Err(AssetError::DigestMismatch {
                        object: job.object.clone(),
                        url: job.url.clone(),
                        expected: job.sha256.clone(),
                        actual,
                    })
                }
                other => return other,
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out.
    fn with_retries<T>(&self, url: &str, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T, AssetError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt() {
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
                Err(Failure::Transient(message)) if attempts > self.limits.retries => {
                    return Err(AssetError::Transfer {
                        url: url.to_owned(),
                        message,
                        attempts,
                    })
                }
                Err(Failure::Transient(_)) => std::thread::sleep(backoff(self.limits.retry_backoff, attempts)),
            }
        }
    }

    /// One GET, following redirects by hand (each hop checked against the URL policy), with
    /// `Range: bytes={from}-` when resuming.
    fn get(&self, url: &str, range_from: Option<u64>) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.check_url(url).map_err(Failure::Permanent)?;
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&current);
            if let Some(from) = range_from {
                request = request.header("Range", format!("bytes={from}-"));
            }
            let response = request.call().map_err(|e| classify_ureq_error(&current, e))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| {
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
/// server trickling bytes (each read arriving before the idle timeout) cannot hold it for hours.
struct RateGuard {
    min_bytes_per_second: u64,
    window: Duration,
    window_started: Instant,
    window_bytes: u64,
}

impl RateGuard {
    fn new(limits: &Limits) -> RateGuard {
        RateGuard {
            min_bytes_per_second: limits.min_bytes_per_second,
            window: limits.rate_window,
            window_started: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Counts `bytes` more; an error once a whole window has passed below the minimum rate.
    fn received(&mut self, bytes: u64) -> Result<(), String> {
        self.window_bytes += bytes;
        let elapsed = self.window_started.elapsed();
        if self.min_bytes_per_second == 0 || elapsed < self.window {
            return Ok(());
        }
        let needed = self.min_bytes_per_second as f64 * elapsed.as_secs_f64();
        if (self.window_bytes as f64) < needed {
            return Err(format!(
                "the transfer is slower than the minimum rate of {} bytes/s ({} bytes in {:.1} s): abandoned",
                self.min_bytes_per_second,
                self.window_bytes,
                elapsed.as_secs_f64()
            ));
        }
        self.window_started = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

/// Opens the kept partial file of `job`, or creates a new one (`O_EXCL`).
fn open_partial(job: &Job) -> Result<File, AssetError> {
    let name = job.partial_name();
    match job.dir.open_regular(&name, true)? {
        Some(file) => Ok(file),
        None => job.dir.create_new(&name, 0o600),
    }
}

/// One try at a download: re-hash the kept prefix, ask for the rest, stream, verify, install.
fn download_attempt(http: &Http, job: &Job, progress: &ProgressCallback) -> Result<(), Failure> {
    let partial = job.dir.join(&job.partial_name());
    let io_failure = |step: &'static str| {
        let path = partial.clone();
        move |source| {
            Failure::Permanent(AssetError::Io {
                step,
                path,
                error: source,
            })
        }
    };
    let mut file = open_partial(job).map_err(Failure::Permanent)?;
    let mut kept = file.metadata().map_err(io_failure("reading metadata of"))?.len();
    if job.size.is_some_and(|size| kept > size) {
        // Longer than the manifest says the file is: it cannot be a prefix of it.
        file.set_len(0).map_err(io_failure("truncating"))?;
        kept = 0;
    }

    let mut hasher = Sha256::new();
    if kept > 0 {
        report(progress, job, Phase::Verifying, 0, Some(kept));
        hash_prefix(&mut file, kept, &mut hasher).map_err(io_failure("re-hashing the kept prefix of"))?;
        if hex(hasher.clone().finalize().as_slice()) == job.sha256 {
            return install(job, file).map_err(Failure::Permanent);
        }
    }

    let mut offset = kept;
    let (response, total) = request_body(http, job, &mut file, &mut hasher, &mut offset)?;
    if let (Some(announced), Some(size)) = (total, job.size) {
        if announced > size {
            return Err(Failure::Permanent(AssetError::TooLong {
                object: job.object.clone(),
                url: job.url.clone(),
                size,
                announced: Some(announced),
            }));
        }
    }
    let total = job.size.or(total);

    file.seek(SeekFrom::Start(offset)).map_err(io_failure("seeking in"))?;
    file.set_len(offset).map_err(io_failure("truncating"))?;
    if let Some(size) = job.size {
        preallocate(&file, offset, size.saturating_sub(offset));
    }
    let reader = response.into_body().into_reader();
    let (received, hasher) = stream_body(reader, &mut file, hasher, offset, total, job, progress, &http.limits)?;
    if let Some(total) = total {
        if offset + received != total {
            return Err(Failure::Transient(format!(
                "the body ended after {} of {total} bytes",
                offset + received
            )));
        }
    }
    let actual = hex(hasher.finalize().as_slice());
    if actual != job.sha256 {
        drop(file);
        let _ = job.dir.remove(&job.partial_name());
        return Err(Failure::Mismatch { actual });
    }
    install(job, file).map_err(Failure::Permanent)
}

/// Asks for the body from `offset` (the kept prefix) and settles what the server answers: a
/// matching range continues, anything else starts again from zero (`offset` and `hasher`
/// follow). Returns the response and the total size the server announced.
fn request_body(
    http: &Http,
    job: &Job,
    file: &mut File,
    hasher: &mut Sha256,
    offset: &mut u64,
) -> Result<(ureq::http::Response<ureq::Body>, Option<u64>), Failure> {
    let io_failure = |step: &'static str| {
        let path = job.dir.join(&job.partial_name());
        move |source| {
            Failure::Permanent(AssetError::Io {
                step,
                path,
                error: source,
            })
        }
    };
    loop {
        let response = http.get(&job.url, (*offset > 0).then_some(*offset))?;
        let status = response.status().as_u16();
        let content_length = header(&response, "content-length").and_then(|v| v.parse::<u64>().ok());
        match status {
            206 if *offset > 0 => {
                let range = header(&response, "content-range").and_then(parse_content_range);
                match range {
                    Some(range) if range.start == *offset && range.total.map_or(true, |t| t == range.end + 1) => {
                        return Ok((response, range.total.or(Some(range.end + 1))));
                    }
                    // A range we did not ask for: throw the prefix away and start from zero.
                    _ => restart_from_zero(file, hasher, offset).map_err(io_failure("truncating"))?,
                }
            }
            200 => {
                if *offset > 0 {
                    // The server ignored the range and sends everything: take it from the start.
                    restart_from_zero(file, hasher, offset).map_err(io_failure("truncating"))?;
                }
                return Ok((response, content_length));
            }
            // The kept prefix is not a prefix the server knows (416): start from zero.
            416 if *offset > 0 => restart_from_zero(file, hasher, offset).map_err(io_failure("truncating"))?,
            other => return Err(status_failure(&job.url, other)),
        }
    }
}

/// Reads the body into the partial file while a second thread hashes the same chunks from
/// memory. Returns the bytes received and the hasher.
///
/// The chunks pass through a small ring of buffers ([`Ring`]): the writer reads a chunk from
/// the network into a free slot, writes it to the file and hands the slot over; the hasher
/// hashes it and gives it back. Each side waits only when the ring is full or empty. Hashing
/// from the file instead (reading it back from the page cache) copied every byte once more and
/// was about 13% slower on a 2-core machine (A/B runs of release builds, 1 GiB from nginx on
/// loopback); hashing in the writer's own loop was slower by about the hashing time.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the arguments.
fn stream_body(
    mut reader: impl Read,
    file: &mut File,
    hasher: Sha256,
    offset: u64,
    total: Option<u64>,
    job: &Job,
    progress: &ProgressCallback,
    limits: &Limits,
) -> Result<(u64, Sha256), Failure> {
    let ring = Ring::new();
    let writer = std::thread::current();
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| ring.hash(hasher, &writer));
        let result = write_body(&mut reader, file, offset, total, job, progress, limits, &ring, &hashing);
        ring.finished.store(true, Ordering::Release);
        hashing.thread().unpark();
        let hasher = hashing.join().expect("the hashing thread does not panic");
        Ok((result?, hasher))
    })
}

/// Buffers in flight between the writer and the hasher.
const RING_SLOTS: u64 = 8;

/// The hand-over of [`stream_body`]: slot `n % RING_SLOTS` holds chunk `n`; `filled` counts the
/// chunks handed to the hasher, `hashed` the ones it gave back.
struct Ring {
    slots: Vec<Mutex<Slot>>,
    filled: AtomicU64,
    hashed: AtomicU64,
    finished: AtomicBool,
}

/// One buffer and how many of its bytes are a chunk.
struct Slot {
    bytes: Box<[u8]>,
    length: usize,
}

impl Ring {
    fn new() -> Ring {
        let slot = || {
            Mutex::new(Slot {
                bytes: vec![0u8; CHUNK_BYTES].into_boxed_slice(),
                length: 0,
            })
        };
        Ring {
            slots: (0..RING_SLOTS).map(|_| slot()).collect(),
            filled: AtomicU64::new(0),
            hashed: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn slot(&self, chunk: u64) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[(chunk % RING_SLOTS) as usize]
            .lock()
            .expect("neither side panics while holding a slot")
    }

    /// The writer's wait for a free slot for chunk `chunk`.
    fn wait_for_free_slot(&self, chunk: u64) {
        while chunk - self.hashed.load(Ordering::Acquire) >= RING_SLOTS {
            std::thread::park_timeout(HASHER_IDLE_WAIT);
        }
    }

    /// The hasher's side: hashes chunk after chunk until the writer has finished and every
    /// chunk handed over is hashed.
    fn hash(&self, mut hasher: Sha256, writer: &std::thread::Thread) -> Sha256 {
        let mut hashed = 0u64;
        loop {
            // Read `finished` before `filled`: once finished is seen, `filled` is final.
            let done = self.finished.load(Ordering::Acquire);
            if self.filled.load(Ordering::Acquire) == hashed {
                if done {
                    return hasher;
                }
                std::thread::park_timeout(HASHER_IDLE_WAIT);
                continue;
            }
            {
                let slot = self.slot(hashed);
                hasher.update(&slot.bytes[..slot.length]);
            }
            hashed += 1;
            self.hashed.store(hashed, Ordering::Release);
            writer.unpark();
        }
    }
}

/// The writer's side of [`stream_body`]: body to file through the ring's slots.
#[allow(clippy::too_many_arguments)] // Private helper of stream_body, same arguments.
fn write_body<T>(
    reader: &mut impl Read,
    file: &mut File,
    offset: u64,
    total: Option<u64>,
    job: &Job,
    progress: &ProgressCallback,
    limits: &Limits,
    ring: &Ring,
    hashing: &std::thread::ScopedJoinHandle<'_, T>,
) -> Result<u64, Failure> {
    let mut rate = RateGuard::new(limits);
    let mut received = 0u64;
    let mut reported_at = 0u64;
    report(progress, job, Phase::Downloading, offset, total);
    let mut chunk = 0u64;
    loop {
        ring.wait_for_free_slot(chunk);
        let mut slot = ring.slot(chunk);
        let length = match reader.read(&mut slot.bytes) {
            Ok(0) => return Ok(received),
            Ok(length) => length,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // What did arrive is on disk already: a valid prefix to resume from.
            Err(e) => {
                return Err(Failure::Transient(format!(
                    "the transfer broke after {} bytes: {e}",
                    offset + received
                )))
            }
        };
        if let Some(size) = job.size {
            if offset + received + length as u64 > size {
                return Err(Failure::Permanent(AssetError::TooLong {
                    object: job.object.clone(),
                    url: job.url.clone(),
                    size,
                    announced: None,
                }));
            }
        }
        file.write_all(&slot.bytes[..length]).map_err(|source| {
            Failure::Permanent(AssetError::Io {
                step: "writing",
                path: job.dir.join(&job.partial_name()),
                error: source,
            })
        })?;
        slot.length = length;
        drop(slot);
        chunk += 1;
        ring.filled.store(chunk, Ordering::Release);
        hashing.thread().unpark();
        received += length as u64;
        if received - reported_at >= PROGRESS_EVERY_BYTES {
            reported_at = received;
            report(progress, job, Phase::Downloading, offset + received, total);
        }
        rate.received(length as u64).map_err(Failure::Transient)?;
    }
}

/// Reserves the disk blocks of the rest of the file up front (`fallocate` with `KEEP_SIZE`: the
/// file's length still counts only the bytes written, so a resume finds the same prefix). The
/// writes then fill reserved blocks instead of allocating them page by page: with it a 1 GiB
/// install to ext4 was faster than `curl -o` alone, without it 1.3x slower (A/B runs of two
/// release builds, 1 GiB from nginx on loopback). Only for the manifest's `size`, never a size
/// the server announces, and not on tmpfs, which has no blocks to reserve and would only zero
/// the memory first (measured slower there).
/// A hint: a file system that cannot do it is not an error.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, from: u64, length: u64) {
    /// `f_type` of tmpfs (`TMPFS_MAGIC` in linux/magic.h).
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let on_tmpfs = rustix::fs::fstatfs(file).is_ok_and(|fs| fs.f_type as u64 == TMPFS_MAGIC);
    if length > 0 && !on_tmpfs {
        let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, from, length);
    }
}

#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _from: u64, _length: u64) {}

/// Makes the verified partial file the target: mode, rename. Where the platform names its boot
/// the install does not wait for the disk (its record names the boot: see `cache`); elsewhere
/// the file is fsynced before the rename and the directory after it.
fn install(job: &Job, file: File) -> Result<(), AssetError> {
    let partial = job.partial_name();
    let durable = cache::this_boot().is_none();
    if durable {
        file.sync_all()
            .map_err(AssetError::io("syncing", job.dir.join(&partial)))?;
    }
    safe_fs::set_mode(&file, job.mode).map_err(AssetError::io("setting the mode of", job.dir.join(&partial)))?;
    drop(file);
    // Whatever was planted at the final path (a link, a file) is replaced, never followed.
    job.dir.rename(&partial, &job.name)?;
    if durable {
        job.dir.sync();
    }
    Ok(())
}

/// Installs `job` from `source`, an installed file with the same expected digest, copying it
/// through the job's own partial file and hashing it on the way: identical contents are
/// downloaded once, and every destination still gets its own verified, regular file.
pub(crate) fn install_copy(job: &Job, source: &mut File, progress: &ProgressCallback) -> Result<(), AssetError> {
    let partial = job.partial_name();
    job.dir.remove_foreign(&partial)?;
    job.dir.remove(&partial)?;
    let mut file = job.dir.create_new(&partial, 0o600)?;
    let length = source
        .metadata()
        .map_err(AssetError::io("reading metadata of", job.target()))?
        .len();
    report(progress, job, Phase::Verifying, 0, Some(length));
    source
        .seek(SeekFrom::Start(0))
        .map_err(AssetError::io("reading", job.target()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = source
            .read(&mut buffer)
            .map_err(AssetError::io("reading", job.target()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .map_err(AssetError::io("writing", job.dir.join(&partial)))?;
    }
    let actual = hex(hasher.finalize().as_slice());
    if actual != job.sha256 {
        drop(file);
        let _ = job.dir.remove(&partial);
        return Err(AssetError::DigestMismatch {
            object: job.object.clone(),
            url: job.url.clone(),
            expected: job.sha256.clone(),
            actual,
        });
    }
    install(job, file)
}

/// Feeds the first `length` bytes of `file` to `hasher`.
fn hash_prefix(file: &mut File, length: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut reader = file.take(length);
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

/// SHA-256 of a whole open file, reporting progress as `Verifying`.
pub(crate) fn hash_file(file: &mut File, job: &Job, progress: &ProgressCallback) -> std::io::Result<String> {
    let length = file.metadata()?.len();
    report(progress, job, Phase::Verifying, 0, Some(length));
    let mut hasher = Sha256::new();
    hash_prefix(file, length, &mut hasher)?;
    Ok(hex(hasher.finalize().as_slice()))
}

fn restart_from_zero(file: &mut File, hasher: &mut Sha256, offset: &mut u64) -> std::io::Result<()> {
    file.set_len(0)?;
    *hasher = Sha256::new();
    *offset = 0;
    Ok(())
}

pub(crate) fn report(progress: &ProgressCallback, job: &Job, phase: Phase, bytes_done: u64, bytes_total: Option<u64>) {
    progress(&Progress {
        name: &job.object,
        phase,
        bytes_done,
        bytes_total,
    });
}

fn header<'a>(response: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|value| value.to_str().ok())
}

/// A status that is not a success: 5xx, 408 and 429 are worth retrying; the rest are not.
fn status_failure(url: &str, status: u16) -> Failure {
    if status >= 500 || status == 408 || status == 429 {
        Failure::Transient(format!("HTTP status {status}"))
    } else {
        Failure::Permanent(AssetError::HttpStatus {
            url: url.to_owned(),
            status,
        })
    }
}

/// Network trouble is worth retrying; a bad URL or a TLS/certificate error is not (the next
/// attempt would meet the same certificate).
fn classify_ureq_error(url: &str, error: ureq::Error) -> Failure {
    match error {
        ureq::Error::BadUri(message) => Failure::Permanent(AssetError::Config(format!("bad URL {url}: {message}"))),
        ureq::Error::Tls(message) => Failure::Permanent(AssetError::Tls {
            url: url.to_owned(),
            message: message.to_owned(),
        }),
        ureq::Error::Rustls(error) => Failure::Permanent(AssetError::Tls {
            url: url.to_owned(),
            message: error.to_string(),
        }),
        ureq::Error::Io(error) if is_tls_error(&error) => Failure::Permanent(AssetError::Tls {
            url: url.to_owned(),
            message: error.to_string(),
        }),
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
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
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

fn hex(bytes: &[u8]) -> String {
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
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            min_bytes_per_second: 1000,
            rate_window: Duration::from_millis(50),
            retries: 0,
            retry_backoff: Duration::ZERO,
            allow_insecure_http: false,
        };
        let mut guard = RateGuard::new(&limits);
        guard.received(10).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let err = guard.received(1).unwrap_err();
        assert!(
            err.starts_with("the transfer is slower than the minimum rate of 1000 bytes/s (11 bytes in"),
            "{err}"
        );
        let mut fast = RateGuard::new(&limits);
        std::thread::sleep(Duration::from_millis(60));
        fast.received(1_000_000).unwrap();
    }

    #[test]
    fn transient_and_permanent_statuses() {
        assert!(matches!(status_failure("u", 503), Failure::Transient(_)));
        assert!(matches!(status_failure("u", 429), Failure::Transient(_)));
        assert!(matches!(
            status_failure("u", 404),
            Failure::Permanent(AssetError::HttpStatus { status: 404, .. })
        ));
    }
}

//! The install layer: the per-file job. Makes sure one file is installed and verified — by its
//! record, by hashing it, by copying an identical file, or by downloading it into a partial
//! file beside its target while it is hashed — then renames it into place (fsynced first where
//! the platform names no boot: see `records`).
//!
//! Reads from the network through the HTTP layer and from partial files; writes only
//! `{dir}/.partial-{name}.{sha256}` (and, for parallel ranges, its segment files
//! `.partial-{name}.{sha256}.{start}-{end}`), the target once its digest and size are proven,
//! and its record, all through the directory handle ([`Dir`]: no link is ever followed or
//! created). Imports the progress, HTTP and records layers, never the facade.
//!
//! The rules for a download, each shown by a case in `tests/e2e/faults/`:
//! - A partial download is kept under a name keyed by its destination and its expected digest
//!   (so two destinations never share one) and resumed with `Range`; the kept prefix is
//!   re-hashed first. A resume is accepted only as a `206` whose `Content-Range` starts exactly
//!   where the prefix ends; a `200`, `416` or any other range restarts from zero.
//! - A body longer than the manifest's `size` is refused before a byte of it is written; an
//!   object whose length is not the manifest's `size` is refused on every path (fresh, resumed,
//!   kept partial, copy, warm start), naming both numbers.
//! - A digest mismatch deletes the partial file and starts over once; a second mismatch fails,
//!   naming the object, the expected and the actual digest. With mirrors, the next source is
//!   tried after a source fails.
//! - A large object of known size on a slow link is split into ranges (see `ranges`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::AssetError;
use super::http::{self, hex, Failure, Http, Response};
use super::progress::{self, Phase, ProgressCallback};
use super::ranges::{self, Segments};
use super::records;
use super::safe_fs::{self, Dir, EntryKind};

/// Size of one read from the body: large enough that syscalls are not the limit, small enough
/// to stay in the CPU cache between hashing and writing, and to keep memory flat.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// Longest nap of the hashing thread when it has caught up with the writer (it is woken
/// earlier by every write).
const HASHER_IDLE_WAIT: Duration = Duration::from_millis(5);

/// Bytes between two `Downloading` progress reports.
const PROGRESS_EVERY_BYTES: u64 = 1024 * 1024;

/// Prefix of a partial download's file name; the destination's name and the digest follow.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// Buffers in flight between the writer and the hasher.
const RING_SLOTS: u64 = 8;

/// One object to install: where it comes from, what it must hash to, where it goes.
#[derive(Clone)]
pub(crate) struct Job {
    /// Shown in progress and errors: `kernel`, `rootfs`, a binary's name.
    pub object: String,
    /// Its URL on every source, in the order they are tried.
    pub urls: Vec<String>,
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

    /// The first URL, for errors that concern the object rather than one source.
    fn first_url(&self) -> &str {
        self.urls.first().map(String::as_str).unwrap_or_default()
    }

    /// Refuses content whose length is not the manifest's `size` (its digest already matched).
    fn check_size(&self, url: &str, actual: u64) -> Result<(), AssetError> {
        match self.size {
            Some(size) if size != actual => Err(AssetError::SizeMismatch {
                object: self.object.clone(),
                url: url.to_owned(),
                size,
                actual,
            }),
            _ => Ok(()),
        }
    }

    fn report(&self, progress: &ProgressCallback, phase: Phase, done: u64, total: Option<u64>) {
        progress::report(progress, &self.object, phase, done, total);
    }
}

/// What every install of one call shares: the HTTP settings (with the call's deadline), the
/// progress callback, and how many connections one large object may use.
pub(crate) struct Context<'a> {
    pub http: &'a Http,
    pub progress: &'a ProgressCallback,
    pub connections: usize,
}

impl Context<'_> {
    /// Makes sure one file is installed and verified: by its record, by hashing it, by copying
    /// it from `same_content` (an installed file with the same digest), or by downloading it.
    pub(crate) fn ensure_installed(&self, job: &Job, same_content: Option<&Job>) -> Result<(), AssetError> {
        job.report(self.progress, Phase::Checking, 0, job.size);
        // A link (or FIFO, …) at the final path is removed and reported, never followed.
        if job.dir.kind(&job.name)? == EntryKind::Foreign {
            job.dir.remove_foreign(&job.name)?;
        }
        if self.installed_already(job)? {
            return Ok(());
        }
        let copied = match same_content.map(|source| source.dir.open_regular(&source.name, false)) {
            Some(Ok(Some(mut source))) => match install_copy(job, &mut source, self.progress) {
                Err(error @ AssetError::SizeMismatch { .. }) => return Err(error),
                result => result.is_ok(),
            },
            _ => false,
        };
        if !copied {
            self.download(job)?;
        }
        records::write_verified(&job.dir, &job.name, &job.sha256, records::this_boot())?;
        let size = job.dir.stamp(&job.name).map(|s| s.size).unwrap_or(0);
        job.report(self.progress, Phase::Ready, size, Some(size));
        Ok(())
    }

    /// True when the installed file is verified already: by its record, or (without one) by
    /// hashing it. A file whose digest is wrong is removed; one whose size is not the
    /// manifest's is refused.
    fn installed_already(&self, job: &Job) -> Result<bool, AssetError> {
        let verified = records::check(&job.dir, &job.name, &job.sha256);
        if verified != records::Verified::No {
            if let Some(file) = job.dir.open_regular(&job.name, false)? {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                job.check_size(&job.target().display().to_string(), size)?;
                ensure_mode(&file, job)?;
                if verified == records::Verified::Durable || make_durable(job, &file) {
                    job.report(self.progress, Phase::Cached, size, Some(size));
                    return Ok(true);
                }
            }
        }
        records::remove_verified(&job.dir, &job.name);
        let Some(mut file) = job.dir.open_regular(&job.name, false)? else {
            return Ok(false);
        };
        // Installed before, but without a valid record: the digest decides.
        let actual = hash_file(&mut file, job, self.progress).map_err(AssetError::io("hashing", job.target()))?;
        if actual != job.sha256 {
            // Changed on disk: it must not stay where the runtime would boot it.
            drop(file);
            job.dir.remove(&job.name)?;
            return Ok(false);
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        job.check_size(&job.target().display().to_string(), size)?;
        ensure_mode(&file, job)?;
        file.sync_all().map_err(AssetError::io("syncing", job.target()))?;
        drop(file);
        records::write_verified(&job.dir, &job.name, &job.sha256, None)?;
        job.report(self.progress, Phase::Cached, size, Some(size));
        Ok(true)
    }

    /// Downloads `job` into place from its first source that works, resuming a kept partial
    /// file, with retries.
    pub(crate) fn download(&self, job: &Job) -> Result<(), AssetError> {
        http::try_in_order(&job.object, &job.urls, |url| self.download_from(job, url))
    }

    /// Downloads `job` from `url`: with retries, and once more from scratch after a digest
    /// mismatch.
    fn download_from(&self, job: &Job, url: &str) -> Result<(), AssetError> {
        let ranges_refused = AtomicBool::new(false);
        let waiting = |wait, asked| progress::report_wait(self.progress, &job.object, wait, asked);
        let mut restarted_after_mismatch = false;
        loop {
            let attempt = Attempt {
                context: self,
                job,
                url,
                ranges_refused: &ranges_refused,
            };
            let result = self.http.with_retries(url, &waiting, || attempt.run());
            match result {
                Err(AssetError::DigestMismatch { .. }) if !restarted_after_mismatch => {
                    restarted_after_mismatch = true;
                }
                Err(AssetError::DigestMismatch { actual, .. }) => {
                    return Err(AssetError::DigestMismatch {
                        object: job.object.clone(),
                        url: url.to_owned(),
                        expected: job.sha256.clone(),
                        actual,
                    })
                }
                other => return other,
            }
        }
    }
}

/// One try at a download from one source.
struct Attempt<'a> {
    context: &'a Context<'a>,
    job: &'a Job,
    url: &'a str,
    /// Set once a range request was refused: this source is then read in one stream.
    ranges_refused: &'a AtomicBool,
}

impl Attempt<'_> {
    fn io_failure(&self, step: &'static str) -> impl FnOnce(std::io::Error) -> Failure {
        let path = self.job.dir.join(&self.job.partial_name());
        move |error| Failure::Permanent(AssetError::Io { step, path, error })
    }

    /// Re-hash the kept prefix, ask for the rest, stream (splitting into ranges when it pays),
    /// verify, install.
    fn run(&self) -> Result<(), Failure> {
        let job = self.job;
        let mut file = open_partial(job).map_err(Failure::Permanent)?;
        let mut kept = file.metadata().map_err(self.io_failure("reading metadata of"))?.len();
        if job.size.is_some_and(|size| kept > size) {
            // Longer than the manifest says the file is: it cannot be a prefix of it.
            file.set_len(0).map_err(self.io_failure("truncating"))?;
            kept = 0;
        }
        let segments =
            Segments::find(job, kept, self.ranges_refused.load(Ordering::Relaxed)).map_err(Failure::Permanent)?;
        let mut hasher = Sha256::new();
        if kept > 0 {
            job.report(self.context.progress, Phase::Verifying, 0, Some(kept));
            hash_prefix(&mut file, kept, &mut hasher).map_err(self.io_failure("re-hashing the kept prefix of"))?;
            if segments.is_empty() && hex(hasher.clone().finalize().as_slice()) == job.sha256 {
                job.check_size(self.url, kept).map_err(Failure::Permanent)?;
                return install(job, file).map_err(Failure::Permanent);
            }
        }
        let mut offset = kept;
        let (response, total) = self.request_body(&mut file, &mut hasher, &mut offset)?;
        file.seek(SeekFrom::Start(offset))
            .map_err(self.io_failure("seeking in"))?;
        file.set_len(offset).map_err(self.io_failure("truncating"))?;
        if let Some(size) = job.size {
            preallocate(&file, offset, size.saturating_sub(offset));
        }
        let may_split = total.is_some() && http::header(&response, "accept-ranges") == Some("bytes")
            || response.status().as_u16() == 206;
        let stream = Stream {
            attempt: self,
            offset,
            total,
            may_split: may_split && !self.ranges_refused.load(Ordering::Relaxed),
            segments,
        };
        let hasher = stream.run(response.into_body().into_reader(), &mut file, hasher)?;
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
    /// follow). Returns the response and the object's full length (the manifest's, else the
    /// server's).
    fn request_body(
        &self,
        file: &mut File,
        hasher: &mut Sha256,
        offset: &mut u64,
    ) -> Result<(Response, Option<u64>), Failure> {
        loop {
            let response = self
                .context
                .http
                .get(self.url, (*offset > 0).then_some((*offset, None)))?;
            let status = response.status().as_u16();
            let content_length = http::header(&response, "content-length").and_then(|v| v.parse::<u64>().ok());
            let announced = match status {
                206 if *offset > 0 => {
                    match http::header(&response, "content-range").and_then(http::parse_content_range) {
                        Some(range) if range.start == *offset && range.total.map_or(true, |t| t == range.end + 1) => {
                            range.total.or(Some(range.end + 1))
                        }
                        // A range we did not ask for: throw the prefix away and start from zero.
                        _ => {
                            restart_from_zero(file, hasher, offset).map_err(self.io_failure("truncating"))?;
                            continue;
                        }
                    }
                }
                200 => {
                    if *offset > 0 {
                        // The server ignored the range and sends everything: take it from the start.
                        restart_from_zero(file, hasher, offset).map_err(self.io_failure("truncating"))?;
                    }
                    content_length
                }
                // The kept prefix is not a prefix the server knows (416): start from zero.
                416 if *offset > 0 => {
                    restart_from_zero(file, hasher, offset).map_err(self.io_failure("truncating"))?;
                    continue;
                }
                _ => return Err(http::status_failure(self.url, &response)),
            };
            self.check_announced(announced).map_err(Failure::Permanent)?;
            return Ok((response, self.job.size.or(announced)));
        }
    }

    /// Refuses a server that announces another length than the manifest's `size`.
    fn check_announced(&self, announced: Option<u64>) -> Result<(), AssetError> {
        match (announced, self.job.size) {
            (Some(announced), Some(size)) if announced > size => Err(AssetError::TooLong {
                object: self.job.object.clone(),
                url: self.url.to_owned(),
                size,
                announced: Some(announced),
            }),
            (Some(announced), Some(_)) => self.job.check_size(self.url, announced),
            _ => Ok(()),
        }
    }
}

/// One body transfer into the partial file: where it starts, how long the object is, whether
/// the rest may be split into ranges, and the segments already there from an earlier attempt.
struct Stream<'a> {
    attempt: &'a Attempt<'a>,
    offset: u64,
    total: Option<u64>,
    may_split: bool,
    segments: Segments,
}

impl Stream<'_> {
    /// Reads the body into the partial file while a second thread hashes the same chunks from
    /// memory, then adds the range segments (hashed on the way). Returns the hasher.
    ///
    /// The chunks pass through a small ring of buffers ([`Ring`]): the writer reads a chunk from
    /// the network into a free slot, writes it to the file and hands the slot over; the hasher
    /// hashes it and gives it back. Each side waits only when the ring is full or empty. Hashing
    /// from the file instead (reading it back from the page cache) copied every byte once more
    /// and was about 13% slower on a 2-core machine (A/B runs of release builds, 1 GiB from
    /// nginx on loopback); hashing in the writer's own loop was slower by about the hashing time.
    fn run(mut self, mut reader: impl Read, file: &mut File, hasher: Sha256) -> Result<Sha256, Failure> {
        let ring = Ring::new();
        let writer = std::thread::current();
        let (received, mut hasher) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| ring.hash(hasher, &writer));
            let result = self.write_body(&mut reader, file, &ring, hashing.thread());
            ring.finished.store(true, Ordering::Release);
            hashing.thread().unpark();
            let hasher = hashing.join().expect("the hashing thread does not panic");
            result.map(|received| (received, hasher))
        })?;
        let attempt = self.attempt;
        let end = self.offset + received;
        if self.segments.is_empty() {
            if let Some(total) = self.total.filter(|&total| total != end) {
                return Err(Failure::Transient(format!(
                    "the body ended after {end} of {total} bytes"
                )));
            }
            return Ok(hasher);
        }
        let progress = |done| {
            attempt
                .job
                .report(attempt.context.progress, Phase::Downloading, end + done, self.total)
        };
        let waited = self.segments.wait(&progress);
        if self.segments.refused() {
            attempt.ranges_refused.store(true, Ordering::Relaxed);
        }
        waited?;
        self.segments.append_to(file, end, &mut hasher)?;
        Ok(hasher)
    }

    /// The writer's side: body to file through the ring's slots, up to the first segment when
    /// there are segments (started here when the rest is worth splitting). Returns the bytes
    /// received.
    fn write_body(
        &mut self,
        reader: &mut impl Read,
        file: &mut File,
        ring: &Ring,
        hashing: &std::thread::Thread,
    ) -> Result<u64, Failure> {
        let (job, context) = (self.attempt.job, self.attempt.context);
        let mut rate = context.http.rate_guard(self.attempt.url);
        let started = Instant::now();
        let (mut received, mut reported_at, mut chunk) = (0u64, 0u64, 0u64);
        job.report(context.progress, Phase::Downloading, self.offset, self.total);
        self.segments.start(self.attempt.context.http, self.attempt.url);
        loop {
            let position = self.offset + received;
            let stop_at = self.segments.first_start().unwrap_or(u64::MAX);
            if position >= stop_at {
                return Ok(received);
            }
            ring.wait_for_free_slot(chunk);
            let mut slot = ring.slot(chunk);
            let want = slot
                .bytes
                .len()
                .min(usize::try_from(stop_at - position).unwrap_or(usize::MAX));
            let length = match reader.read(&mut slot.bytes[..want]) {
                Ok(0) => return Ok(received),
                Ok(length) => length,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // What did arrive is on disk already: a valid prefix to resume from.
                Err(e) => {
                    return Err(Failure::Transient(format!(
                        "the transfer broke after {position} bytes: {e}"
                    )))
                }
            };
            if let Some(size) = job.size.filter(|&size| position + length as u64 > size) {
                return Err(Failure::Permanent(AssetError::TooLong {
                    object: job.object.clone(),
                    url: self.attempt.url.to_owned(),
                    size,
                    announced: None,
                }));
            }
            file.write_all(&slot.bytes[..length])
                .map_err(self.attempt.io_failure("writing"))?;
            slot.length = length;
            drop(slot);
            chunk += 1;
            ring.filled.store(chunk, Ordering::Release);
            hashing.unpark();
            received += length as u64;
            if received - reported_at >= PROGRESS_EVERY_BYTES {
                reported_at = received;
                let done = position + length as u64 + self.segments.received();
                job.report(context.progress, Phase::Downloading, done, self.total);
                self.consider_split(started.elapsed(), received, position + length as u64);
            }
            rate.received(length as u64)?;
        }
    }

    /// Splits the rest into ranges once, when it is worth it (see `ranges::worth_splitting`).
    fn consider_split(&mut self, elapsed: Duration, received: u64, position: u64) {
        let (Some(total), true) = (self.total, self.may_split) else {
            return;
        };
        let connections = self.attempt.context.connections;
        if let Some(plan) = ranges::worth_splitting(elapsed, received, position, total, connections) {
            self.may_split = false;
            self.segments = Segments::plan(self.attempt.job, plan);
            self.segments.start(self.attempt.context.http, self.attempt.url);
        }
    }
}

/// The hand-over of [`Stream::run`]: slot `n % RING_SLOTS` holds chunk `n`; `filled` counts the
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

/// Opens the kept partial file of `job`, or creates a new one (`O_EXCL`).
fn open_partial(job: &Job) -> Result<File, AssetError> {
    let name = job.partial_name();
    match job.dir.open_regular(&name, true)? {
        Some(file) => Ok(file),
        None => job.dir.create_new(&name, 0o600),
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
/// the install does not wait for the disk (its record names the boot: see `records`); elsewhere
/// the file is fsynced before the rename and the directory after it.
fn install(job: &Job, file: File) -> Result<(), AssetError> {
    let partial = job.partial_name();
    let durable = records::this_boot().is_none();
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
    job.report(progress, Phase::Verifying, 0, Some(length));
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
    let checked = if actual != job.sha256 {
        Err(AssetError::DigestMismatch {
            object: job.object.clone(),
            url: job.first_url().to_owned(),
            expected: job.sha256.clone(),
            actual,
        })
    } else {
        job.check_size(&job.target().display().to_string(), length)
    };
    if let Err(error) = checked {
        drop(file);
        let _ = job.dir.remove(&partial);
        return Err(error);
    }
    install(job, file)
}

/// Feeds the first `length` bytes of `file` to `hasher`.
pub(crate) fn hash_prefix(file: &mut File, length: u64, hasher: &mut Sha256) -> std::io::Result<()> {
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
fn hash_file(file: &mut File, job: &Job, progress: &ProgressCallback) -> std::io::Result<String> {
    let length = file.metadata()?.len();
    job.report(progress, Phase::Verifying, 0, Some(length));
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

/// Makes an install of this boot durable (file and directory fsynced, then a record without a
/// boot); false when the disk refuses, and then the record is dropped and the digest decides.
fn make_durable(job: &Job, file: &File) -> bool {
    if file.sync_all().is_err() {
        return false;
    }
    job.dir.sync();
    records::write_verified(&job.dir, &job.name, &job.sha256, None).is_ok()
}

/// Sets the job's mode on the open installed file when it differs (never through a path).
fn ensure_mode(file: &File, job: &Job) -> Result<(), AssetError> {
    let current = safe_fs::mode_of(file).map_err(AssetError::io("reading metadata of", job.target()))?;
    if current != job.mode {
        safe_fs::set_mode(file, job.mode).map_err(AssetError::io("setting the mode of", job.target()))?;
    }
    Ok(())
}

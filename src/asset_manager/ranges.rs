//! Parallel ranges, part of the install layer: a large object of known size on a slow link is
//! split while it downloads. The stream that is running keeps the first share of the rest (and
//! its in-memory hashing); up to `connections - 1` more connections fetch the other shares with
//! `Range: bytes={start}-{last}`, each into its own segment file beside the partial file,
//! `.partial-{name}.{sha256}.{start}-{end}`. When all are done the segments are appended to the
//! partial file in order, hashed on the way, and removed: one verified file, as before.
//!
//! A split happens only when it pays: after [`SPLIT_CHECK_AFTER`] of body, when the rest is at
//! least [`RANGES_MIN_BYTES`], would take more than [`SPLIT_WORTH`] at the current rate, and
//! the rate is below [`SPLIT_BELOW_RATE`] (faster than that, appending the segments would cost
//! more than the connections gain). A segment file is a plain prefix of its range, so an
//! interrupted download resumes every segment where it stopped; a server that answers a range
//! with anything but the exact `206` makes the source fall back to one stream.
//!
//! Reads the network through the HTTP layer; writes only the segment files and (when
//! appending) the partial file, through the directory handle (never through a link).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::AssetError;
use super::http::{self, Failure, Http};
use super::install::{Job, CHUNK_BYTES};

/// Connections one large object may use by default (the running stream included). Measured
/// with `cargo xtask bench fetch --size-mib 256 --runs 3` against nginx with `limit_rate` 16 MiB/s
/// per connection (medians; curl -o 16.5 s): 1 connection 16.7 s, 2 9.7 s, 4 6.4 s, 8 4.6 s
/// (3.6x curl), peak RSS 13.2 MiB. See the README ("Parallel ranges, measured").
pub const DEFAULT_CONNECTIONS: usize = 8;

/// Body time before a split is considered: the rate is known by then.
const SPLIT_CHECK_AFTER: Duration = Duration::from_secs(1);

/// The rest must take longer than this at the current rate for a split to pay.
const SPLIT_WORTH: Duration = Duration::from_secs(2);

/// Faster than this (bytes per second), one stream is kept: appending the segments (a copy and
/// a hash from the page cache, about 1 GB/s here) would cost more than the extra connections
/// gain.
const SPLIT_BELOW_RATE: f64 = 64.0 * 1024.0 * 1024.0;

/// The smallest rest worth splitting.
const RANGES_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// Segment boundaries are multiples of this.
const SEGMENT_ALIGN: u64 = 64 * 1024;

/// How often the progress of running segments is reported while the stream waits for them.
const WAIT_REPORT_EVERY: Duration = Duration::from_millis(200);

/// A split: the running stream keeps `[position, from)`, `parts` connections share
/// `[from, total)`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub from: u64,
    pub total: u64,
    pub parts: usize,
}

/// Whether the rest of a stream at `position` of `total`, which received `received` bytes in
/// `elapsed`, is worth splitting over `connections`, and how.
pub(crate) fn worth_splitting(
    elapsed: Duration,
    received: u64,
    position: u64,
    total: u64,
    connections: usize,
) -> Option<Plan> {
    let remaining = total.checked_sub(position)?;
    if connections < 2 || elapsed < SPLIT_CHECK_AFTER || remaining < RANGES_MIN_BYTES {
        return None;
    }
    let rate = received as f64 / elapsed.as_secs_f64();
    if rate >= SPLIT_BELOW_RATE || (remaining as f64) < rate * SPLIT_WORTH.as_secs_f64() {
        return None;
    }
    let share = (remaining / connections as u64).div_ceil(SEGMENT_ALIGN) * SEGMENT_ALIGN;
    Some(Plan {
        from: position + share,
        total,
        parts: connections - 1,
    })
}

/// One range of the object and its segment file.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    end: u64,
    name: String,
}

/// The segments of one download attempt and the threads fetching them; dropping it stops and
/// joins the threads, so no segment file is written after the attempt ends.
pub(crate) struct Segments {
    list: Vec<Segment>,
    job: Option<Job>,
    handles: Vec<JoinHandle<Result<(), AssetError>>>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    refused: bool,
}

impl Segments {
    fn new(list: Vec<Segment>, job: Option<Job>) -> Segments {
        Segments {
            list,
            job,
            refused: false,
            handles: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The segments an earlier attempt left for `job`, when they still fit (contiguous, ending
    /// at the manifest's size, after the `kept` prefix, ranges not refused); otherwise they
    /// are removed and there are none.
    pub(crate) fn find(job: &Job, kept: u64, refused: bool) -> Result<Segments, AssetError> {
        let prefix = format!("{}.", job.partial_name());
        let mut list = Vec::new();
        let entries = std::fs::read_dir(job.dir.path()).map_err(AssetError::io("listing", job.dir.path()))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(span) = name.strip_prefix(&prefix) {
                let range = span
                    .split_once('-')
                    .and_then(|(s, e)| Some((s.parse().ok()?, e.parse().ok()?)));
                let (start, end) = range.unwrap_or((0, 0));
                list.push(Segment { start, end, name });
            }
        }
        list.sort_by_key(|segment| segment.start);
        let fits = !refused
            && !list.is_empty()
            && list[0].start >= kept
            && list.windows(2).all(|pair| pair[0].end == pair[1].start)
            && list.iter().all(|segment| segment.start < segment.end)
            && job.size == list.last().map(|segment| segment.end);
        if !fits {
            for segment in &list {
                job.dir.remove_foreign(&segment.name)?;
                job.dir.remove(&segment.name)?;
            }
            return Ok(Segments::new(Vec::new(), None));
        }
        Ok(Segments::new(list, Some(job.clone())))
    }

    /// The segments of `plan` for `job` (not started yet).
    pub(crate) fn plan(job: &Job, plan: Plan) -> Segments {
        let length = plan.total - plan.from;
        let share = (length / plan.parts as u64).div_ceil(SEGMENT_ALIGN) * SEGMENT_ALIGN;
        let mut list = Vec::new();
        let mut start = plan.from;
        while start < plan.total {
            let end = (start + share.max(SEGMENT_ALIGN)).min(plan.total);
            let name = format!("{}.{start}-{end}", job.partial_name());
            list.push(Segment { start, end, name });
            start = end;
        }
        Segments::new(list, Some(job.clone()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Where the running stream must stop.
    pub(crate) fn first_start(&self) -> Option<u64> {
        self.list.first().map(|segment| segment.start)
    }

    /// Whether a segment's range request was refused (the source is then read in one stream).
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Bytes in the segment files so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Starts one thread per segment (once).
    pub(crate) fn start(&mut self, http: &Http, url: &str) {
        let Some(job) = &self.job else { return };
        if !self.handles.is_empty() {
            return;
        }
        for segment in &self.list {
            let fetch = SegmentFetch {
                http: http.clone(),
                job: job.clone(),
                url: url.to_owned(),
                segment: segment.clone(),
                stop: self.stop.clone(),
                received: self.received.clone(),
            };
            self.handles.push(std::thread::spawn(move || fetch.run()));
        }
    }

    /// Waits for every segment, reporting the bytes received so far; the first failure wins.
    /// A refused range is a transient failure (the next attempt reads the rest in one stream).
    pub(crate) fn wait(&mut self, progress: &dyn Fn(u64)) -> Result<(), Failure> {
        while self.handles.iter().any(|handle| !handle.is_finished()) {
            progress(self.received());
            std::thread::sleep(WAIT_REPORT_EVERY);
        }
        let mut first = Ok(());
        for handle in self.handles.drain(..) {
            let result = handle.join().expect("a segment thread does not panic");
            if let (Ok(()), Err(error)) = (&first, result) {
                self.refused = matches!(error, AssetError::RangesRefused { .. });
                first = Err(match error {
                    AssetError::RangesRefused { .. } | AssetError::Transfer { .. } => {
                        Failure::Transient(error.to_string())
                    }
                    other => Failure::Permanent(other),
                });
            }
        }
        first
    }

    /// Appends every segment, in order, to `file` (whose first `end` bytes are the object's
    /// start, up to the first segment), hashing them on the way; then removes them.
    pub(crate) fn append_to(&mut self, file: &mut File, end: u64, hasher: &mut Sha256) -> Result<(), Failure> {
        let Some(job) = self.job.clone() else { return Ok(()) };
        if Some(end) != self.first_start() {
            return Err(Failure::Transient(format!(
                "the body ended after {end} bytes, before the ranges that start at {}",
                self.first_start().unwrap_or_default()
            )));
        }
        let io = |step: &'static str, name: &str| {
            let path = job.dir.join(name);
            move |error| Failure::Permanent(AssetError::Io { step, path, error })
        };
        let mut buffer = vec![0u8; CHUNK_BYTES];
        for segment in &self.list {
            let Some(mut part) = job.dir.open_regular(&segment.name, false).map_err(Failure::Permanent)? else {
                return Err(Failure::Transient(format!("segment {} vanished", segment.name)));
            };
            part.seek(SeekFrom::Start(0)).map_err(io("reading", &segment.name))?;
            loop {
                let read = part.read(&mut buffer).map_err(io("reading", &segment.name))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                file.write_all(&buffer[..read])
                    .map_err(io("writing", &job.partial_name()))?;
            }
        }
        for segment in self.list.drain(..) {
            job.dir.remove(&segment.name).map_err(Failure::Permanent)?;
        }
        Ok(())
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One segment's thread: its own requests, retries and rate rule.
struct SegmentFetch {
    http: Http,
    job: Job,
    url: String,
    segment: Segment,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
}

impl SegmentFetch {
    fn run(self) -> Result<(), AssetError> {
        let name = &self.segment.name;
        let mut file = match self.job.dir.open_regular(name, true)? {
            Some(file) => file,
            None => self.job.dir.create_new(name, 0o600)?,
        };
        let length = self.segment.end - self.segment.start;
        let kept = file
            .metadata()
            .map_err(AssetError::io("reading metadata of", self.job.dir.join(name)))?
            .len();
        if kept > length {
            file.set_len(0)
                .map_err(AssetError::io("truncating", self.job.dir.join(name)))?;
        }
        self.received.fetch_add(kept.min(length), Ordering::Relaxed);
        self.http
            .with_retries(&self.url, &|_, _| {}, || self.attempt(&mut file))
    }

    /// Asks for the rest of the segment and appends it to the segment file.
    fn attempt(&self, file: &mut File) -> Result<(), Failure> {
        let path = self.job.dir.join(&self.segment.name);
        let io = |step: &'static str| {
            let path = path.clone();
            move |error| Failure::Permanent(AssetError::Io { step, path, error })
        };
        let have = file.seek(SeekFrom::End(0)).map_err(io("seeking in"))?;
        let (from, last) = (self.segment.start + have, self.segment.end - 1);
        if from > last {
            return Ok(());
        }
        let response = self.http.get(&self.url, Some((from, Some(last))))?;
        let status = response.status().as_u16();
        let range = http::header(&response, "content-range").and_then(http::parse_content_range);
        match (status, range) {
            (206, Some(range)) if range.start == from && range.end == last => {}
            (200 | 206 | 416, _) => {
                return Err(Failure::Permanent(AssetError::RangesRefused {
                    url: self.url.clone(),
                    status,
                }))
            }
            _ => return Err(http::status_failure(&self.url, &response)),
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut rate = self.http.rate_guard(&self.url);
        let mut position = from;
        while position <= last {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Failure::Permanent(AssetError::Transfer {
                    url: self.url.clone(),
                    message: "stopped: the attempt it belonged to ended".into(),
                    attempts: 1,
                }));
            }
            let want = buffer
                .len()
                .min(usize::try_from(last + 1 - position).unwrap_or(usize::MAX));
            let read = match reader.read(&mut buffer[..want]) {
                Ok(0) => {
                    return Err(Failure::Transient(format!(
                        "the range ended at {position} of {}",
                        last + 1
                    )))
                }
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Transient(format!("the range broke at {position}: {e}"))),
            };
            file.write_all(&buffer[..read]).map_err(io("writing"))?;
            position += read as u64;
            self.received.fetch_add(read as u64, Ordering::Relaxed);
            rate.received(read as u64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_slow_large_rest_is_split_and_a_fast_or_small_one_is_not() {
        let second = Duration::from_secs(1);
        // 2 MiB/s, 250 MiB left: split in four, the stream keeping the first share.
        let plan = worth_splitting(second, 2 * MIB, 6 * MIB, 256 * MIB, 4).unwrap();
        assert_eq!(plan.parts, 3);
        assert_eq!(plan.total, 256 * MIB);
        assert_eq!(
            plan.from,
            6 * MIB + (250 * MIB / 4).div_ceil(SEGMENT_ALIGN) * SEGMENT_ALIGN
        );
        // Too early, one connection, too little left, or fast: no split.
        assert_eq!(worth_splitting(second / 2, MIB, MIB, 256 * MIB, 4), None);
        assert_eq!(worth_splitting(second, 2 * MIB, 6 * MIB, 256 * MIB, 1), None);
        assert_eq!(worth_splitting(second, 2 * MIB, 6 * MIB, 12 * MIB, 4), None);
        assert_eq!(worth_splitting(second, 500 * MIB, 500 * MIB, 2048 * MIB, 4), None);
        // Done within the worth-it time at the current rate: no split.
        assert_eq!(worth_splitting(second, 20 * MIB, 20 * MIB, 50 * MIB, 4), None);
    }
}

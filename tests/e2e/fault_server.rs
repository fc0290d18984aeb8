//! A fault-injecting HTTP/1.1 server on 127.0.0.1 for the AssetManager's fault suite.
//!
//! Serves in-memory objects with `Range` support and `Connection: close`; each path can be given
//! a queue of one-shot faults (consumed one per request) and a fault for every request, and the
//! whole server can be throttled (each response paced on its own, like a per-connection rate
//! limit). It logs every request with its headers and counts the body bytes it wrote, so tests
//! can assert resumes, retries, ranges, the headers a client sends and "no request at all".

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes written per `write` call while streaming a body.
const WRITE_CHUNK: usize = 16 * 1024;

/// How long a stalled response holds its connection at most.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// What to do to one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and this many body bytes, wait a moment, then reset the connection.
    ResetAfter(usize),
    /// Send the headers (with the full Content-Length) and this many bytes, then close cleanly.
    ShortBody(usize),
    /// Send the whole body with one byte flipped.
    WrongBytes,
    /// Answer with this status and an empty body.
    Status(u16),
    /// Send the headers and this many bytes, then send nothing more (hold the connection).
    StallAfter(usize),
    /// Answer a range request with `200` and the whole body.
    IgnoreRange,
    /// Answer a range request with `416 Range Not Satisfiable`.
    RangeNotSatisfiable,
    /// Answer a range request with `206` whose Content-Range starts at 0 (not where asked).
    WrongContentRange,
    /// Answer with `302 Found` to this location.
    RedirectTo(String),
    /// Send the headers and this many bytes at once, then one byte per interval (a server that
    /// keeps a connection alive without ever finishing it).
    Trickle(usize, Duration),
    /// Answer `503` with this `Retry-After` value until the moment given, then serve normally.
    UnavailableUntil(Instant, String),
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request path, e.g. `/asset/v1.0.0/x86_64/rootfs.erofs`.
    pub path: String,
    /// The `N` of `Range: bytes=N-` (or `bytes=N-M`), when present.
    pub range_from: Option<u64>,
    /// The `M` of `Range: bytes=N-M`, when present.
    pub range_to: Option<u64>,
    /// Every request header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Vec<u8>>,
    queued: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    log: Vec<Request>,
    body_bytes: HashMap<String, u64>,
    bytes_per_second: Option<u64>,
}

/// The running server; it stops accepting when dropped.
pub struct FaultServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stopping: Arc<AtomicBool>,
}

impl FaultServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> FaultServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a loopback port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stopping) = (state.clone(), stopping.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (state, stopping) = (thread_state.clone(), thread_stopping.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &state, &stopping);
                });
            }
        });
        FaultServer { port, state, stopping }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves `bytes` at `/{path}`.
    pub fn put(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.state().objects.insert(format!("/{path}"), bytes.into());
    }

    /// Applies `fault` to the next request of `/{path}` that has no earlier fault queued.
    pub fn fault_once(&self, path: &str, fault: Fault) {
        self.state()
            .queued
            .entry(format!("/{path}"))
            .or_default()
            .push_back(fault);
    }

    /// Applies `fault` to every request of `/{path}` (after the queued ones are used up).
    pub fn fault_always(&self, path: &str, fault: Fault) {
        self.state().always.insert(format!("/{path}"), fault);
    }

    /// Clears every fault.
    pub fn heal(&self) {
        let mut state = self.state();
        state.queued.clear();
        state.always.clear();
    }

    /// Limits every body to about this many bytes per second (`None`: as fast as possible).
    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        self.state().bytes_per_second = bytes_per_second;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state().log.clone()
    }

    /// The requests of `/{path}` so far.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        let path = format!("/{path}");
        self.state().log.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Body bytes written for `/{path}` so far, over all requests.
    pub fn bytes_served(&self, path: &str) -> u64 {
        self.state().body_bytes.get(&format!("/{path}")).copied().unwrap_or(0)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, stopping: &AtomicBool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let range = headers
        .iter()
        .find(|(name, _)| name == "range")
        .and_then(|(_, value)| value.strip_prefix("bytes="))
        .and_then(|spec| spec.split_once('-'));
    let range_from = range.and_then(|(from, _)| from.parse::<u64>().ok());
    let range_to = range.and_then(|(_, to)| to.parse::<u64>().ok());

    let (object, fault, rate) = {
        let mut state = state.lock().unwrap();
        state.log.push(Request {
            path: path.clone(),
            range_from,
            range_to,
            headers,
        });
        let queued = state.queued.get_mut(&path).and_then(VecDeque::pop_front);
        let fault = queued.or_else(|| state.always.get(&path).cloned());
        (state.objects.get(&path).cloned(), fault, state.bytes_per_second)
    };
    let count = |n: usize| {
        *state.lock().unwrap().body_bytes.entry(path.clone()).or_default() += n as u64;
    };

    match (&fault, object) {
        (Some(Fault::Status(status)), _) => return head(&mut stream, *status, 0, &[]),
        (Some(Fault::UnavailableUntil(until, retry_after)), _) if Instant::now() < *until => {
            return head(&mut stream, 503, 0, &[("Retry-After", retry_after.clone())]);
        }
        (Some(Fault::RedirectTo(location)), _) => {
            return head(&mut stream, 302, 0, &[("Location", location.clone())]);
        }
        (_, None) => return head(&mut stream, 404, 0, &[]),
        (_, Some(mut body)) => {
            let total = body.len() as u64;
            let mut start = 0u64;
            let mut end = total;
            let mut status = 200;
            let mut extra = Vec::new();
            if let Some(from) = range_from {
                match fault {
                    Some(Fault::IgnoreRange) => {}
                    Some(Fault::RangeNotSatisfiable) => {
                        return head(&mut stream, 416, 0, &[("Content-Range", format!("bytes */{total}"))]);
                    }
                    Some(Fault::WrongContentRange) => {
                        status = 206;
                        extra.push(("Content-Range", format!("bytes 0-{}/{total}", total - 1)));
                    }
                    _ if from >= total => {
                        return head(&mut stream, 416, 0, &[("Content-Range", format!("bytes */{total}"))]);
                    }
                    _ => {
                        status = 206;
                        start = from;
                        end = range_to.map_or(total, |to| (to + 1).min(total));
                        extra.push(("Content-Range", format!("bytes {from}-{}/{total}", end - 1)));
                    }
                }
            }
            if fault == Some(Fault::WrongBytes) {
                let middle = body.len() / 2;
                body[middle] ^= 0xff;
            }
            let body = &body[start as usize..end as usize];
            head(&mut stream, status, body.len() as u64, &extra)?;
            let limit = match fault {
                Some(Fault::ResetAfter(n) | Fault::ShortBody(n) | Fault::StallAfter(n) | Fault::Trickle(n, _)) => {
                    n.min(body.len())
                }
                _ => body.len(),
            };
            write_body(&mut stream, &body[..limit], rate, &count)?;
            match fault {
                Some(Fault::ResetAfter(_)) => {
                    std::thread::sleep(Duration::from_millis(200));
                    reset(&stream);
                    return Ok(());
                }
                Some(Fault::Trickle(_, every)) => {
                    let deadline = Instant::now() + STALL_LIMIT;
                    for byte in &body[limit..] {
                        if Instant::now() >= deadline || stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(every);
                        stream.write_all(std::slice::from_ref(byte))?;
                        count(1);
                    }
                    return Ok(());
                }
                Some(Fault::StallAfter(_)) => {
                    let deadline = Instant::now() + STALL_LIMIT;
                    while Instant::now() < deadline && !stopping.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn head(stream: &mut TcpStream, status: u16, length: u64, extra: &[(&str, String)]) -> std::io::Result<()> {
    let mut text = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {length}\r\nConnection: close\r\n",
        reason(status)
    );
    text.push_str("Accept-Ranges: bytes\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())
}

fn write_body(stream: &mut TcpStream, body: &[u8], rate: Option<u64>, count: &dyn Fn(usize)) -> std::io::Result<()> {
    let started = Instant::now();
    let mut sent = 0u64;
    for chunk in body.chunks(WRITE_CHUNK) {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        stream.write_all(chunk)?;
        count(chunk.len());
        sent += chunk.len() as u64;
    }
    Ok(())
}

/// Closes with RST instead of FIN: SO_LINGER on with a zero timeout, then close.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

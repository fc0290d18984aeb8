//! `cargo xtask bench fetch`: how fast the AssetManager installs a large asset, against what
//! the hardware allows.
//!
//! Writes a CDN tree with one large random rootfs (and a small kernel) into a scratch directory,
//! serves it with nginx on loopback, and times, alternating in the same run: `cargo xtask fetch`
//! exactly as people run it (the dev profile, through cargo, after a build so cargo only checks
//! freshness), a release-built `xtask fetch` (the library, as a child process so its peak RSS can
//! be read with `wait4`),
//! `curl -o FILE`, `curl -o FILE` then `sha256sum FILE`, `openssl dgst -sha256 FILE`, and
//! `curl -o FILE` then `sync FILE` (the durable baseline: what an install that waits for the disk
//! pays; the manager does so only where the platform names no boot), and a plain write of the same
//! size plus fsync, without the network: the disk's floor under any durable install.
//! Prints medians, ratios and the manager's peak RSS, and whether the targets are met.
//!
//! Then the rate-capped case: the same asset from an nginx whose every connection is limited
//! (`limit_rate`, like a CDN or a bot filter that caps each connection), `curl -o FILE` against
//! `cargo xtask fetch` (which splits a slow large object into parallel ranges) and the
//! release-built library with each connection count of `--connections-sweep`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use boot_assets::{cdn, Arch, FileEntry, KernelEntry, Latest, Manifest, Target};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::{flags, nginx::Nginx, util};

/// The asset version of the synthetic release.
const BENCH_VERSION: &str = "0.0.0-bench";

/// The benchmark serves the x86_64 objects (any arch would do; the bytes are random).
const BENCH_ARCH: Arch = Arch::X86_64;

/// Size of the synthetic kernel.
const KERNEL_BYTES: usize = 1 << 20;

/// Block size used to write the random asset.
const WRITE_BLOCK_BYTES: usize = 1 << 20;

/// Targets from the issue: at least this many times faster than curl + sha256sum, …
const TARGET_SPEEDUP_OVER_CURL_SHA256SUM: f64 = 3.0;
/// … at most this many times the time of `curl -o` alone, …
const TARGET_RATIO_TO_CURL: f64 = 1.1;
/// … and a peak RSS of at most this many MiB.
const TARGET_PEAK_RSS_MIB: f64 = 32.0;
/// In the rate-capped case, at least this many times faster than `curl -o`.
const TARGET_SPEEDUP_OVER_CAPPED_CURL: f64 = 3.0;

/// The tools the benchmark compares against (their packages are in `manifests/host-packages.toml`).
const BENCH_TOOLS: [&str; 4] = ["nginx", "curl", "sha256sum", "openssl"];

/// The contenders, in the order of the first round (later rounds rotate it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    CargoXtaskFetch,
    AssetManager,
    Curl,
    CurlSha256sum,
    OpensslDigest,
    CurlSync,
    DiskFloor,
}

const CONTENDERS: [Contender; 7] = [
    Contender::CargoXtaskFetch,
    Contender::AssetManager,
    Contender::Curl,
    Contender::CurlSha256sum,
    Contender::OpensslDigest,
    Contender::CurlSync,
    Contender::DiskFloor,
];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::CargoXtaskFetch => "cargo xtask fetch (dev profile)",
            Contender::AssetManager => "release-built xtask fetch (library)",
            Contender::Curl => "curl -o FILE",
            Contender::CurlSha256sum => "curl -o FILE && sha256sum FILE",
            Contender::OpensslDigest => "openssl dgst -sha256 FILE",
            Contender::CurlSync => "curl -o FILE && sync FILE",
            Contender::DiskFloor => "write FILE + fsync (no network)",
        }
    }
}

impl flags::BenchFetch {
    pub fn run(self, sh: &Shell) -> Result<()> {
        crate::tools::require_all(&BENCH_TOOLS).context("bench fetch needs it")?;
        ensure!(self.runs > 0, "--runs must be at least 1");

        eprintln!("bench fetch: building xtask in release mode, and in the dev profile `cargo xtask` uses");
        let root = util::project_root();
        sh.change_dir(&root);
        cmd!(sh, "cargo build --release --quiet --package xtask").run()?;
        cmd!(sh, "cargo build --quiet --package xtask").run()?;
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let fetcher = target_dir.join("release").join("xtask");

        let scratch = match &self.work_dir {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .context("creating the benchmark's scratch directory")?;
        let cdn_root = scratch.path().join("cdn");
        eprintln!("bench fetch: writing a {} MiB asset", self.size_mib);
        let asset_path = write_cdn_tree(&cdn_root, self.size_mib)?;
        let server = Nginx::start(sh, &cdn_root, 0)?;
        let asset_url = cdn::join_url(&server.url(), &cdn::rootfs_path(BENCH_VERSION, BENCH_ARCH));
        let dest = scratch.path().join("install");
        let curl_output = scratch.path().join("curl-output");

        let run = Run {
            fetcher,
            url: server.url(),
            asset_url,
            asset_path,
            dest: dest.clone(),
            curl_output: curl_output.clone(),
            size_mib: self.size_mib,
        };
        if !self.capped_only {
            self.run_uncapped(sh, &run)?;
        }
        drop(server);
        if self.capped_rate_mib > 0 {
            let capped = Nginx::start(sh, &cdn_root, self.capped_rate_mib << 20)?;
            let run = Run {
                url: capped.url(),
                asset_url: cdn::join_url(&capped.url(), &cdn::rootfs_path(BENCH_VERSION, BENCH_ARCH)),
                ..run
            };
            self.run_capped(sh, &run)?;
        }
        Ok(())
    }

    /// The uncapped case: every contender, alternating, on loopback at full speed.
    fn run_uncapped(&self, sh: &Shell, run: &Run) -> Result<()> {
        let (dest, curl_output) = (&run.dest, &run.curl_output);
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); CONTENDERS.len()];
        let mut peak_rss_kib = 0u64;
        for round in 0..self.runs {
            for offset in 0..CONTENDERS.len() {
                let index = (round + offset) % CONTENDERS.len();
                let contender = CONTENDERS[index];
                // Start each timed run with no dirty pages from the previous one.
                let _ = std::fs::remove_dir_all(dest);
                let _ = std::fs::remove_file(curl_output);
                cmd!(sh, "sync").quiet().run()?;
                let (elapsed, rss_kib) = run.time(contender)?;
                peak_rss_kib = peak_rss_kib.max(rss_kib);
                eprintln!(
                    "  round {} {:<36} {:>8.3} s",
                    round + 1,
                    contender.label(),
                    elapsed.as_secs_f64()
                );
                times[index].push(elapsed);
            }
        }
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        print_table(self.size_mib, self.runs, &medians, peak_rss_kib);
        Ok(())
    }

    /// The rate-capped case: `curl -o`, `cargo xtask fetch` and the library per connection
    /// count, alternating, against nginx with a per-connection `limit_rate`.
    fn run_capped(&self, sh: &Shell, run: &Run) -> Result<()> {
        let mut contenders = vec![Capped::Curl, Capped::CargoXtaskFetch];
        contenders.extend(self.connections_sweep.iter().map(|&n| Capped::Library(n)));
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        let mut peak_rss_kib = 0u64;
        for round in 0..self.runs {
            for offset in 0..contenders.len() {
                let index = (round + offset) % contenders.len();
                let _ = std::fs::remove_dir_all(&run.dest);
                let _ = std::fs::remove_file(&run.curl_output);
                cmd!(sh, "sync").quiet().run()?;
                let (elapsed, rss_kib) = run.time_capped(contenders[index])?;
                peak_rss_kib = peak_rss_kib.max(rss_kib);
                let label = contenders[index].label();
                eprintln!(
                    "  capped round {} {label:<44} {:>8.3} s",
                    round + 1,
                    elapsed.as_secs_f64()
                );
                times[index].push(elapsed);
            }
        }
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        println!(
            "bench fetch, rate-capped: {} MiB asset, nginx limit_rate {} MiB/s per connection, {} alternating run(s), medians",
            self.size_mib, self.capped_rate_mib, self.runs
        );
        println!(
            "| {:<44} | {:>9} | {:>9} | {:>16} |",
            "contender", "median s", "MiB/s", "curl -o / this"
        );
        println!("|{:-<46}|{:->11}|{:->11}|{:->18}|", "", "", "", "");
        for (contender, seconds) in contenders.iter().zip(&medians) {
            let mib_per_second = self.size_mib as f64 / seconds;
            let speedup = medians[0] / seconds;
            println!(
                "| {:<44} | {seconds:>9.3} | {mib_per_second:>9.1} | {speedup:>16.2} |",
                contender.label()
            );
        }
        let speedup = medians[0] / medians[1];
        let rss_mib = peak_rss_kib as f64 / 1024.0;
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "target: cargo xtask fetch >= {TARGET_SPEEDUP_OVER_CAPPED_CURL}x faster than curl -o at a capped rate: {speedup:.2}x ({})",
            verdict(speedup >= TARGET_SPEEDUP_OVER_CAPPED_CURL)
        );
        println!(
            "target: peak RSS of the release-built library with parallel ranges <= {TARGET_PEAK_RSS_MIB} MiB: {rss_mib:.1} MiB ({})",
            verdict(rss_mib <= TARGET_PEAK_RSS_MIB)
        );
        Ok(())
    }
}

/// A contender of the rate-capped case.
#[derive(Debug, Clone, Copy)]
enum Capped {
    Curl,
    CargoXtaskFetch,
    /// The release-built library with this many connections.
    Library(usize),
}

impl Capped {
    fn label(self) -> String {
        match self {
            Capped::Curl => "curl -o FILE".into(),
            Capped::CargoXtaskFetch => "cargo xtask fetch (default connections)".into(),
            Capped::Library(n) => format!("release-built xtask fetch --connections {n}"),
        }
    }
}

/// What every timed run of one benchmark uses.
struct Run {
    /// The release-built xtask.
    fetcher: PathBuf,
    url: String,
    asset_url: String,
    asset_path: PathBuf,
    dest: PathBuf,
    curl_output: PathBuf,
    size_mib: u64,
}

impl Run {
    /// Times one run of a contender of the rate-capped case; also returns the library's peak RSS.
    fn time_capped(&self, contender: Capped) -> Result<(Duration, u64)> {
        let result = match contender {
            Capped::Curl => return Ok((time_commands(&[curl(&self.asset_url, &self.curl_output)])?, 0)),
            Capped::CargoXtaskFetch => (time_commands(&[cargo_xtask_fetch(&self.url, &self.dest)])?, 0),
            Capped::Library(n) => {
                time_manager(&self.fetcher, &self.url, &self.dest, &["--connections", &n.to_string()])?
            }
        };
        check_installed(&self.dest, self.size_mib)?;
        Ok(result)
    }

    /// Times one run of `contender`; also returns the peak RSS in KiB of the AssetManager's run
    /// (0 for the others).
    fn time(&self, contender: Contender) -> Result<(Duration, u64)> {
        let elapsed = match contender {
            Contender::AssetManager => {
                let (elapsed, rss) = time_manager(&self.fetcher, &self.url, &self.dest, &[])?;
                check_installed(&self.dest, self.size_mib)?;
                return Ok((elapsed, rss));
            }
            Contender::CargoXtaskFetch => {
                let elapsed = time_commands(&[cargo_xtask_fetch(&self.url, &self.dest)])?;
                check_installed(&self.dest, self.size_mib)?;
                elapsed
            }
            Contender::Curl => time_commands(&[curl(&self.asset_url, &self.curl_output)])?,
            Contender::CurlSha256sum => time_commands(&[curl(&self.asset_url, &self.curl_output), {
                let mut sha = Command::new("sha256sum");
                sha.arg(&self.curl_output);
                sha
            }])?,
            Contender::CurlSync => time_commands(&[curl(&self.asset_url, &self.curl_output), {
                let mut sync = Command::new("sync");
                sync.arg(&self.curl_output);
                sync
            }])?,
            Contender::OpensslDigest => time_commands(&[{
                let mut openssl = Command::new("openssl");
                openssl.args(["dgst", "-sha256"]).arg(&self.asset_path);
                openssl
            }])?,
            Contender::DiskFloor => time_durable_write(&self.curl_output, self.size_mib)?,
        };
        Ok((elapsed, 0))
    }
}

/// Writes `asset/v{BENCH_VERSION}/…`, `latest.json` and the manifest; returns the rootfs path.
fn write_cdn_tree(cdn_root: &Path, size_mib: u64) -> Result<PathBuf> {
    let rootfs = cdn_root.join(cdn::rootfs_path(BENCH_VERSION, BENCH_ARCH));
    let kernel = cdn_root.join(cdn::kernel_path(BENCH_VERSION, BENCH_ARCH));
    std::fs::create_dir_all(rootfs.parent().expect("has a parent"))?;
    let mut generator = XorShift(0x9E37_79B9_7F4A_7C15);
    let rootfs_sha = {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?,
        );
        let mut hasher = Sha256::new();
        let mut block = vec![0u8; WRITE_BLOCK_BYTES];
        for _ in 0..size_mib {
            generator.fill(&mut block);
            hasher.update(&block);
            file.write_all(&block)?;
        }
        file.flush()?;
        format!("{:x}", hasher.finalize())
    };
    let mut kernel_bytes = vec![0u8; KERNEL_BYTES];
    generator.fill(&mut kernel_bytes);
    std::fs::write(&kernel, &kernel_bytes)?;

    let manifest = Manifest {
        schema_version: 0,
        asset_version: BENCH_VERSION.into(),
        built_at: "2026-01-01T00:00:00Z".into(),
        source_repo: None,
        source_ref: None,
        source_sha: None,
        targets: [(
            BENCH_ARCH,
            Target {
                kernel: KernelEntry {
                    path: cdn::kernel_path(BENCH_VERSION, BENCH_ARCH),
                    sha256: util::sha256_bytes(&kernel_bytes),
                    version: "6.1.0".into(),
                    size: Some(KERNEL_BYTES as u64),
                },
                rootfs: FileEntry {
                    path: cdn::rootfs_path(BENCH_VERSION, BENCH_ARCH),
                    sha256: rootfs_sha,
                    size: Some(size_mib << 20),
                },
                kernel_cmdline: BENCH_ARCH.default_kernel_cmdline().into(),
                rootfs_verity_root_hash: None,
                runtime: None,
            },
        )]
        .into(),
        binaries: Vec::new(),
    };
    manifest.validate()?;
    util::write_atomic(
        &cdn_root.join(cdn::manifest_path(BENCH_VERSION)),
        manifest.to_json_pretty().as_bytes(),
    )?;
    let latest = Latest {
        version: BENCH_VERSION.into(),
    };
    util::write_atomic(&cdn_root.join(cdn::LATEST_PATH), latest.to_json_pretty().as_bytes())?;
    Ok(rootfs)
}

/// Runs the release-built `xtask fetch` as a child; returns its wall time and peak RSS (KiB).
fn time_manager(fetcher: &Path, url: &str, dest: &Path, extra: &[&str]) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = Command::new(fetcher)
        .args(["fetch", "--quiet", "--cdn", url, "--version", BENCH_VERSION, "--arch"])
        .arg(BENCH_ARCH.as_str())
        .arg("--dest")
        .arg(dest)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", fetcher.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both out-pointers are valid for the call.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    ensure!(
        waited == pid,
        "wait4 on the fetch process failed: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "xtask fetch failed (wait status {status})"
    );
    // Linux reports ru_maxrss in KiB.
    Ok((elapsed, usage.ru_maxrss as u64))
}

/// Fails unless the rootfs of `size_mib` MiB is installed under `dest`.
fn check_installed(dest: &Path, size_mib: u64) -> Result<()> {
    let installed = dest.join(BENCH_VERSION).join(cdn::ROOTFS_FILE);
    let size = std::fs::metadata(&installed).map(|m| m.len()).unwrap_or(0);
    ensure!(
        size == size_mib << 20,
        "the fetch did not install {} ({size} bytes)",
        installed.display()
    );
    Ok(())
}

/// `cargo xtask fetch …`: the command people run, in the dev profile, through cargo.
fn cargo_xtask_fetch(url: &str, dest: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .args([
            "xtask",
            "fetch",
            "--quiet",
            "--cdn",
            url,
            "--version",
            BENCH_VERSION,
            "--arch",
        ])
        .arg(BENCH_ARCH.as_str())
        .arg("--dest")
        .arg(dest)
        .current_dir(util::project_root());
    command
}

fn curl(url: &str, output: &Path) -> Command {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--fail", "--output"])
        .arg(output)
        .arg(url);
    command
}

/// Runs the commands one after the other (stopping at a failure) and returns the total time.
fn time_commands(commands: &[Command]) -> Result<Duration> {
    let started = Instant::now();
    for command in commands {
        let mut command = clone_command(command);
        let status = command
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {command:?}"))?;
        ensure!(status.success(), "{command:?} failed with {status}");
    }
    Ok(started.elapsed())
}

fn clone_command(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        copy.current_dir(dir);
    }
    copy
}

fn median(samples: &[Duration]) -> f64 {
    let mut seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    seconds.sort_by(f64::total_cmp);
    let middle = seconds.len() / 2;
    if seconds.len().is_multiple_of(2) {
        (seconds[middle - 1] + seconds[middle]) / 2.0
    } else {
        seconds[middle]
    }
}

fn print_table(size_mib: u64, runs: usize, medians: &[f64], peak_rss_kib: u64) {
    let [command, library, curl, curl_sha256sum, _openssl, curl_sync, disk_floor] = medians else {
        unreachable!("one median per contender");
    };
    println!("bench fetch: {size_mib} MiB asset from nginx on 127.0.0.1, {runs} alternating run(s), medians");
    println!(
        "| {:<36} | {:>9} | {:>9} | {:>19} |",
        "contender", "median s", "MiB/s", "time / cargo xtask's"
    );
    println!("|{:-<38}|{:->11}|{:->11}|{:->21}|", "", "", "", "");
    for (contender, seconds) in CONTENDERS.iter().zip(medians) {
        println!(
            "| {:<36} | {:>9.3} | {:>9.0} | {:>19.2} |",
            contender.label(),
            seconds,
            size_mib as f64 / seconds,
            seconds / command
        );
    }
    let rss_mib = peak_rss_kib as f64 / 1024.0;
    println!("release-built library peak RSS: {rss_mib:.1} MiB");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "cargo xtask fetch (dev profile) takes {:.2}x the time of the release-built library",
        command / library
    );
    let speedup = curl_sha256sum / command;
    let ratio_to_curl = command / curl;
    println!(
        "target: cargo xtask fetch >= {TARGET_SPEEDUP_OVER_CURL_SHA256SUM}x faster than curl + sha256sum: {speedup:.2}x ({})",
        verdict(speedup >= TARGET_SPEEDUP_OVER_CURL_SHA256SUM)
    );
    println!(
        "target: cargo xtask fetch <= {TARGET_RATIO_TO_CURL}x the time of curl -o: {ratio_to_curl:.2}x ({})",
        verdict(ratio_to_curl <= TARGET_RATIO_TO_CURL)
    );
    println!(
        "library: {:.2}x faster than curl + sha256sum, {:.2}x the time of curl -o",
        curl_sha256sum / library,
        library / curl
    );
    println!(
        "durable baseline: cargo xtask fetch takes {:.2}x the time of curl -o && sync FILE",
        command / curl_sync
    );
    let floor = curl.max(*disk_floor);
    println!(
        "floor: the disk writes the asset durably in {disk_floor:.3} s, so an install that waited for the disk \
         would take at least {floor:.3} s (the slower of that and curl -o); on Linux the library defers \
         durability to the boot's next warm start (src/asset_manager/records.rs); cargo xtask fetch takes {:.2}x that",
        command / floor
    );
    println!(
        "target: peak RSS <= {TARGET_PEAK_RSS_MIB} MiB: {rss_mib:.1} MiB ({})",
        verdict(rss_mib <= TARGET_PEAK_RSS_MIB)
    );
}

/// Writes `size_mib` MiB of random bytes to `path` and fsyncs it: what the disk alone needs for
/// a durable copy of the asset, the floor under any install that fsyncs before it renames.
fn time_durable_write(path: &Path, size_mib: u64) -> Result<Duration> {
    let mut block = vec![0u8; WRITE_BLOCK_BYTES];
    XorShift(0x2545_F491_4F6C_DD1D).fill(&mut block);
    let started = Instant::now();
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for _ in 0..size_mib {
        file.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(started.elapsed())
}

/// A tiny xorshift64 generator: incompressible bytes without a dependency or a slow source.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        let s = |v: &[u64]| v.iter().map(|&ms| Duration::from_millis(ms)).collect::<Vec<_>>();
        assert_eq!(median(&s(&[3000, 1000, 2000])), 2.0);
        assert_eq!(median(&s(&[4000, 1000, 2000, 3000])), 2.5);
    }
}

//! Runs one long build step with its output in a log file and short progress lines on stderr.
//!
//! Reads the growing log to name the current step (`CC fs/erofs/zdata.o`); writes the child's
//! stdout and stderr to the log; on failure returns an error that carries the log's tail.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often the child is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often a progress line is printed while a step runs.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(15);

/// How many trailing log lines a failure shows.
const FAILURE_TAIL_LINES: usize = 40;

/// How many bytes from the end of the log are read to find its last lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// Runs `command` to completion, appending its output to `log`, printing `{label}: {elapsed}
/// {step} — {last log line}` every few seconds. `started` is when the whole build began.
pub fn run_logged(label: &str, step: &str, mut command: Command, log: &Path, started: Instant) -> Result<()> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening build log {}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .with_context(|| format!("duplicating build log {}", log.display()))?;
    eprintln!("{label}: {} {step}", format_elapsed(started.elapsed()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("{step}: starting {command:?}"))?;
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("{step}: waiting for {command:?}"))?
        {
            break status;
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            last_report = Instant::now();
            let current = tail_lines(log, 1).pop().unwrap_or_default();
            eprintln!(
                "{label}: {} {step} — {}",
                format_elapsed(started.elapsed()),
                current.trim()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    if !status.success() {
        let tail = tail_lines(log, FAILURE_TAIL_LINES).join("\n");
        bail!(
            "{step} failed ({status}); the last {FAILURE_TAIL_LINES} lines of {}:\n{tail}",
            log.display()
        );
    }
    Ok(())
}

/// The last `count` lines of a file (fewer when it is short; none when unreadable).
pub fn tail_lines(path: &Path, count: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// `83 s` → `1m23s`.
pub fn format_elapsed(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_as_minutes_and_seconds() {
        assert_eq!(format_elapsed(Duration::from_secs(83)), "1m23s");
        assert_eq!(format_elapsed(Duration::from_secs(5)), "0m05s");
    }

    #[test]
    fn a_failing_step_shows_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo first; echo 'the real error' >&2; exit 3"]);
        let err = run_logged("test", "compiling", command, &log, Instant::now()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("compiling failed"), "{text}");
        assert!(text.contains("first\nthe real error"), "{text}");
    }

    #[test]
    fn tail_of_a_short_file_is_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&path, 2), ["b", "c"]);
        assert_eq!(tail_lines(&path, 10), ["a", "b", "c"]);
    }
}

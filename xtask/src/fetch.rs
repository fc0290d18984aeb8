//! `cargo xtask fetch`: the consumer library (`boot_assets::AssetManager`) behind progress bars.
//!
//! Reads the CDN (latest.json, the manifest and its signature, the objects) and the optional
//! public key file; writes `{dest}/{version}/…` and, with `--binaries`, the runtime binaries.
//! Prints the installed paths on stdout, one `name<TAB>path` per line, so scripts can use them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use boot_assets::asset_manager::{AssetManager, Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use xshell::Shell;

use crate::flags;

/// How a bar looks while bytes move.
const BAR_TEMPLATE: &str = "{prefix:>10} {msg:<11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}";

impl flags::Fetch {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let mut builder = AssetManager::builder(&self.published.cdn)
            .version(&self.published.version)
            .concurrency(self.concurrency)
            .retries(self.retries)
            .read_timeout(Duration::from_secs(self.read_timeout_secs))
            .min_transfer_rate(self.min_rate)
            .rate_window(Duration::from_secs(self.rate_window_secs))
            .connections(self.connections)
            .max_retry_after(Duration::from_secs(self.max_retry_after_secs))
            .allow_insecure_http(self.allow_insecure_http);
        for mirror in &self.mirrors {
            builder = builder.mirror(mirror);
        }
        if let Some(seconds) = self.deadline {
            builder = builder.deadline(Duration::from_secs(seconds));
        }
        if let Some(sha256) = &self.manifest_sha256 {
            builder = builder.expected_manifest_sha256(sha256);
        }
        if let Some(arch) = self.arch {
            builder = builder.arch(arch.into());
        }
        if let Some(dest) = &self.dest {
            builder = builder.cache_dir(dest);
        }
        if let Some(path) = &self.public_key {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("--public-key {}: cannot read it", path.display()))?;
            builder = builder.trusted_public_key(key);
        }
        let bars = Bars::new(self.quiet);
        let reporter = bars.clone();
        builder = builder.progress(move |progress| reporter.update(progress));
        let manager = builder.build().context("fetch: bad settings")?;

        let assets = manager
            .prepare()
            .with_context(|| format!("fetch: installing boot assets from {}", self.published.cdn))?;
        if let Some(reason) = &assets.offline_fallback {
            eprintln!(
                "fetch: latest.json could not be fetched ({reason}); using the last resolved version {}, \
                 fully verified in the cache",
                assets.version
            );
        }
        println!("version\t{}", assets.version);
        println!("kernel\t{}", assets.kernel.display());
        println!("rootfs\t{}", assets.rootfs.display());
        println!("kernel_cmdline\t{}", assets.kernel_cmdline);
        if let Some(bin_dir) = &self.binaries {
            let installed = manager
                .prepare_binaries(bin_dir)
                .with_context(|| format!("fetch: installing runtime binaries into {}", bin_dir.display()))?;
            for binary in installed {
                println!("{}\t{}", binary.name, binary.path.display());
            }
        }
        bars.finish();
        Ok(())
    }
}

/// One progress bar per object, shared by the download threads.
#[derive(Clone)]
struct Bars {
    multi: MultiProgress,
    by_name: Arc<Mutex<HashMap<String, ProgressBar>>>,
    quiet: bool,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            by_name: Arc::default(),
            quiet,
        }
    }

    fn update(&self, progress: &Progress<'_>) {
        if progress.phase == Phase::RemovedLink {
            // Always said, even with --quiet: something planted a link in the cache or bin dir.
            self.say(format!(
                "fetch: removed a link planted at {} (never followed)",
                progress.name
            ));
            return;
        }
        if let (Phase::Waiting, Some(wait)) = (progress.phase, progress.retry_in) {
            let why = if progress.server_asked {
                "the server's Retry-After"
            } else {
                "backoff"
            };
            self.say(format!(
                "fetch: {} waits {:.1} s before retrying ({why})",
                progress.name,
                wait.as_secs_f64()
            ));
            return;
        }
        let mut by_name = self.by_name.lock().expect("no panic while drawing");
        let bar = by_name.entry(progress.name.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(BAR_TEMPLATE)
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(progress.name.to_owned());
            bar
        });
        if let Some(total) = progress.bytes_total {
            bar.set_length(total);
        }
        bar.set_position(progress.bytes_done);
        let phase = match progress.phase {
            Phase::Checking => "checking",
            Phase::Downloading => "downloading",
            Phase::Verifying => "verifying",
            Phase::Waiting => "waiting",
            Phase::Ready => "ready",
            Phase::Cached => "cached",
            Phase::RemovedLink => "removed link",
        };
        bar.set_message(phase);
        if matches!(progress.phase, Phase::Ready | Phase::Cached) {
            bar.finish();
            // Bars are invisible when stderr is not a terminal (CI logs): say it in a line too.
            if !self.quiet && !console_is_attended() {
                eprintln!("fetch: {} {phase} ({} bytes)", progress.name, progress.bytes_done);
            }
        }
    }

    /// One line on stderr, above the bars when they are drawn.
    fn say(&self, line: String) {
        if self.quiet || !console_is_attended() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    fn finish(&self) {
        for bar in self.by_name.lock().expect("no panic while drawing").values() {
            bar.finish();
        }
    }
}

fn console_is_attended() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

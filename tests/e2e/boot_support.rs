//! Helpers of the boot tests: which kernel and rootfs to boot, running `cargo xtask boot`, and
//! reading the guest agent's `CHECK` lines.
//!
//! The assets come from the seed's variables when set — `BOOT_ASSETS_RELEASE_TARBALL` (used for
//! the arch its file name names), or `BOOT_ASSETS_BOOT_KERNEL` + `BOOT_ASSETS_BOOT_ROOTFS`
//! (+ `BOOT_ASSETS_BOOT_CMDLINE`) for the arch `BOOT_ASSETS_BOOT_ARCH` names (x86_64 by
//! default, as in the seed) — and are otherwise built with `cargo xtask kernel` and
//! `cargo xtask rootfs` (both cached) and released with `cargo xtask release`, so that every
//! boot test boots the verified root (the release's rootfs with its hash tree, booted with the
//! release manifest's command line). `BOOT_ASSETS_QEMU` overrides the QEMU binary of every
//! boot, `BOOT_ASSETS_QEMU_X86_64` / `BOOT_ASSETS_QEMU_ARM64` that of one arch.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boot_assets::{cdn, Arch, Manifest};

use crate::support::{self, xtask};

/// The agent that checks the guest from the inside.
pub const CHECK_AGENT: &str = "tests/fixtures/agent/check-agent.sh";

/// Every check the check agent must report `ok`, one a line.
pub const CHECK_AGENT_EXPECTED: &str = "tests/fixtures/agent/check-agent.expected";

/// Where the check agent finds the fragment options it must see in /proc/config.gz.
pub const EXPECTED_OPTIONS_IN_SHARE: &str = "test/expected-kernel-options";

/// Where the boot tests keep what they build.
fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::project_root().join("target"));
    target.join("e2e-boot")
}

/// One boot at a time: QEMU under TCG wants the machine's cores, and timings stay honest.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What to boot for one arch.
#[derive(Debug, Clone)]
pub enum Assets {
    Tarball(PathBuf),
    Files {
        kernel: PathBuf,
        rootfs: PathBuf,
        cmdline: Option<String>,
    },
}

impl Assets {
    /// The `cargo xtask boot` arguments that name these assets.
    pub fn args(&self) -> Vec<String> {
        match self {
            Assets::Tarball(path) => vec!["--tarball".into(), path.display().to_string()],
            Assets::Files {
                kernel,
                rootfs,
                cmdline,
            } => {
                let mut args = vec![
                    "--kernel".into(),
                    kernel.display().to_string(),
                    "--rootfs".into(),
                    rootfs.display().to_string(),
                ];
                if let Some(cmdline) = cmdline {
                    args.extend(["--cmdline".into(), cmdline.clone()]);
                }
                args
            }
        }
    }
}

/// The kernel and rootfs files of `assets`, taken out of the tarball into `work` when needed.
pub fn kernel_and_rootfs(assets: &Assets, work: &Path) -> (PathBuf, PathBuf) {
    match assets {
        Assets::Files { kernel, rootfs, .. } => (kernel.clone(), rootfs.clone()),
        Assets::Tarball(tarball) => {
            let dir = work.join("unpacked");
            let file = std::fs::File::open(tarball).unwrap_or_else(|e| panic!("opening {}: {e}", tarball.display()));
            tar::Archive::new(flate2::read::GzDecoder::new(file))
                .unpack(&dir)
                .unwrap();
            (dir.join("kernel"), dir.join("rootfs.erofs"))
        }
    }
}

/// The assets of `arch`, resolved (and built) once per test run.
pub fn assets(arch: Arch) -> Assets {
    static CACHE: Mutex<BTreeMap<&'static str, Assets>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(arch.as_str())
        .or_insert_with(|| resolve_assets(arch))
        .clone()
}

/// What a boot test starts with: QEMU and virtiofsd checked (see [`require_qemu`]), then the
/// assets of `arch`.
pub fn qemu_and_assets(arch: Arch) -> Assets {
    require_qemu(arch);
    assets(arch)
}

/// [`qemu_and_assets`], then the [`boot_lock`] (keep the guard for the whole boot), for a test
/// that boots at once.
pub fn qemu_assets_and_lock(arch: Arch) -> (Assets, MutexGuard<'static, ()>) {
    let assets = qemu_and_assets(arch);
    (assets, boot_lock())
}

fn resolve_assets(arch: Arch) -> Assets {
    if let Some(tarball) = env_path("BOOT_ASSETS_RELEASE_TARBALL") {
        let name = tarball.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.contains(&format!("-{arch}-")) {
            return Assets::Tarball(tarball);
        }
    }
    let given_arch = std::env::var("BOOT_ASSETS_BOOT_ARCH").unwrap_or_else(|_| "x86_64".into());
    if let (Some(kernel), Some(rootfs)) = (env_path("BOOT_ASSETS_BOOT_KERNEL"), env_path("BOOT_ASSETS_BOOT_ROOTFS")) {
        if given_arch == arch.as_str() {
            return Assets::Files {
                kernel,
                rootfs,
                cmdline: std::env::var("BOOT_ASSETS_BOOT_CMDLINE").ok().filter(|c| !c.is_empty()),
            };
        }
    }
    let verified = verified_assets(arch);
    Assets::Files {
        kernel: verified.kernel,
        rootfs: verified.rootfs,
        cmdline: Some(verified.cmdline),
    }
}

/// What a release makes of the built kernel and rootfs: the verified root.
#[derive(Debug, Clone)]
pub struct VerifiedAssets {
    pub kernel: PathBuf,
    /// The EROFS image `cargo xtask rootfs` built.
    pub plain_rootfs: PathBuf,
    /// The release's rootfs.erofs: that image followed by its dm-verity hash tree.
    pub rootfs: PathBuf,
    /// The release manifest's command line (it builds the verified root).
    pub cmdline: String,
    /// The release manifest's `rootfs_verity_root_hash`.
    pub root_hash: String,
}

/// The built kernel and rootfs of `arch`, released (`cargo xtask release`) once per test run;
/// the release's rootfs and command line are taken out of its tarball and manifest.
pub fn verified_assets(arch: Arch) -> VerifiedAssets {
    static CACHE: Mutex<BTreeMap<&'static str, VerifiedAssets>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(arch.as_str())
        .or_insert_with(|| {
            let (kernel, plain_rootfs) = build_assets(arch);
            let dist = work_dir().join(arch.as_str()).join("release");
            support::run_ok(&mut support::release_command(
                "0.0.0-boot",
                arch,
                &kernel,
                &plain_rootfs,
                &dist,
            ));
            let tarball = dist.join(arch.as_str()).join(cdn::tarball_name("0.0.0-boot", arch));
            let (_, rootfs) = kernel_and_rootfs(&Assets::Tarball(tarball), &dist);
            let (cmdline, root_hash) = release_cmdline(&rootfs, arch);
            VerifiedAssets {
                kernel,
                plain_rootfs,
                rootfs,
                cmdline,
                root_hash,
            }
        })
        .clone()
}

/// The command line and recorded root hash of `arch` in the manifest.json beside `file` (a
/// release tarball unpacked, or a version directory `cargo xtask fetch` installed).
pub fn release_cmdline(file: &Path, arch: Arch) -> (String, String) {
    let path = file.with_file_name(cdn::MANIFEST_FILE);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let manifest = Manifest::from_json_validated(&bytes).unwrap();
    let target = &manifest.targets[&arch];
    let root_hash = target
        .rootfs_verity_root_hash
        .clone()
        .unwrap_or_else(|| panic!("{}: {arch} records no rootfs root hash", path.display()));
    (target.kernel_cmdline.clone(), root_hash)
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| {
        let path = PathBuf::from(v);
        if path.is_absolute() {
            path
        } else {
            support::project_root().join(path)
        }
    })
}

/// Builds the real kernel and rootfs of `arch` with the pipeline's own commands (cached).
pub fn build_assets(arch: Arch) -> (PathBuf, PathBuf) {
    require_kernel_tools(arch);
    support::require_tool("mkfs.erofs");
    let dir = work_dir().join(arch.as_str());
    let kernel = dir.join("kernel");
    let rootfs = dir.join("rootfs.erofs");
    support::run_ok(
        xtask()
            .args(["kernel", "--arch", arch.as_str(), "--output"])
            .arg(&kernel),
    );
    support::run_ok(
        xtask()
            .args(["rootfs", "--arch", arch.as_str(), "--output"])
            .arg(&rootfs),
    );
    (kernel, rootfs)
}

/// Fails with the install line when a kernel build tool is missing.
pub fn require_kernel_tools(arch: Arch) {
    for tool in ["make", "gcc", "flex", "bison", "bc"] {
        support::require_tool(tool);
    }
    if arch == Arch::Arm64 {
        support::require_tool("aarch64-linux-gnu-gcc");
    }
    // No /usr/src check: `cargo xtask kernel` fetches its pinned source package itself
    // (manifests/kernel/source.lock).
    support::require_tool("apt-get");
}

/// Fails with the install line when QEMU or virtiofsd is missing (unless QEMU is overridden).
pub fn require_qemu(arch: Arch) {
    if qemu_override(arch).is_none() {
        match arch {
            Arch::X86_64 => support::require_tool("qemu-system-x86_64"),
            Arch::Arm64 => support::require_tool("qemu-system-aarch64"),
        };
    }
    assert!(
        Path::new("/usr/lib/qemu/virtiofsd").is_file() || std::env::var_os("BOOT_ASSETS_VIRTIOFSD").is_some(),
        "/usr/lib/qemu/virtiofsd is missing: {}",
        support::install_line("virtiofsd")
    );
}

fn qemu_override(arch: Arch) -> Option<PathBuf> {
    let specific = format!("BOOT_ASSETS_QEMU_{}", arch.as_str().to_uppercase());
    env_path(&specific).or_else(|| env_path("BOOT_ASSETS_QEMU"))
}

/// A `cargo xtask boot` command for `arch` with its assets, the agent and the QEMU override.
pub fn boot_command(arch: Arch, assets: &Assets, agent: Option<&Path>, timeout_secs: u64) -> Command {
    let mut command = xtask();
    command
        .args(["boot", "--arch", arch.as_str(), "--timeout", &timeout_secs.to_string()])
        .args(assets.args());
    if let Some(agent) = agent {
        command.arg("--agent").arg(agent);
    }
    if let Some(qemu) = qemu_override(arch) {
        command.arg("--qemu").arg(qemu);
    }
    // `cargo xtask test` probes KVM and says so here; guests of another arch always use TCG.
    if std::env::var("BOOT_ASSETS_TEST_ACCEL").as_deref() == Ok("kvm") && Arch::host() == Some(arch) {
        command.args(["--accel", "kvm"]);
    }
    command
}

/// A finished boot: its console (stdout), the xtask report (stderr) and how long it took.
#[derive(Debug)]
pub struct Booted {
    pub output: Output,
    pub elapsed: Duration,
}

impl Booted {
    /// The console, with kernel messages that landed inside a line moved after it
    /// ([`untangle_kernel_messages`]).
    pub fn console(&self) -> String {
        untangle_kernel_messages(&String::from_utf8_lossy(&self.output.stdout))
    }
    pub fn report(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Panics with the console tail and report unless the boot command succeeded.
    pub fn assert_success(&self) {
        assert!(
            self.output.status.success(),
            "boot failed ({}) after {:?}\n--- report ---\n{}\n--- console tail ---\n{}",
            self.output.status,
            self.elapsed,
            self.report(),
            tail(&self.console(), 60)
        );
    }
    /// Whether the console shows a kernel panic.
    pub fn panicked(&self) -> bool {
        self.console().contains("Kernel panic")
    }
}

/// Runs a boot command to completion.
pub fn run_boot(command: &mut Command) -> Booted {
    let started = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    Booted {
        output,
        elapsed: started.elapsed(),
    }
}

/// The console text with every kernel message that came out inside a line of the guest's
/// programs moved to just after that line, which then reads whole again. The kernel writes its
/// messages straight to the serial port while a program's line still drains from the tty's buffer
/// (a chunk of FIFO at a time), so under load a message such as `clocksource: Switched to
/// clocksource tsc` can split an init's FATAL line or an agent's CHECK line in two.
pub fn untangle_kernel_messages(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    // The start of a program's line whose rest has not come yet, and the kernel lines inside it.
    let mut open = String::new();
    let mut inside: Vec<&str> = Vec::new();
    for line in console.split_inclusive('\n') {
        let kernel_at = match kernel_message_at(line) {
            Some(0) if open.is_empty() => None,
            found => found,
        };
        match kernel_at {
            Some(at) => {
                open.push_str(&line[..at]);
                inside.push(&line[at..]);
            }
            None => {
                out.push_str(&open);
                out.push_str(line);
                open.clear();
                inside.drain(..).for_each(|kernel| out.push_str(kernel));
            }
        }
    }
    out.push_str(&open);
    inside.into_iter().for_each(|kernel| out.push_str(kernel));
    out
}

/// Where the first kernel message (`[    4.511935] …`, the printk time stamp) starts in a line.
fn kernel_message_at(line: &str) -> Option<usize> {
    line.match_indices('[').map(|(at, _)| at).find(|&at| {
        let Some((stamp, _)) = line[at + 1..].split_once("] ") else {
            return false;
        };
        let Some((seconds, micros)) = stamp.trim_start_matches(' ').split_once('.') else {
            return false;
        };
        !seconds.is_empty()
            && seconds.bytes().all(|b| b.is_ascii_digit())
            && micros.len() == 6
            && micros.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The last `count` lines of a text.
pub fn tail(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// `CHECK <name> ok|fail <detail>` lines of a console: name → (ok, detail).
pub fn parse_checks(console: &str) -> BTreeMap<String, (bool, String)> {
    let mut checks = BTreeMap::new();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("CHECK ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(name), Some(result)) = (parts.next(), parts.next()) else {
            continue;
        };
        checks.insert(
            name.to_owned(),
            (result == "ok", parts.next().unwrap_or_default().to_owned()),
        );
    }
    checks
}

/// The check names an `.expected` file beside an agent lists, one a line (`#` comments and blank
/// lines skipped), in order.
pub fn expected_checks(path: &str) -> Vec<String> {
    let full = support::project_root().join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()));
    let checks: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(!checks.is_empty(), "{path} lists no checks");
    checks
}

/// The `name: detail` of every check of `expected` that `checks` does not have as `ok`
/// (`name: no CHECK line` for one the agent never reported), in the order of `expected`.
pub fn failed_checks(checks: &BTreeMap<String, (bool, String)>, expected: &[String]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|name| match checks.get(name) {
            Some((true, _)) => None,
            Some((false, detail)) => Some(format!("{name}: {detail}")),
            None => Some(format!("{name}: no CHECK line")),
        })
        .collect()
}

/// Panics when any `expected` check of an agent's console is not `ok`. The message ends with the
/// failed checks, after the console's last `tail_lines` lines: a log cut in the middle (as CI's
/// excerpt is) still shows which check failed and why.
pub fn assert_checks_ok(what: &str, console: &str, expected: &[String], tail_lines: usize) {
    let failed = failed_checks(&parse_checks(console), expected);
    assert!(
        failed.is_empty(),
        "{what}: {} of {} checks failed\n--- console tail ---\n{}\n--- {what}: failed checks ---\n  {}",
        failed.len(),
        expected.len(),
        tail(console, tail_lines),
        failed.join("\n  ")
    );
}

/// The options `arch`'s kernel must have, as the `.config` lines they must appear as, for the
/// check agent to find in /proc/config.gz: every fragment line (later fragments win), then every
/// option of the requirement lists that apply to the arch and of the shipped iptables extensions
/// as `CONFIG_X=y` (see `recipe::required_options`).
pub fn expected_kernel_options(arch: Arch) -> String {
    let dir = support::project_root().join("manifests/kernel");
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    for file in ["common.config".to_owned(), format!("{arch}.config")] {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
                options.insert(name.to_owned(), format!("# {name} is not set"));
            } else if let Some((name, value)) = line.split_once('=').filter(|(n, _)| n.starts_with("CONFIG_")) {
                let as_config = if value == "n" {
                    format!("# {name} is not set")
                } else {
                    line.to_owned()
                };
                options.insert(name.to_owned(), as_config);
            }
        }
    }
    for name in crate::recipe::required_options(arch) {
        options.insert(format!("CONFIG_{name}"), format!("CONFIG_{name}=y"));
    }
    options.into_values().map(|line| line + "\n").collect()
}

/// A shell script agent written to a temporary directory, executable. Its `init` step (the
/// normal boot runs `arcbox-agent init` once before the agent) prints a line and succeeds.
pub fn script_agent(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexport PATH=/sbin:/bin:/usr/sbin:/usr/bin\n\
             if [ \"$1\" = init ]; then echo 'arcbox-agent: init step'; exit 0; fi\n{body}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An interactive boot: stdin piped to the guest console, stdout read line by line.
pub struct InteractiveBoot {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl InteractiveBoot {
    pub fn start(mut command: Command) -> InteractiveBoot {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        InteractiveBoot {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Types text on the guest console.
    pub fn type_text(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until a console line contains `needle`; false at the deadline or when the console
    /// closes.
    pub fn wait_for(&mut self, needle: &str, deadline: Instant) -> bool {
        if self.seen.iter().any(|line| line.contains(needle)) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Waits for the boot command to end and returns its exit status and report.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, Vec<String>) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        let mut report = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut report).ok();
        }
        self.seen.extend(self.lines.try_iter());
        (status, report, self.seen)
    }
}

/// Builds a tiny static program for the guest with the distro's compilers; returns its path.
pub fn compile_static(compiler: &str, source: &str, flags: &[&str], output: &Path) -> PathBuf {
    support::require_tool(compiler);
    let source_path = output.with_extension("c");
    std::fs::write(&source_path, source).unwrap();
    support::run_ok(
        Command::new(compiler)
            .args(flags)
            .arg("-o")
            .arg(output)
            .arg(&source_path),
    );
    output.to_path_buf()
}

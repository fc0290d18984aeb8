//! The three boot-mode scripts of `init/` without a VM: each runs under `/bin/sh` in a fake root
//! (a temporary directory laid out like the image), its path lines rewritten into that root,
//! `PATH` pointing at an empty directory, with stand-ins from `tests/fixtures/init-standins/` (a
//! busybox, an agent and a recorder for mkfs.btrfs and the distribution's init) that record their
//! argv. Each case asserts the exact sequence of calls, the console lines, and how the script
//! ended: powered off (the stand-in poweroff kills it, as the machine would be gone) or handed
//! over by `exec` (the program has the script's PID). A script that exits by itself fails every
//! case: as PID 1 it would panic the kernel.
//!
//! Cases by mode: `normal` (/sbin/init), `machine` (/sbin/arcbox-machine-init), `recovery`
//! (/sbin/arcbox-storage-recovery).

mod machine;
mod normal;
mod recovery;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::project_root;

/// The stand-in programs.
const STANDINS: &str = "tests/fixtures/init-standins";

/// The shared library every script sources, and where the image has it.
const COMMON: (&str, &str) = ("init/common.sh", "lib/arcbox/init-common.sh");

/// The line that opens and the line that closes the block of path assignments in each script.
const PATHS_START: &str = "# --- paths (the no-VM tests rewrite these lines) ---";
const PATHS_END: &str = "# --- end of paths ---";

/// The marker a storage-recovery-capable agent carries.
pub const RECOVERY_MARKER: &str = "arcbox-storage-recovery-v1";

/// How long one script may run before it counts as hung (a run takes well under a second; the
/// bound is for a machine loaded with kernel builds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a background call (`… &`) may take to show up in the trace after the script ended.
const BACKGROUND_WAIT: Duration = Duration::from_secs(20);

/// A boot-mode script: its file in the repository.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// The normal boot, `/sbin/init`.
    Init,
    /// `/sbin/arcbox-machine-init`.
    MachineInit,
    /// `/sbin/arcbox-storage-recovery`.
    StorageRecovery,
}

impl Script {
    pub fn source(self) -> &'static str {
        match self {
            Script::Init => "init/init",
            Script::MachineInit => "init/machine-init",
            Script::StorageRecovery => "init/storage-recovery",
        }
    }

    /// The prefix of its console lines.
    pub fn prefix(self) -> &'static str {
        match self {
            Script::Init => "arcbox-init",
            Script::MachineInit => "arcbox-machine-init",
            Script::StorageRecovery => "arcbox-storage-recovery",
        }
    }
}

/// Every line between [`PATHS_START`] and [`PATHS_END`], `NAME=/path` becomes `NAME={root}/path`
/// (a `:`-separated list, PATH's, becomes the empty directory `{root}/no-programs`). Panics unless
/// the block exists and no code line outside it names a host program directory.
fn rewrite_paths(text: &str, root: &Path, file: &str) -> String {
    let root = root.display().to_string();
    let mut inside = false;
    let mut rewritten = 0;
    let mut out = String::new();
    for line in text.lines() {
        let line = if line == PATHS_START || line == PATHS_END {
            inside = line == PATHS_START;
            line.to_owned()
        } else if inside {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{file}: `{line}` in the paths block is not NAME=/path"));
            assert!(value.starts_with('/'), "{file}: `{line}` is not an absolute path");
            rewritten += 1;
            if value.contains(':') {
                format!("{name}={root}/no-programs")
            } else {
                format!("{name}={root}{value}")
            }
        } else {
            let code = !line.trim_start().starts_with('#');
            assert!(
                !(code && names_host_program_dir(line)),
                "{file}: `{line}` names a host program directory outside the paths block"
            );
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(rewritten > 0, "{file}: no `{PATHS_START}` block");
    out
}

/// Whether `line` starts a path at a host program directory (`/bin/…`, not `$NEWROOT/bin/…`):
/// a script under test must never reach a real program of the host (poweroff above all).
fn names_host_program_dir(line: &str) -> bool {
    ["/bin/", "/sbin/", "/usr/", "/lib/"].iter().any(|dir| {
        line.match_indices(dir).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '}')
        })
    })
}

/// A fake root for one script run.
pub struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    /// The layout the scripts expect, with the stand-ins, an empty /proc/mounts, a fixed uptime
    /// (every agent exit is a quick one) and `cmdline` as /proc/cmdline.
    pub fn new(cmdline: &str) -> FakeRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = FakeRoot { dir };
        for sub in [
            "bin",
            "sbin",
            "lib/arcbox",
            "arcbox/bin",
            "proc",
            "dev",
            "no-programs",
            "scripts",
        ] {
            std::fs::create_dir_all(root.path(sub)).unwrap();
        }
        root.install_standin("busybox", "bin/busybox");
        root.install_standin("agent", "arcbox/bin/arcbox-agent");
        root.install_standin("recorder", "sbin/mkfs.btrfs");
        root.install_standin("recorder", "sbin/init");
        root.write("proc/mounts", "");
        root.write("proc/uptime", "100.00 150.00\n");
        root.write("proc/cmdline", &format!("{}\n", root.expand(cmdline)));
        let common = std::fs::read_to_string(project_root().join(COMMON.0)).unwrap();
        root.write(COMMON.1, &rewrite_paths(&common, root.dir.path(), COMMON.0));
        root
    }

    /// A path inside the fake root.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `$T` in `text` → the fake root's path.
    pub fn expand(&self, text: &str) -> String {
        text.replace("$T", &self.dir.path().display().to_string())
    }

    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
    }

    fn install_standin(&self, standin: &str, to: &str) {
        let target = self.path(to);
        std::fs::copy(project_root().join(STANDINS).join(standin), &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Calls whose argv starts with `prefix` fail.
    pub fn fail(&self, prefix: &str) {
        let path = self.path("fail");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&self.expand(prefix));
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    /// The stand-in agent exits with `status` when run with `subcommand` ("" for no argument).
    pub fn agent_exits(&self, subcommand: &str, status: i32) {
        self.write(&format!("agent-exit-{subcommand}"), &format!("{status}\n"));
    }

    /// An agent that does not carry the storage recovery marker.
    pub fn agent_without_marker(&self) {
        let path = self.path("arcbox/bin/arcbox-agent");
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().filter(|line| !line.contains(RECOVERY_MARKER)).collect();
        assert_eq!(
            kept.len() + 1,
            text.lines().count(),
            "the stand-in agent has one marker line"
        );
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    }

    /// A data disk of 70 000 zero bytes, with the btrfs magic at byte 65600 when `formatted`.
    pub fn disk(&self, relative: &str, formatted: bool) {
        let mut bytes = vec![0u8; 70_000];
        if formatted {
            bytes[65_600..65_608].copy_from_slice(b"_BHRfS_M");
        }
        std::fs::write(self.path(relative), bytes).unwrap();
    }

    /// Runs `script` (its path lines rewritten into this root) under /bin/sh until it ends.
    pub fn run(&self, script: Script) -> ScriptRun<'_> {
        let text = std::fs::read_to_string(project_root().join(script.source())).unwrap();
        let path = self.path(&format!("scripts/{}", script.prefix()));
        std::fs::write(&path, rewrite_paths(&text, self.dir.path(), script.source())).unwrap();
        let console_path = self.path("console.out");
        let console = std::fs::File::create(&console_path).unwrap();
        let mut child = Command::new("/bin/sh")
            .arg(&path)
            .env_clear()
            .env("PATH", self.path("no-programs"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "{} still ran after {SCRIPT_TIMEOUT:?}; calls:\n{}\nconsole:\n{}",
                    script.source(),
                    self.read("trace"),
                    self.read("console.out")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        ScriptRun {
            script,
            root: self,
            status,
            pid: child.id(),
        }
    }

    /// A file of the root with the root's path written as `$T`; empty when it does not exist.
    fn read(&self, relative: &str) -> String {
        let text = std::fs::read_to_string(self.path(relative)).unwrap_or_default();
        text.replace(&self.dir.path().display().to_string(), "$T")
    }
}

/// How a script run ended, and what it did.
pub struct ScriptRun<'a> {
    script: Script,
    root: &'a FakeRoot,
    status: std::process::ExitStatus,
    pid: u32,
}

impl ScriptRun<'_> {
    /// Its calls, one a line, with the fake root written as `$T`.
    pub fn calls(&self) -> Vec<String> {
        self.root
            .read("trace")
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    pub fn console(&self) -> String {
        self.root.read("console.out")
    }

    /// The calls are exactly `expected` (`$T` = the fake root), in order; an entry starting with
    /// `& ` was started in the background: it must come after the entry before it, anywhere.
    pub fn assert_calls(&self, expected: &[&str]) {
        let background: Vec<(usize, &str)> = expected
            .iter()
            .enumerate()
            .filter_map(|(at, entry)| entry.strip_prefix("& ").map(|call| (at, call)))
            .collect();
        let deadline = Instant::now() + BACKGROUND_WAIT;
        while background
            .iter()
            .any(|(_, call)| !self.calls().iter().any(|c| c == call))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let calls = self.calls();
        let mut foreground = calls.clone();
        for (at, call) in &background {
            let found = calls.iter().position(|c| c == call).unwrap_or_else(|| {
                panic!(
                    "{}: background call `{call}` never came; calls:\n{}",
                    self.script.source(),
                    calls.join("\n")
                )
            });
            let before = expected[..*at].iter().rev().find(|e| !e.starts_with("& "));
            if let Some(before) = before {
                let before_at = calls.iter().position(|c| c == before).unwrap_or(usize::MAX);
                assert!(
                    before_at < found,
                    "`{call}` came before `{before}`:\n{}",
                    calls.join("\n")
                );
            }
            foreground.remove(foreground.iter().position(|c| c == call).unwrap());
        }
        let wanted: Vec<&str> = expected.iter().copied().filter(|e| !e.starts_with("& ")).collect();
        assert_eq!(
            foreground,
            wanted,
            "{}: the calls differ; console:\n{}",
            self.script.source(),
            self.console()
        );
    }

    /// The script ended at `poweroff -f` (the stand-in kills it): never by exiting itself.
    pub fn assert_powered_off(&self) {
        assert_eq!(
            self.status.signal(),
            Some(libc::SIGKILL),
            "{} ended with {} instead of at poweroff; console:\n{}",
            self.script.source(),
            self.status,
            self.console()
        );
        let calls = self.calls();
        assert!(
            calls.iter().any(|call| call == "busybox poweroff -f"),
            "{} was killed without poweroff -f; calls:\n{}",
            self.script.source(),
            calls.join("\n")
        );
    }

    /// The script powered off after exactly one FATAL console line, `{prefix}: FATAL: {reason};
    /// powering off` (`$T` = the fake root), and that was its last line.
    pub fn assert_refused(&self, reason: &str) {
        self.assert_powered_off();
        let console = self.console();
        let fatal: Vec<&str> = console.lines().filter(|line| line.contains("FATAL")).collect();
        let wanted = format!("{}: FATAL: {reason}; powering off", self.script.prefix());
        assert_eq!(
            fatal,
            [wanted.as_str()],
            "{}: console:\n{console}",
            self.script.source()
        );
        assert_eq!(console.lines().last(), Some(wanted.as_str()), "console:\n{console}");
    }

    /// The script exec'd `program` (its argv `args`): that program ran with the script's PID.
    pub fn assert_handed_over_to(&self, program: &str, args: &str) {
        let pids = self.root.read("pids");
        let wanted = format!("{program} {args}").trim_end().to_owned();
        let pid = pids
            .lines()
            .find_map(|line| {
                let (call, pid) = line.rsplit_once(' ')?;
                (call.trim_end() == wanted).then(|| pid.parse::<u32>().unwrap())
            })
            .unwrap_or_else(|| panic!("`{wanted}` never ran; runs:\n{pids}"));
        assert_eq!(
            pid, self.pid,
            "`{wanted}` ran as a child, not in place of the script (exec)"
        );
        assert!(self.status.success(), "`{wanted}` ended with {}", self.status);
    }

    /// The console has `line` (`$T` = the fake root) as one of its lines.
    pub fn assert_console_has(&self, line: &str) {
        let console = self.console();
        assert!(
            console.lines().any(|l| l == line),
            "{}: no console line `{line}`:\n{console}",
            self.script.source()
        );
    }
}

/// Every script starts PID 1's way: the kernel filesystems.
pub const KERNEL_FILESYSTEMS: [&str; 3] = [
    "busybox mount -t proc proc /proc",
    "busybox mount -t sysfs sysfs /sys",
    "busybox mount -t devtmpfs devtmpfs /dev",
];

/// The end of a refusal: sync, then poweroff.
pub const POWER_OFF: [&str; 2] = ["busybox sync", "busybox poweroff -f"];

#[test]
fn every_script_is_shellcheck_clean_posix_sh_and_executable() {
    let shellcheck = crate::support::require_tool("shellcheck");
    for file in ["init/init", "init/machine-init", "init/storage-recovery", COMMON.0] {
        crate::support::run_ok(
            Command::new(&shellcheck)
                .args(["-s", "sh", "-x", "--severity=style"])
                .arg(file)
                .current_dir(project_root()),
        );
    }
    for script in [Script::Init, Script::MachineInit, Script::StorageRecovery] {
        let path = project_root().join(script.source());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{}", script.source());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{} is executable in git", script.source());
    }
    for stand_in in ["busybox", "agent", "recorder"] {
        crate::support::run_ok(
            Command::new(&shellcheck)
                .args(["-s", "sh"])
                .arg(project_root().join(STANDINS).join(stand_in)),
        );
    }
}

/// What PID 1 must never do, in any of the three scripts: exit on a failing command (`set -e`),
/// use the fragile `timeout` applet or the missing `mountpoint` one, or set FEX_ROOTFS.
#[test]
fn no_script_uses_what_pid_1_must_not() {
    for file in ["init/init", "init/machine-init", "init/storage-recovery", COMMON.0] {
        let text = std::fs::read_to_string(project_root().join(file)).unwrap();
        let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        let code = code.join("\n");
        for forbidden in ["set -e", "timeout", "mountpoint", "FEX_ROOTFS"] {
            assert!(!code.contains(forbidden), "{file} uses `{forbidden}`");
        }
    }
}

/// Without its shared library a script still powers off with one line (it cannot even log).
#[test]
fn a_missing_library_powers_off_every_script() {
    for script in [Script::Init, Script::MachineInit, Script::StorageRecovery] {
        let root = FakeRoot::new("console=ttyS0");
        std::fs::remove_file(root.path(COMMON.1)).unwrap();
        let run = root.run(script);
        run.assert_calls(&["busybox poweroff -f"]);
        run.assert_powered_off();
        run.assert_console_has(&format!(
            "{}: FATAL: cannot read $T/{}; powering off",
            script.prefix(),
            COMMON.1
        ));
    }
}

//! `cargo xtask boot`: boots a kernel and rootfs (or a release tarball) under QEMU with the
//! VirtioFS share laid out like the host's, streams the console, and fails unless the guest
//! powered off cleanly within the timeout.
//!
//! Reads the release tarball (its `kernel`, `rootfs.erofs` and `manifest.json` command line) or
//! the kernel and rootfs files, the agent file and the runtime bin directory; attaches any
//! `--disk` (written in place: a distro machine's data disk persists) and `--virtiofs` share;
//! writes only temporary files (the share, the scratch disk) that are removed afterwards. Prints the console
//! to stdout and the timings (kernel start → /sbin/init, init → the agent's first line, and
//! kernel start → the first container output when a container printed one) to stderr.

pub mod console;
pub mod kvm;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch, Manifest};
use xshell::Shell;

use crate::{archive, flags};
use qemu::{Accel, BootRun, ExtraDisk, ExtraShare, VmSpec};

/// Where the agent sits in the share (the guest sees `/arcbox/bin/arcbox-agent`).
pub const SHARE_AGENT_PATH: &str = "bin/arcbox-agent";

/// Where runtime binaries sit in the share (the guest sees `/arcbox/runtime/bin/…`).
pub const SHARE_RUNTIME_BIN: &str = "runtime/bin";

/// How many console lines a failure report shows.
const FAILURE_TAIL_LINES: usize = 40;

impl flags::Boot {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let arch: Arch = self.arch.into();
        let unpacked = tempfile::tempdir().context("creating a temporary directory")?;
        let (kernel, rootfs, manifest_cmdline) = match (&self.tarball, &self.kernel, &self.rootfs) {
            (Some(tarball), None, None) => {
                let (kernel, rootfs, cmdline) = unpack_release(tarball, arch, unpacked.path())?;
                (kernel, rootfs, Some(cmdline))
            }
            (None, Some(kernel), Some(rootfs)) => (kernel.clone(), rootfs.clone(), None),
            _ => bail!("pass either --tarball, or both --kernel and --rootfs"),
        };
        let mut cmdline = self
            .cmdline
            .clone()
            .or(manifest_cmdline)
            .unwrap_or_else(|| arch.default_kernel_cmdline().to_owned());
        for words in &self.append {
            cmdline.push(' ');
            cmdline.push_str(words.trim());
        }
        let disks = self
            .disk
            .iter()
            .map(|spec| parse_disk(spec))
            .collect::<Result<Vec<_>>>()?;
        let shares = self
            .virtiofs
            .iter()
            .map(|spec| parse_extra_share(spec))
            .collect::<Result<Vec<_>>>()?;

        let share = tempfile::Builder::new()
            .prefix("arcbox-share-")
            .tempdir()
            .context("creating the share directory")?;
        let extra_files = self
            .share_file
            .iter()
            .map(|spec| parse_share_file(spec))
            .collect::<Result<Vec<_>>>()?;
        prepare_share(
            share.path(),
            self.agent.as_deref(),
            self.runtime_bin.as_deref(),
            &extra_files,
        )?;

        let spec = VmSpec {
            arch,
            accel: match self.accel {
                flags::AccelFlag::Tcg => Accel::Tcg,
                flags::AccelFlag::Kvm => Accel::Kvm,
            },
            qemu: self.qemu.clone(),
            kernel,
            rootfs,
            cmdline,
            share: share.path().to_path_buf(),
            disks,
            shares,
            timeout: Duration::from_secs(self.timeout),
            stream_console: true,
            forward_stdin: true,
            forward_tcp: self.forward_tcp,
        };
        eprintln!(
            "boot {arch}: starting QEMU (timeout {} s, command line `{}`)",
            self.timeout, spec.cmdline
        );
        let run = qemu::run_vm(&spec)?;
        report(arch, &run);
        verdict(&run, self.timeout)
    }
}

/// Prints the timings of a boot to stderr.
fn report(arch: Arch, run: &BootRun) {
    let found = &run.milestones;
    let seconds = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    eprintln!(
        "boot {arch}: kernel start → /sbin/init: {} (kernel clock)",
        seconds(found.kernel_to_init)
    );
    eprintln!(
        "boot {arch}: QEMU start → /sbin/init: {} (host clock)",
        seconds(found.init_seen)
    );
    eprintln!(
        "boot {arch}: /sbin/init → agent's first line: {}{}",
        seconds(found.init_to_agent()),
        found
            .agent_first_text
            .as_ref()
            .map(|text| format!(" ({text:?})"))
            .unwrap_or_default()
    );
    if found.first_container_output.is_some() {
        eprintln!(
            "boot {arch}: kernel start → first container output: {} (kernel clock to init, then host clock)",
            seconds(found.kernel_to_first_container())
        );
    }
    eprintln!(
        "boot {arch}: QEMU ended after {:.2} s ({})",
        run.ended_at.as_secs_f64(),
        if run.timed_out {
            "timeout, killed"
        } else if run.powered_off() {
            "guest powered off"
        } else {
            "without a power-off"
        }
    );
}

/// Ok when the guest powered off without a panic before the timeout; else an error with the
/// console tail.
pub fn verdict(run: &BootRun, timeout_secs: u64) -> Result<()> {
    let problem = if run.timed_out {
        format!("the guest was still running after {timeout_secs} s; QEMU and virtiofsd were killed")
    } else if run.milestones.panicked {
        "the guest kernel panicked".to_owned()
    } else if !run.powered_off() {
        format!(
            "QEMU ended without the guest powering off (QEMU's shutdown reason: {}; a panic or a reboot \
             resets the guest)",
            run.shutdown_reason.as_deref().unwrap_or("none")
        )
    } else {
        return Ok(());
    };
    // A guest that died before its console came up only spoke on the early UART.
    let early = if run.milestones.init_seen.is_none() && !run.early_console.trim().is_empty() {
        let lines: Vec<&str> = run.early_console.lines().collect();
        format!(
            "\nthe early console (PL011, before hvc0) ended with:\n{}",
            lines[lines.len().saturating_sub(FAILURE_TAIL_LINES)..].join("\n")
        )
    } else {
        String::new()
    };
    bail!(
        "{problem}; the last {FAILURE_TAIL_LINES} console lines:\n{}{early}",
        console::tail(&run.lines, FAILURE_TAIL_LINES)
    )
}

/// `REL=PATH` → (REL, PATH); REL must stay inside the share.
fn parse_share_file(spec: &str) -> Result<(PathBuf, PathBuf)> {
    let Some((relative, source)) = spec.split_once('=') else {
        bail!("--share-file {spec:?}: expected DEST=SOURCE, e.g. test/expected.config=build/x86_64/kernel.config");
    };
    if let Some(problem) = boot_assets::manifest::relative_path_problem(relative) {
        bail!("--share-file {spec:?}: the destination {problem}");
    }
    Ok((PathBuf::from(relative), PathBuf::from(source)))
}

/// `PATH` or `PATH:ro` → an extra disk; the file must exist.
fn parse_disk(spec: &str) -> Result<ExtraDisk> {
    let (path, read_only) = match spec.strip_suffix(":ro") {
        Some(path) => (path, true),
        None => (spec, false),
    };
    if !Path::new(path).is_file() {
        bail!("--disk {spec:?}: {path} is not a file (expected PATH or PATH:ro, e.g. build/data.img)");
    }
    Ok(ExtraDisk {
        path: PathBuf::from(path),
        read_only,
    })
}

/// `TAG=DIR` → an extra VirtioFS share; the tag is letters, digits, `.`, `_`, `-` (at most 36
/// bytes, the virtio-fs limit), not `arcbox`, and DIR must be a directory.
fn parse_extra_share(spec: &str) -> Result<ExtraShare> {
    let Some((tag, dir)) = spec.split_once('=') else {
        bail!("--virtiofs {spec:?}: expected TAG=DIR, e.g. home=/home/me");
    };
    let tag_ok =
        !tag.is_empty() && tag.len() <= 36 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !tag_ok {
        bail!("--virtiofs {spec:?}: the tag {tag:?} must be 1 to 36 letters, digits, '.', '_' or '-'");
    }
    if tag == qemu::SHARE_TAG {
        bail!("--virtiofs {spec:?}: the tag {tag:?} is the share the boot always serves (see --agent, --share-file)");
    }
    if !Path::new(dir).is_dir() {
        bail!("--virtiofs {spec:?}: {dir} is not a directory");
    }
    Ok(ExtraShare {
        tag: tag.to_owned(),
        dir: PathBuf::from(dir),
    })
}

/// Lays out the share like the host does: the agent at `bin/arcbox-agent` (mode 0755), every
/// file of `runtime_bin` under `runtime/bin/` (modes kept), and any extra files.
pub fn prepare_share(
    share: &Path,
    agent: Option<&Path>,
    runtime_bin: Option<&Path>,
    extra_files: &[(PathBuf, PathBuf)],
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bin = share.join("bin");
    let runtime = share.join(SHARE_RUNTIME_BIN);
    for dir in [&bin, &runtime] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(agent) = agent {
        let target = share.join(SHARE_AGENT_PATH);
        std::fs::copy(agent, &target).with_context(|| format!("--agent {}: cannot copy it", agent.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", target.display()))?;
    }
    if let Some(runtime_bin) = runtime_bin {
        let entries = std::fs::read_dir(runtime_bin)
            .with_context(|| format!("--runtime-bin {}: cannot list it", runtime_bin.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", runtime_bin.display()))?;
            let target = runtime.join(entry.file_name());
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {} into the share", entry.path().display()))?;
        }
    }
    for (relative, source) in extra_files {
        let target = share.join(relative);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::copy(source, &target).with_context(|| format!("--share-file {}: cannot copy it", source.display()))?;
    }
    Ok(())
}

/// Unpacks a release tarball's kernel and rootfs into `into`, and reads the arch's command line
/// from its manifest.
fn unpack_release(tarball: &Path, arch: Arch, into: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let mut manifest_bytes = Vec::new();
    archive::read_members(
        tarball,
        &[cdn::KERNEL_FILE, cdn::MANIFEST_FILE, cdn::ROOTFS_FILE],
        |name, member| {
            if name == cdn::MANIFEST_FILE {
                member.read_to_end(&mut manifest_bytes)?;
            } else {
                let path = into.join(name);
                let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                std::io::copy(member, &mut file).with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        },
    )
    .with_context(|| format!("--tarball {}", tarball.display()))?;
    let manifest = Manifest::from_json(&manifest_bytes)
        .with_context(|| format!("--tarball {}: its manifest.json is invalid", tarball.display()))?;
    let target = manifest
        .targets
        .get(&arch)
        .with_context(|| format!("--tarball {}: its manifest has no {arch} target", tarball.display()))?;
    Ok((
        into.join(cdn::KERNEL_FILE),
        into.join(cdn::ROOTFS_FILE),
        target.kernel_cmdline.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str], timed_out: bool, shutdown_reason: Option<&str>) -> BootRun {
        let lines: Vec<console::ConsoleLine> = lines
            .iter()
            .map(|text| console::ConsoleLine {
                at: Duration::from_millis(1),
                text: (*text).to_owned(),
            })
            .collect();
        BootRun {
            milestones: console::milestones(&lines),
            lines,
            timed_out,
            ended_at: Duration::from_secs(1),
            shutdown_reason: shutdown_reason.map(str::to_owned),
            early_console: String::new(),
        }
    }

    #[test]
    fn a_guest_power_off_passes() {
        assert!(verdict(&run(&["agent says hi"], false, Some("guest-shutdown")), 60).is_ok());
        // x86_64's UART shows the kernel's own line even without QMP's word.
        assert!(verdict(&run(&["[    1.0] reboot: Power down"], false, None), 60).is_ok());
    }

    #[test]
    fn a_timeout_a_panic_and_a_reset_fail_with_the_console_tail() {
        let err = verdict(&run(&["stuck here"], true, None), 60).unwrap_err().to_string();
        assert!(
            err.starts_with("the guest was still running after 60 s; QEMU and virtiofsd were killed"),
            "{err}"
        );
        assert!(err.ends_with("stuck here"), "{err}");
        let panic = ["[    0.5] Kernel panic - not syncing: Attempted to kill init!"];
        let err = verdict(&run(&panic, false, Some("guest-reset")), 60)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the guest kernel panicked"), "{err}");
        let err = verdict(&run(&["rebooting"], false, Some("guest-reset")), 60)
            .unwrap_err()
            .to_string();
        assert!(err.contains("QEMU's shutdown reason: guest-reset"), "{err}");
    }

    #[test]
    fn share_file_destination_must_stay_inside() {
        assert!(parse_share_file("test/x=/tmp/x").is_ok());
        let err = parse_share_file("../x=/tmp/x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--share-file \"../x=/tmp/x\": the destination"),
            "{err}"
        );
        assert!(parse_share_file("nothing").is_err());
    }

    #[test]
    fn extra_disks_and_shares_are_checked_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("data.img");
        std::fs::write(&disk, b"").unwrap();
        let spec = format!("{}:ro", disk.display());
        assert_eq!(
            parse_disk(&spec).unwrap(),
            ExtraDisk {
                path: disk.clone(),
                read_only: true
            }
        );
        assert!(!parse_disk(&disk.display().to_string()).unwrap().read_only);
        let err = parse_disk("/nonexistent/data.img").unwrap_err().to_string();
        assert!(
            err.starts_with("--disk \"/nonexistent/data.img\": /nonexistent/data.img is not a file"),
            "{err}"
        );
        let share = parse_extra_share(&format!("home={}", dir.path().display())).unwrap();
        assert_eq!(share.tag, "home");
        for (bad, problem) in [
            ("home", "expected TAG=DIR"),
            ("=/tmp", "must be 1 to 36 letters"),
            ("a,b=/tmp", "must be 1 to 36 letters"),
            ("arcbox=/tmp", "is the share the boot always serves"),
            ("home=/nonexistent", "/nonexistent is not a directory"),
        ] {
            let err = parse_extra_share(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--virtiofs {bad:?}: ")) && err.contains(problem),
                "{err}"
            );
        }
    }

    #[test]
    fn share_has_the_host_layout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.sh");
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        let runtime = dir.path().join("rt");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::write(runtime.join("FEX"), "x").unwrap();
        let share = dir.path().join("share");
        prepare_share(&share, Some(&agent), Some(&runtime), &[]).unwrap();
        let mode = std::fs::metadata(share.join(SHARE_AGENT_PATH))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(share.join("runtime/bin/FEX").is_file());
    }
}

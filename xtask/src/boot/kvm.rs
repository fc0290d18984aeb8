//! Whether KVM really works on this host: `/dev/kvm` opens read-write and the host's QEMU can
//! create a `-cpu host` KVM machine. Used by `cargo xtask test` to choose the accelerator of the
//! boot tests (`BOOT_ASSETS_TEST_ACCEL`).
//!
//! Reads `/dev/kvm` and runs QEMU paused (`-S`) with its monitor on stdin, which is told to quit;
//! writes nothing. A `/dev/kvm` that exists but does not work (a nested host whose KVM refuses
//! MSRs: QEMU aborts while creating the vCPU) is reported as unusable, with QEMU's reason.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boot_assets::Arch;

use super::qemu::qemu_binary_name;

/// The KVM device node.
const KVM_DEVICE: &str = "/dev/kvm";

/// How long the paused probe machine may take to start and quit.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// `Ok(arch)` when a KVM guest of the host's arch can be created here, else why not.
pub fn probe(qemu_override: Option<&std::path::Path>) -> Result<Arch, String> {
    probe_with(std::path::Path::new(KVM_DEVICE), qemu_override)
}

/// [`probe`] with another device node (the tests use a stand-in QEMU and `/dev/null`).
fn probe_with(device: &std::path::Path, qemu_override: Option<&std::path::Path>) -> Result<Arch, String> {
    let arch =
        Arch::host().ok_or_else(|| format!("no QEMU guest arch matches the host ({})", std::env::consts::ARCH))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let qemu = qemu_override.map_or_else(|| qemu_binary_name(arch).into(), |p| p.as_os_str().to_owned());
    let machine = crate::arch_facts::of(arch).qemu_machine;
    let mut child = Command::new(&qemu)
        .args(["-accel", "kvm", "-cpu", "host", "-M", machine, "-S"])
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-monitor",
            "stdio",
            "-serial",
            "none",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", qemu.to_string_lossy()))?;
    // A machine that got as far as its monitor was created: tell it to quit.
    let _ = child.stdin.take().map(|mut stdin| stdin.write_all(b"quit\n"));
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return if status.success() {
                    Ok(arch)
                } else {
                    let reason = stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no message");
                    Err(format!(
                        "{} -accel kvm exited with {status}: {}",
                        qemu.to_string_lossy(),
                        reason.trim()
                    ))
                };
            }
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} -accel kvm did not quit within {PROBE_TIMEOUT:?}",
                    qemu.to_string_lossy()
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", qemu.to_string_lossy())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in QEMU: a shell script with the given body.
    fn fake_qemu(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_missing_device_is_unusable() {
        let err = probe_with(std::path::Path::new("/nonexistent/kvm"), None).unwrap_err();
        assert!(err.starts_with("/nonexistent/kvm: "), "{err}");
    }

    #[test]
    fn a_qemu_that_aborts_makes_kvm_unusable_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        // What QEMU prints on a host whose KVM refuses MSRs (measured on the build machines).
        let qemu = fake_qemu(
            dir.path(),
            "echo \"kvm_buf_set_msrs: Assertion failed.\" >&2; kill -ABRT $$",
        );
        let err = probe_with(std::path::Path::new("/dev/null"), Some(&qemu)).unwrap_err();
        assert!(err.contains("kvm_buf_set_msrs: Assertion failed."), "{err}");
    }

    #[test]
    fn a_qemu_that_reaches_its_monitor_and_quits_makes_kvm_usable() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path(), "read -r command; [ \"$command\" = quit ]");
        assert_eq!(
            probe_with(std::path::Path::new("/dev/null"), Some(&qemu)),
            Ok(Arch::host().unwrap())
        );
    }
}

//! Whether KVM really runs guests on this host: `/dev/kvm` opens read-write, and two probe guests
//! of the host's arch, booted by QEMU under `-accel kvm -cpu host`, each run to their marker
//! within a bounded time: a tiny firmware (KVM runs a vCPU at all), then the pipeline's own
//! kernel with no root (it runs its whole boot, to the "unable to mount root" panic). Used by
//! `cargo xtask test` to choose the accelerator of the boot tests (`BOOT_ASSETS_TEST_ACCEL`) and
//! by `cargo xtask probe-kvm`.
//!
//! Reads `/dev/kvm` and the kernel; writes the firmware (64 KiB, built here, see [`firmware`]) to
//! a temporary file and runs QEMU in its own process group, killed afterwards whatever happened.
//! Measured on the build machines: one kind of host's nested KVM creates the machine and its
//! vCPU but never runs the guest; another runs the firmware in real mode, and SeaBIOS, but hangs
//! in the kernel's early boot with nothing on the console. Both are reported as unusable, as is
//! a QEMU that aborts while creating the vCPU, each with the reason.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use boot_assets::Arch;

use super::qemu::qemu_binary_name;

/// The KVM device node.
const KVM_DEVICE: &str = "/dev/kvm";

/// How long the firmware may take, QEMU's start included, to print its marker (it needs well
/// under a second under KVM, and under TCG too).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the kernel may take to reach the end of its boot (about a second under KVM, a few
/// under TCG).
const KERNEL_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the probe firmware prints once its first instructions ran.
const PROBE_MARKER: &[u8] = b"BOOT-ASSETS-PROBE-GUEST-RAN\n";

/// What a kernel booted with no root prints once its initcalls are done, just before it panics.
const KERNEL_MARKER: &[u8] = b"VFS: Unable to mount root fs";

/// The size of the probe firmware: QEMU's x86 `-bios` takes a multiple of 64 KiB.
const FIRMWARE_BYTES: usize = 64 * 1024;

/// x86: the I/O ports of QEMU's `isa-debugcon` (the marker) and `isa-debug-exit` (QEMU quits).
const X86_DEBUGCON_PORT: u16 = 0xe9;
const X86_DEBUG_EXIT_PORT: u16 = 0xf4;

/// arm64 probe code at the `virt` machine's flash (address 0), as assembled by binutils from:
///
/// ```text
///     movz x1, #0x0900, lsl #16    // the PL011 UART's data register, 0x09000000
///     adr  x2, message             // the marker, right after this code
/// 1:  ldrb w3, [x2], #1
///     cbz  w3, 2f
///     strb w3, [x1]
///     b    1b
/// 2:  movz x0, #0x0008
///     movk x0, #0x8400, lsl #16    // PSCI SYSTEM_OFF
///     hvc  #0
/// 3:  wfi
///     b    3b
/// message:                          // PROBE_MARKER, NUL-terminated
/// ```
const ARM64_PROBE_CODE: [u32; 11] = [
    0xd2a1_2001,
    0x1000_0142,
    0x3840_1443,
    0x3400_0063,
    0x3900_0023,
    0x17ff_fffd,
    0xd280_0100,
    0xf2b0_8000,
    0xd400_0002,
    0xd503_207f,
    0x17ff_ffff,
];

/// How the probe guest is run: KVM is the question; TCG checks the probe guest itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAccel {
    Kvm,
    /// The same guests under TCG: checks the probe itself (`probe-kvm --tcg`, the tests).
    Tcg,
}

/// What a probe boots.
#[derive(Debug, Clone, Copy)]
enum ProbeGuest<'a> {
    /// The 64 KiB firmware of [`firmware`]: prints its marker and powers off.
    Firmware,
    /// A kernel image of the arch, booted with no root and the serial console.
    Kernel(&'a Path),
}

impl ProbeGuest<'_> {
    fn marker(self) -> &'static [u8] {
        match self {
            ProbeGuest::Firmware => PROBE_MARKER,
            ProbeGuest::Kernel(_) => KERNEL_MARKER,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ProbeGuest::Firmware => "probe firmware",
            ProbeGuest::Kernel(_) => "kernel",
        }
    }
}

/// The host's arch, the only one KVM can run.
pub fn host_arch() -> Result<Arch, String> {
    Arch::host().ok_or_else(|| format!("no QEMU guest arch matches the host ({})", std::env::consts::ARCH))
}

/// The kernel image a probe boots, asked for only once the firmware ran (it may need a build).
pub trait ProbeKernel: FnOnce() -> Result<PathBuf, String> {}
impl<F: FnOnce() -> Result<PathBuf, String>> ProbeKernel for F {}

/// `Ok(())` when KVM runs guests of the host's `arch` here — the firmware, then the kernel that
/// `kernel` gives — else why not.
pub fn probe(qemu_override: Option<&Path>, arch: Arch, kernel: impl ProbeKernel) -> Result<(), String> {
    probe_with(
        Path::new(KVM_DEVICE),
        qemu_override,
        arch,
        PROBE_TIMEOUT,
        kernel,
        KERNEL_PROBE_TIMEOUT,
    )
}

/// [`probe`] with another device node, QEMU and time bounds (the tests use stand-ins).
fn probe_with(
    device: &Path,
    qemu_override: Option<&Path>,
    arch: Arch,
    timeout: Duration,
    kernel: impl ProbeKernel,
    kernel_timeout: Duration,
) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    run_probe_guests(qemu_override, arch, ProbeAccel::Kvm, kernel, [timeout, kernel_timeout]).map(|_| ())
}

/// The same two guests under TCG, which checks the probe itself rather than KVM: how long the
/// firmware and the kernel took to their markers.
pub fn probe_under_tcg(
    qemu_override: Option<&Path>,
    arch: Arch,
    kernel: impl ProbeKernel,
) -> Result<[Duration; 2], String> {
    run_probe_guests(
        qemu_override,
        arch,
        ProbeAccel::Tcg,
        kernel,
        [PROBE_TIMEOUT, KERNEL_PROBE_TIMEOUT],
    )
}

/// The firmware, then the kernel, under `accel`, each within its bound of `timeouts`: the time
/// each took to its marker.
fn run_probe_guests(
    qemu_override: Option<&Path>,
    arch: Arch,
    accel: ProbeAccel,
    kernel: impl ProbeKernel,
    [timeout, kernel_timeout]: [Duration; 2],
) -> Result<[Duration; 2], String> {
    let started = Instant::now();
    run_probe_guest(qemu_override, arch, accel, ProbeGuest::Firmware, timeout)?;
    let firmware_took = started.elapsed();
    let kernel = kernel()?;
    let started = Instant::now();
    run_probe_guest(qemu_override, arch, accel, ProbeGuest::Kernel(&kernel), kernel_timeout)?;
    Ok([firmware_took, started.elapsed()])
}

/// The probe firmware of `arch`: prints [`PROBE_MARKER`], then powers the machine off.
pub fn firmware(arch: Arch) -> Vec<u8> {
    let mut image = match arch {
        // hlt everywhere the code is not.
        Arch::X86_64 => vec![0xf4u8; FIRMWARE_BYTES],
        Arch::Arm64 => vec![0u8; FIRMWARE_BYTES],
    };
    let code = match arch {
        Arch::X86_64 => x86_64_code(),
        Arch::Arm64 => {
            let mut code: Vec<u8> = ARM64_PROBE_CODE.iter().flat_map(|word| word.to_le_bytes()).collect();
            code.extend_from_slice(PROBE_MARKER);
            code.push(0);
            code
        }
    };
    image[..code.len()].copy_from_slice(&code);
    if arch == Arch::X86_64 {
        // The reset vector (CS base 0xffff0000, IP 0xfff0, the image's last 16 bytes):
        // `jmp near 0x0000`, the start of the image (rel16 = 0x0000 - 0xfff3).
        image[0xfff0..0xfff3].copy_from_slice(&[0xe9, 0x0d, 0x00]);
    }
    image
}

/// 16-bit real-mode code: every marker byte to the debugcon port, then a write to the
/// debug-exit port (QEMU quits), then halt.
fn x86_64_code() -> Vec<u8> {
    let [debugcon_low, debugcon_high] = X86_DEBUGCON_PORT.to_le_bytes();
    let [exit_low, exit_high] = X86_DEBUG_EXIT_PORT.to_le_bytes();
    // mov dx, port
    let mut code = vec![0xba, debugcon_low, debugcon_high];
    for &byte in PROBE_MARKER {
        // mov al, byte; out dx, al
        code.extend([0xb0, byte, 0xee]);
    }
    // mov dx, exit port; mov al, 0; out dx, al; hlt; jmp back to the hlt
    code.extend([0xba, exit_low, exit_high, 0xb0, 0x00, 0xee, 0xf4, 0xeb, 0xfd]);
    code
}

/// QEMU's arguments for `guest` of `arch` (the console on stdout); `firmware` is where the
/// firmware was written (unused for a kernel).
fn probe_args(arch: Arch, accel: ProbeAccel, guest: ProbeGuest, firmware: &Path) -> Vec<String> {
    let facts = crate::arch_facts::of(arch);
    let mut args: Vec<String> = match (accel, facts.qemu_tcg_cpu) {
        (ProbeAccel::Kvm, _) => vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()],
        (ProbeAccel::Tcg, None) => vec!["-accel".into(), "tcg".into()],
        (ProbeAccel::Tcg, Some(cpu)) => vec!["-accel".into(), "tcg".into(), "-cpu".into(), cpu.into()],
    };
    let fixed = [
        "-M",
        facts.qemu_machine,
        "-m",
        "256M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        "stdio,id=probe,signal=off",
    ];
    args.extend(fixed.iter().map(|arg| (*arg).to_owned()));
    if let ProbeGuest::Kernel(kernel) = guest {
        args.extend([
            "-serial".to_owned(),
            "chardev:probe".to_owned(),
            "-kernel".to_owned(),
            kernel.display().to_string(),
            "-append".to_owned(),
            format!("console={} panic=-1", facts.serial_console),
        ]);
        return args;
    }
    args.extend(["-bios".to_owned(), firmware.display().to_string()]);
    match arch {
        Arch::X86_64 => args.extend([
            "-device".to_owned(),
            format!("isa-debugcon,iobase={X86_DEBUGCON_PORT:#x},chardev=probe"),
            "-device".to_owned(),
            format!("isa-debug-exit,iobase={X86_DEBUG_EXIT_PORT:#x},iosize=0x04"),
        ]),
        Arch::Arm64 => args.extend(["-serial".to_owned(), "chardev:probe".to_owned()]),
    }
    args
}

/// Runs `guest` of `arch` under `accel` until its marker shows (Ok), QEMU ends without it, or
/// `timeout` passes (each an Err with the reason). QEMU's process group is killed at the end.
fn run_probe_guest(
    qemu_override: Option<&Path>,
    arch: Arch,
    accel: ProbeAccel,
    guest: ProbeGuest,
    timeout: Duration,
) -> Result<(), String> {
    let qemu = qemu_override.map_or_else(|| qemu_binary_name(arch).into(), |p| p.as_os_str().to_owned());
    let qemu_name = qemu.to_string_lossy().into_owned();
    let accel_name = match accel {
        ProbeAccel::Kvm => "kvm",
        ProbeAccel::Tcg => "tcg",
    };
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let firmware_path = dir.path().join("probe-firmware.bin");
    if let ProbeGuest::Firmware = guest {
        std::fs::write(&firmware_path, firmware(arch))
            .map_err(|e| format!("writing {}: {e}", firmware_path.display()))?;
    }
    let stderr_path = dir.path().join("qemu.stderr");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("creating {}: {e}", stderr_path.display()))?;
    let mut child = Command::new(&qemu)
        .args(probe_args(arch, accel, guest, &firmware_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {qemu_name}: {e}"))?;
    let (sender, output) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 || sender.send(buffer[..read].to_vec()).is_err() {
                break;
            }
        }
    });
    let outcome = wait_for_marker(&output, guest.marker(), timeout);
    // SAFETY: kill(2) with a negative pid signals our own child's process group; it touches no memory.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let status = child.wait().map_err(|e| format!("waiting for {qemu_name}: {e}"))?;
    let last_error = std::fs::read_to_string(&stderr_path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map_or_else(|| "no message".to_owned(), |line| line.trim().to_owned());
    match outcome {
        Outcome::Ran => Ok(()),
        Outcome::Ended => Err(format!(
            "{qemu_name} -accel {accel_name} ended ({status}) before its {} ran: {last_error}",
            guest.name()
        )),
        Outcome::TimedOut => Err(format!(
            "{qemu_name} -accel {accel_name} started, but its {} did not run to its marker within {timeout:?} \
             (a KVM that creates the machine but does not run it)",
            guest.name()
        )),
    }
}

/// How a probe run ended.
enum Outcome {
    /// The marker came.
    Ran,
    /// QEMU closed its console without it.
    Ended,
    /// Neither, in time.
    TimedOut,
}

/// Reads console chunks until `marker` shows, the console closes, or `timeout` passes.
fn wait_for_marker(output: &mpsc::Receiver<Vec<u8>>, marker: &[u8], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Outcome::TimedOut;
        };
        match output.recv_timeout(left) {
            Ok(chunk) => {
                seen.extend(chunk);
                if seen.windows(marker.len()).any(|window| window == marker) {
                    return Outcome::Ran;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return Outcome::TimedOut,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Outcome::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in QEMU: a shell script with the given body.
    fn fake_qemu(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn host() -> Arch {
        Arch::host().unwrap()
    }

    /// [`probe_with`] on `device` with the stand-in `qemu`, the firmware bound `timeout`, a
    /// kernel path that the stand-ins do not read, and a 2 s kernel bound.
    fn probe_stand_in(device: &str, qemu: Option<&Path>, timeout: Duration) -> Result<(), String> {
        let kernel = || Ok(PathBuf::from("/t/kernel"));
        probe_with(Path::new(device), qemu, host(), timeout, kernel, Duration::from_secs(2))
    }

    #[test]
    fn a_missing_device_is_unusable() {
        let err = probe_stand_in("/nonexistent/kvm", None, PROBE_TIMEOUT).unwrap_err();
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
        let err = probe_stand_in("/dev/null", Some(&qemu), PROBE_TIMEOUT).unwrap_err();
        assert!(err.contains("ended (signal: 6"), "{err}");
        assert!(
            err.ends_with("before its probe firmware ran: kvm_buf_set_msrs: Assertion failed."),
            "{err}"
        );
    }

    /// The failure seen on a fresh build machine: QEMU creates the KVM machine and its vCPU, then
    /// the guest never runs. The probe gives up at its bound and kills QEMU's whole group.
    #[test]
    fn a_qemu_that_creates_the_machine_and_hangs_makes_kvm_unusable_in_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let qemu = fake_qemu(
            dir.path(),
            &format!("echo $$ >'{}'\nexec sleep 600", pid_file.display()),
        );
        let bound = Duration::from_secs(2);
        let started = Instant::now();
        let err = probe_stand_in("/dev/null", Some(&qemu), bound).unwrap_err();
        let took = started.elapsed();
        assert!(
            err.ends_with("started, but its probe firmware did not run to its marker within 2s (a KVM that creates the machine but does not run it)"),
            "{err}"
        );
        assert!(took >= bound && took < bound + Duration::from_secs(3), "took {took:?}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the hung QEMU stand-in is still running"
        );
    }

    /// The failure seen on another build machine: the firmware runs under KVM (and SeaBIOS), but
    /// the kernel hangs in its early boot with nothing on the console.
    #[test]
    fn a_kvm_that_runs_the_firmware_but_not_the_kernel_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "case \"$*\" in *-bios*) echo BOOT-ASSETS-PROBE-GUEST-RAN ;; esac; exec sleep 600",
        );
        let started = Instant::now();
        let err = probe_stand_in("/dev/null", Some(&qemu), PROBE_TIMEOUT).unwrap_err();
        assert!(
            err.ends_with("started, but its kernel did not run to its marker within 2s (a KVM that creates the machine but does not run it)"),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_qemu_whose_firmware_and_kernel_print_their_markers_makes_kvm_usable() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "case \"$*\" in *-bios*) echo BOOT-ASSETS-PROBE-GUEST-RAN ;; \
             *\"-kernel /t/kernel -append console=\"*) echo 'Kernel panic - not syncing: VFS: Unable to mount root fs on \"\"' ;; \
             esac; exec sleep 600",
        );
        assert_eq!(probe_stand_in("/dev/null", Some(&qemu), PROBE_TIMEOUT), Ok(()));
    }

    #[test]
    fn a_kernel_that_cannot_be_had_makes_kvm_unusable_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path(), "echo BOOT-ASSETS-PROBE-GUEST-RAN; exec sleep 600");
        let no_kernel = || Err("building the kernel: no compiler".to_owned());
        let err = probe_with(
            Path::new("/dev/null"),
            Some(&qemu),
            host(),
            PROBE_TIMEOUT,
            no_kernel,
            PROBE_TIMEOUT,
        );
        assert_eq!(err, Err("building the kernel: no compiler".to_owned()));
    }

    #[test]
    fn the_x86_64_firmware_jumps_from_the_reset_vector_to_its_code() {
        let image = firmware(Arch::X86_64);
        assert_eq!(image.len(), FIRMWARE_BYTES);
        assert_eq!(&image[0xfff0..0xfff3], &[0xe9, 0x0d, 0x00]);
        // jmp near: the target is the next instruction's offset plus rel16, modulo 64 KiB.
        assert_eq!((0xfff3u32 + 0x000d) % 0x10000, 0);
        assert_eq!(&image[..3], &[0xba, 0xe9, 0x00]);
    }

    /// The real probe guest of each arch runs to its marker under the real QEMU (TCG here: the
    /// same firmware KVM is asked to run).
    #[test]
    fn the_probe_guest_of_each_arch_runs_to_its_marker_under_tcg() {
        for arch in Arch::ALL {
            let qemu = crate::tools::require(qemu_binary_name(arch)).unwrap_or_else(|e| panic!("{e:#}"));
            let started = Instant::now();
            let ran = run_probe_guest(Some(&qemu), arch, ProbeAccel::Tcg, ProbeGuest::Firmware, PROBE_TIMEOUT);
            assert_eq!(ran, Ok(()), "{arch}");
            eprintln!("{arch}: the probe guest ran under TCG in {:?}", started.elapsed());
        }
    }

    #[test]
    fn probe_arguments_ask_for_kvm_and_the_host_cpu() {
        let firmware = Path::new("/t/fw.bin");
        let args = probe_args(Arch::X86_64, ProbeAccel::Kvm, ProbeGuest::Firmware, firmware).join(" ");
        assert!(args.starts_with("-accel kvm -cpu host -M q35"), "{args}");
        assert!(args.contains("-bios /t/fw.bin"), "{args}");
        assert!(args.contains("isa-debugcon,iobase=0xe9,chardev=probe"), "{args}");
        let args = probe_args(Arch::Arm64, ProbeAccel::Tcg, ProbeGuest::Firmware, firmware).join(" ");
        assert!(args.starts_with("-accel tcg -cpu cortex-a57 -M virt"), "{args}");
        assert!(args.ends_with("-serial chardev:probe"), "{args}");
        let kernel = ProbeGuest::Kernel(Path::new("/t/bzImage"));
        let args = probe_args(Arch::X86_64, ProbeAccel::Kvm, kernel, firmware).join(" ");
        assert!(args.starts_with("-accel kvm -cpu host -M q35"), "{args}");
        assert!(
            args.ends_with("-serial chardev:probe -kernel /t/bzImage -append console=ttyS0 panic=-1"),
            "{args}"
        );
        assert!(!args.contains("-bios"), "{args}");
    }
}

//! Boots one guest under QEMU and captures its console: the reusable core of `cargo xtask boot`,
//! `cargo xtask bench boot` and the e2e boot tests.
//!
//! Reads the kernel, the rootfs image, a prepared share directory, and any extra disks and
//! VirtioFS shares; creates (in a temporary directory) a sparse scratch disk, the virtiofsd
//! sockets and QEMU's stderr log. Runs each virtiofsd and QEMU in its own process group, streams the console to stdout while keeping every
//! line with its arrival time, and ends at the guest's power-off or the timeout, after which both
//! process groups are killed. Pass or fail is read from the console, never from QEMU's exit status
//! (QEMU exits 0 after a power-off and after a panic alike).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use boot_assets::Arch;

use super::console::{self, BootMilestones, ConsoleLine};

/// The VirtioFS daemon bookworm's QEMU ships (there is no separate virtiofsd package).
pub const DEFAULT_VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// The VirtioFS tag the init mounts on /arcbox.
pub const SHARE_TAG: &str = "arcbox";

/// Guest memory; the VirtioFS share needs it as a shared memfd backend of the same size.
const GUEST_MEMORY_MIB: u32 = 512;

/// Guest CPUs: one, since the build machines have two cores shared with other work.
const GUEST_CPUS: u32 = 1;

/// Size of the sparse scratch disk (/dev/vdb); mkfs.btrfs wants well over 100 MiB.
const SCRATCH_DISK_BYTES: u64 = 512 * 1024 * 1024;

/// Appended to every command line: a panic reboots at once, and `-no-reboot` turns that into
/// QEMU exiting, so a panicking guest never sits until the timeout.
const PANIC_ARGS: &str = "panic=-1";

/// Appended for an x86_64 guest under TCG: the kernel's check that the IO-APIC timer ticks
/// (`check_timer`) waits a few ticks' time and counts them, and an emulated CPU starved by a
/// loaded host counts too few and panics ("IO-APIC + timer doesn't work!"). Hardware
/// virtualization, which the runtime uses, never trips it; the release's command line is
/// unchanged.
const TCG_X86_64_ARGS: &str = "no_timer_check";

/// virtiofsd's cache mode for the `arcbox` share, which nothing changes during a boot: the guest
/// keeps a file's pages from one open to the next. With `auto` every exec of a share binary reads
/// the whole file again into fresh pages, and under TCG that costs twice: QEMU translates the code
/// again, and a page virtiofsd refills (it writes guest memory directly, unseen by TCG) can still
/// run the translations of the code it held before. Measured on arm64 with containerd and dockerd
/// running and 80 runs of `ctr version`/`docker version` from the share, two boots at once:
/// `auto` 2–3 Go runtime crashes (SIGSEGV, "scavenger state is already wired") per boot and
/// 230–400 s; `always` none and 86–90 s.
const ARCBOX_SHARE_CACHE: &str = "cache=always";

/// virtiofsd's cache mode for the extra shares (`--virtiofs`): user directories the host or
/// another guest may change, so the guest checks them on every open.
const EXTRA_SHARE_CACHE: &str = "cache=auto";

/// How long virtiofsd may take to create its socket.
const VIRTIOFSD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The SHUTDOWN reason QEMU reports when the guest powered itself off.
pub const QMP_GUEST_SHUTDOWN: &str = "guest-shutdown";

/// How long QEMU may take to open its QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the QEMU process is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How the guest CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's software emulation: slow but works everywhere.
    Tcg,
    /// Hardware virtualization; only for a guest of the host's arch.
    Kvm,
}

/// A disk attached after the scratch disk: /dev/vdc, /dev/vdd, … in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraDisk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A VirtioFS share besides `arcbox`, served by its own virtiofsd: the guest mounts it by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraShare {
    pub tag: String,
    pub dir: PathBuf,
}

/// Everything one boot needs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub arch: Arch,
    pub accel: Accel,
    /// The QEMU binary; `qemu-system-{x86_64|aarch64}` from PATH when `None`.
    pub qemu: Option<PathBuf>,
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    /// The kernel command line (the manifest's); `panic=-1` is appended, and `no_timer_check`
    /// for x86_64 under TCG.
    pub cmdline: String,
    /// The directory served as the `arcbox` VirtioFS share.
    pub share: PathBuf,
    /// Disks after the scratch disk (a distro machine's image and data disk, for example).
    pub disks: Vec<ExtraDisk>,
    /// VirtioFS shares besides `arcbox` (a distro machine's user shares, for example).
    pub shares: Vec<ExtraShare>,
    pub timeout: Duration,
    /// Echo the console to stdout as it arrives.
    pub stream_console: bool,
    /// Forward this process's stdin to the guest console (for interactive debug shells).
    pub forward_stdin: bool,
    /// A user-mode network with one TCP port forwarded from the host's loopback; no network
    /// at all when `None`.
    pub forward_tcp: Option<TcpForward>,
}

/// A TCP port of the host's loopback forwarded to a port of the guest (QEMU's user-mode
/// network: the guest's virtio-net `eth0` is 10.0.2.15/24, its gateway 10.0.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpForward {
    pub host_port: u16,
    pub guest_port: u16,
}

impl std::str::FromStr for TcpForward {
    type Err = anyhow::Error;

    /// `HOST_PORT:GUEST_PORT`.
    fn from_str(text: &str) -> Result<TcpForward> {
        let parsed = text
            .split_once(':')
            .and_then(|(host, guest)| Some((host.parse().ok()?, guest.parse().ok()?)));
        match parsed {
            Some((host_port, guest_port)) => Ok(TcpForward { host_port, guest_port }),
            None => bail!("{text:?} is not HOST_PORT:GUEST_PORT (two TCP port numbers)"),
        }
    }
}

/// QEMU's network arguments: none, or a user-mode network with the forwarded port.
pub fn network_args(forward: Option<TcpForward>) -> Vec<OsString> {
    match forward {
        None => Vec::new(),
        Some(TcpForward { host_port, guest_port }) => vec![
            "-nic".into(),
            format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}").into(),
        ],
    }
}

/// What a boot produced.
#[derive(Debug, Clone)]
pub struct BootRun {
    pub lines: Vec<ConsoleLine>,
    pub milestones: BootMilestones,
    /// The guest was still running at the timeout and was killed.
    pub timed_out: bool,
    /// When QEMU ended (or was killed), since its start.
    pub ended_at: Duration,
    /// The reason of QEMU's SHUTDOWN event: `guest-shutdown` after a power-off, `guest-reset`
    /// after a reboot or a panic (with `panic=-1 -no-reboot`); `None` when it never came.
    pub shutdown_reason: Option<String>,
    /// What the arm64 early UART printed (empty on x86_64, where the console is that UART).
    pub early_console: String,
}

impl BootRun {
    /// The guest powered itself off: QEMU reported a guest shutdown, or the console shows it.
    /// (On arm64 the kernel's last console line can be lost with hvc0, so QMP is the truth.)
    pub fn powered_off(&self) -> bool {
        self.shutdown_reason.as_deref() == Some(QMP_GUEST_SHUTDOWN) || self.milestones.powered_off
    }
}

/// The QEMU binary name of an arch.
pub fn qemu_binary_name(arch: Arch) -> &'static str {
    crate::arch_facts::of(arch).qemu_binary
}

/// The files one boot's QEMU uses: the images it is given, and what it keeps in its own run
/// directory (the one owner of those names).
#[derive(Debug, Clone)]
pub struct MachineFiles<'a> {
    pub kernel: &'a Path,
    pub rootfs: &'a Path,
    /// The boot's temporary directory.
    pub run_dir: &'a Path,
    pub disks: &'a [ExtraDisk],
    pub shares: &'a [ExtraShare],
}

impl MachineFiles<'_> {
    /// The sparse scratch disk, /dev/vdb.
    pub fn scratch(&self) -> PathBuf {
        self.run_dir.join("scratch.img")
    }

    /// virtiofsd's vhost-user socket.
    pub fn virtiofs_socket(&self) -> PathBuf {
        self.run_dir.join("virtiofs.sock")
    }

    /// The vhost-user socket of the virtiofsd serving extra share number `index`.
    pub fn extra_share_socket(&self, index: usize) -> PathBuf {
        self.run_dir.join(format!("virtiofs-{index}.sock"))
    }

    /// QMP's socket, which tells a power-off from a reset.
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// Where the arm64 PL011 (the `earlycon` UART) writes: the kernel's messages from before
    /// hvc0 exists, which explain a guest that dies early.
    pub fn early_serial(&self) -> PathBuf {
        self.run_dir.join("early-serial.log")
    }

    /// QEMU's stderr.
    pub fn qemu_stderr(&self) -> PathBuf {
        self.run_dir.join("qemu.stderr")
    }
}

/// QEMU's arguments for one boot: the arch's machine, console, rootfs as read-only /dev/vda,
/// the scratch disk as /dev/vdb, the extra disks as /dev/vdc… (PCI slots follow argument order),
/// and the VirtioFS shares.
pub fn qemu_args(arch: Arch, accel: Accel, cmdline: &str, files: &MachineFiles) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let memory = format!("{GUEST_MEMORY_MIB}M");
    let machine = format!("{},memory-backend=mem", crate::arch_facts::of(arch).qemu_machine);
    push(
        &mut args,
        &["-M", &machine, "-m", &memory, "-smp", &GUEST_CPUS.to_string()],
    );
    match (accel, crate::arch_facts::of(arch).qemu_tcg_cpu) {
        (Accel::Kvm, _) => push(&mut args, &["-accel", "kvm", "-cpu", "host"]),
        (Accel::Tcg, None) => push(&mut args, &["-accel", "tcg"]),
        (Accel::Tcg, Some(cpu)) => push(&mut args, &["-accel", "tcg", "-cpu", cpu]),
    }
    push(
        &mut args,
        &["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    );
    push(&mut args, &["-chardev", "stdio,id=console,signal=off"]);
    match arch {
        // ttyS0: the 8250 UART on the ISA bus.
        Arch::X86_64 => push(&mut args, &["-serial", "chardev:console"]),
        // hvc0: a virtio console; the PL011 (earlycon) goes to a file.
        Arch::Arm64 => {
            push(
                &mut args,
                &["-device", "virtio-serial-pci", "-device", "virtconsole,chardev=console"],
            );
            let mut serial = OsString::from("file:");
            serial.push(files.early_serial());
            args.extend(["-serial".into(), serial]);
        }
    }
    args.extend(["-kernel".into(), files.kernel.as_os_str().to_owned()]);
    let mut append = format!("{cmdline} {PANIC_ARGS}");
    if (arch, accel) == (Arch::X86_64, Accel::Tcg) {
        append = format!("{append} {TCG_X86_64_ARGS}");
    }
    push(&mut args, &["-append", &append]);
    push_drive(&mut args, "rootfs", files.rootfs, true);
    push_drive(&mut args, "scratch", &files.scratch(), false);
    for (index, disk) in files.disks.iter().enumerate() {
        push_drive(&mut args, &format!("disk{index}"), &disk.path, disk.read_only);
    }
    push_virtiofs(&mut args, "virtiofs", &files.virtiofs_socket(), SHARE_TAG);
    for (index, share) in files.shares.iter().enumerate() {
        push_virtiofs(
            &mut args,
            &format!("virtiofs{index}"),
            &files.extra_share_socket(index),
            &share.tag,
        );
    }
    args.extend([
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory},share=on").into(),
    ]);
    // QMP tells a power-off from a reset (panic) for certain, whatever the console shows.
    let mut qmp = OsString::from("unix:");
    qmp.push(escape_qemu_option(&files.qmp_socket()));
    qmp.push(",server=on,wait=off");
    args.extend(["-qmp".into(), qmp]);
    args
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// A raw virtio disk.
fn push_drive(args: &mut Vec<OsString>, id: &str, path: &Path, read_only: bool) {
    let mut spec = OsString::from(format!("if=none,id={id},format=raw,"));
    if read_only {
        spec.push("readonly=on,");
    }
    spec.push("file=");
    spec.push(escape_qemu_option(path));
    args.extend(["-drive".into(), spec]);
    args.extend(["-device".into(), format!("virtio-blk-pci,drive={id}").into()]);
}

/// A VirtioFS device whose virtiofsd listens on `socket`.
fn push_virtiofs(args: &mut Vec<OsString>, id: &str, socket: &Path, tag: &str) {
    let mut chardev = OsString::from(format!("socket,id={id},path="));
    chardev.push(escape_qemu_option(socket));
    args.extend(["-chardev".into(), chardev]);
    args.extend([
        "-device".into(),
        format!("vhost-user-fs-pci,chardev={id},tag={tag}").into(),
    ]);
}

/// A path inside a QEMU `key=value,…` option: commas are doubled.
fn escape_qemu_option(path: &Path) -> OsString {
    OsString::from(path.to_string_lossy().replace(',', ",,"))
}

/// Boots `spec` and returns its console; errors only when the machine could not be run at all.
pub fn run_vm(spec: &VmSpec) -> Result<BootRun> {
    let (qemu, virtiofsd) = machine_programs(spec)?;
    crate::util::require_file(&spec.kernel, "--kernel")?;
    crate::util::require_file(&spec.rootfs, "--rootfs")?;

    let scratch_dir = tempfile::Builder::new()
        .prefix("boot-")
        .tempdir()
        .context("creating a temporary directory for the boot")?;
    let files = MachineFiles {
        kernel: &spec.kernel,
        rootfs: &spec.rootfs,
        run_dir: scratch_dir.path(),
        disks: &spec.disks,
        shares: &spec.shares,
    };
    for disk in &spec.disks {
        crate::util::require_file(&disk.path, "--disk")?;
    }
    let scratch = files.scratch();
    std::fs::File::create(&scratch)
        .and_then(|file| file.set_len(SCRATCH_DISK_BYTES))
        .with_context(|| format!("creating the scratch disk {}", scratch.display()))?;

    let mut virtiofsd_children = vec![start_virtiofsd(
        &virtiofsd,
        &files.virtiofs_socket(),
        &spec.share,
        ARCBOX_SHARE_CACHE,
    )?];
    for (index, share) in spec.shares.iter().enumerate() {
        virtiofsd_children.push(start_virtiofsd(
            &virtiofsd,
            &files.extra_share_socket(index),
            &share.dir,
            EXTRA_SHARE_CACHE,
        )?);
    }
    let started = Instant::now();
    let mut qemu_child = start_qemu(&qemu, spec, &files)?;

    let lines = Arc::new(Mutex::new(Vec::<ConsoleLine>::new()));
    let reader = attach_console(&mut qemu_child.child, spec, started, &lines);
    let shutdown_reason = Arc::new(Mutex::new(None::<String>));
    let qmp_reader = watch_qmp(&files.qmp_socket(), &mut qemu_child.child, &shutdown_reason)?;

    let timed_out = wait_for_exit(&mut qemu_child.child, started + spec.timeout)?;
    let ended_at = started.elapsed();
    qemu_child.kill();
    virtiofsd_children.iter_mut().for_each(ProcessGroup::kill);
    let _ = reader.join();
    if let Some(qmp_reader) = qmp_reader {
        let _ = qmp_reader.join();
    }
    let shutdown_reason = shutdown_reason.lock().expect("qmp lock").take();

    let lines = std::mem::take(&mut *lines.lock().expect("console lock"));
    if lines.is_empty() && !timed_out {
        let stderr = std::fs::read_to_string(files.qemu_stderr()).unwrap_or_default();
        bail!(
            "{} ended after {:.1} s without any console output; its stderr:\n{}",
            qemu.display(),
            ended_at.as_secs_f64(),
            stderr.trim()
        );
    }
    let milestones = console::milestones(&lines);
    Ok(BootRun {
        lines,
        milestones,
        timed_out,
        ended_at,
        shutdown_reason,
        early_console: std::fs::read_to_string(files.early_serial()).unwrap_or_default(),
    })
}

/// The QEMU and virtiofsd this boot runs, after checking the accelerator fits the host.
fn machine_programs(spec: &VmSpec) -> Result<(PathBuf, PathBuf)> {
    if spec.accel == Accel::Kvm && Arch::host() != Some(spec.arch) {
        bail!(
            "--accel kvm runs only a guest of the host's arch; use --accel tcg for {}",
            spec.arch
        );
    }
    let qemu = spec
        .qemu
        .clone()
        .unwrap_or_else(|| PathBuf::from(qemu_binary_name(spec.arch)));
    let virtiofsd = std::env::var_os("BOOT_ASSETS_VIRTIOFSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VIRTIOFSD));
    if !virtiofsd.is_file() {
        bail!(
            "{} is missing: it serves the VirtioFS share; {} (or point BOOT_ASSETS_VIRTIOFSD at a virtiofsd)",
            virtiofsd.display(),
            crate::tools::missing_message("virtiofsd")?
        );
    }
    Ok((qemu, virtiofsd))
}

/// Connects to QMP and keeps the SHUTDOWN reason on a thread; `None` when QEMU ended before its
/// socket existed (it failed at start, and its stderr tells why).
fn watch_qmp(
    socket: &Path,
    qemu: &mut Child,
    shutdown_reason: &Arc<Mutex<Option<String>>>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    match connect_qmp(socket, qemu) {
        Ok(stream) => {
            let shutdown_reason = Arc::clone(shutdown_reason);
            Ok(Some(std::thread::spawn(move || {
                read_qmp_events(stream, &shutdown_reason)
            })))
        }
        Err(_) if matches!(qemu.try_wait(), Ok(Some(_))) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Starts QEMU with its console on pipes and its stderr in the run directory.
fn start_qemu(qemu: &Path, spec: &VmSpec, files: &MachineFiles) -> Result<ProcessGroup> {
    let stderr_path = files.qemu_stderr();
    let qemu_stderr =
        std::fs::File::create(&stderr_path).with_context(|| format!("creating {}", stderr_path.display()))?;
    ProcessGroup::spawn(
        Command::new(qemu)
            .args(qemu_args(spec.arch, spec.accel, &spec.cmdline, files))
            .args(network_args(spec.forward_tcp))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(qemu_stderr),
    )
    .with_context(|| {
        format!(
            "starting {} ({}, or set BOOT_ASSETS_QEMU)",
            qemu.display(),
            crate::tools::missing_message(qemu_binary_name(spec.arch)).unwrap_or_default()
        )
    })
}

/// virtiofsd's arguments to serve `share` on `socket` with the cache mode `cache`.
fn virtiofsd_args(socket: &Path, share: &Path, cache: &str) -> Vec<OsString> {
    let mut source = OsString::from("source=");
    source.push(share);
    let mut socket_path = OsString::from("--socket-path=");
    socket_path.push(socket);
    vec![
        socket_path,
        "-o".into(),
        source,
        "-o".into(),
        "sandbox=namespace".into(),
        "-o".into(),
        cache.into(),
    ]
}

/// Starts virtiofsd serving `share` on `socket` with the cache mode `cache` and waits until the
/// socket exists.
fn start_virtiofsd(virtiofsd: &Path, socket: &Path, share: &Path, cache: &str) -> Result<ProcessGroup> {
    let mut child = ProcessGroup::spawn(
        Command::new(virtiofsd)
            .args(virtiofsd_args(socket, share, cache))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .with_context(|| format!("starting {}", virtiofsd.display()))?;
    let waited = Instant::now();
    while !socket.exists() {
        if let Some(status) = child.child.try_wait()? {
            bail!(
                "{} exited at start ({status}) serving {}",
                virtiofsd.display(),
                share.display()
            );
        }
        if waited.elapsed() > VIRTIOFSD_START_TIMEOUT {
            bail!(
                "{} did not create its socket within {VIRTIOFSD_START_TIMEOUT:?}",
                virtiofsd.display()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(child)
}

/// Reads QEMU's console into `lines` on a thread, and forwards our stdin to it or closes it.
fn attach_console(
    qemu: &mut Child,
    spec: &VmSpec,
    started: Instant,
    lines: &Arc<Mutex<Vec<ConsoleLine>>>,
) -> std::thread::JoinHandle<()> {
    let stdout = qemu.stdout.take().expect("stdout is piped");
    let reader = {
        let lines = Arc::clone(lines);
        let stream = spec.stream_console;
        std::thread::spawn(move || read_console(stdout, started, stream, &lines))
    };
    let stdin = qemu.stdin.take().expect("stdin is piped");
    if spec.forward_stdin {
        // Detached: a read of our stdin cannot be interrupted, and the thread ends with the process.
        std::thread::spawn(move || forward_stdin(stdin));
    } else {
        drop(stdin);
    }
    reader
}

/// Waits for QEMU to end; true when `deadline` came first.
fn wait_for_exit(qemu: &mut Child, deadline: Instant) -> Result<bool> {
    loop {
        if qemu.try_wait().context("waiting for QEMU")?.is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            return Ok(true);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Connects to QEMU's QMP socket and leaves capability negotiation, so events flow.
fn connect_qmp(socket: &Path, qemu: &mut Child) -> Result<std::os::unix::net::UnixStream> {
    let waited = Instant::now();
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(error) => {
                if waited.elapsed() > QMP_CONNECT_TIMEOUT || matches!(qemu.try_wait(), Ok(Some(_))) {
                    return Err(error).with_context(|| format!("connecting to QEMU's QMP socket {}", socket.display()));
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    };
    let mut writer = stream.try_clone().context("cloning the QMP socket")?;
    writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .context("negotiating QMP capabilities")?;
    Ok(stream)
}

/// Reads QMP messages until QEMU closes the socket, keeping the SHUTDOWN event's reason.
fn read_qmp_events(stream: std::os::unix::net::UnixStream, shutdown_reason: &Mutex<Option<String>>) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if let Some(reason) = shutdown_event_reason(&line) {
            *shutdown_reason.lock().expect("qmp lock") = Some(reason);
        }
    }
}

/// The reason of a QMP `SHUTDOWN` event line, `None` for any other message.
pub fn shutdown_event_reason(line: &str) -> Option<String> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("event")?.as_str()? != "SHUTDOWN" {
        return None;
    }
    Some(message.pointer("/data/reason")?.as_str()?.to_owned())
}

/// Reads the console until QEMU closes it, keeping each line with its arrival time.
fn read_console(mut from: impl Read, started: Instant, stream: bool, lines: &Mutex<Vec<ConsoleLine>>) {
    let mut partial: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut out = std::io::stdout();
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stream {
            let _ = out.write_all(&buffer[..read]);
            let _ = out.flush();
        }
        for &byte in &buffer[..read] {
            if byte == b'\n' {
                push_line(lines, started, &partial);
                partial.clear();
            } else {
                partial.push(byte);
            }
        }
    }
    if !partial.is_empty() {
        push_line(lines, started, &partial);
    }
}

fn push_line(lines: &Mutex<Vec<ConsoleLine>>, started: Instant, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).trim_end_matches('\r').to_owned();
    lines.lock().expect("console lock").push(ConsoleLine {
        at: started.elapsed(),
        text,
    });
}

/// Copies this process's stdin to the guest console, flushing every chunk.
fn forward_stdin(mut to: impl Write) {
    let mut buffer = [0u8; 1024];
    let mut stdin = std::io::stdin();
    while let Ok(read) = stdin.read(&mut buffer) {
        if read == 0 || to.write_all(&buffer[..read]).and_then(|()| to.flush()).is_err() {
            break;
        }
    }
}

/// A child started as the leader of its own process group, so it and everything it forks can
/// be killed together (virtiofsd forks into its sandbox).
struct ProcessGroup {
    child: Child,
}

impl ProcessGroup {
    fn spawn(command: &mut Command) -> std::io::Result<ProcessGroup> {
        command.process_group(0).spawn().map(|child| ProcessGroup { child })
    }

    /// Kills the whole group (idempotent) and reaps the leader.
    fn kill(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals our own child's process group; it touches
        // no memory.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forwarded_port_gives_a_user_network_and_none_gives_no_network() {
        let forward: TcpForward = "20490:2049".parse().unwrap();
        assert_eq!(
            network_args(Some(forward)),
            ["-nic", "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:20490-:2049"]
        );
        assert!(network_args(None).is_empty());
        assert_eq!(
            "2049".parse::<TcpForward>().unwrap_err().to_string(),
            "\"2049\" is not HOST_PORT:GUEST_PORT (two TCP port numbers)"
        );
    }

    use super::*;

    fn args_text(arch: Arch) -> String {
        args_text_with(arch, Accel::Tcg)
    }

    fn args_text_with(arch: Arch, accel: Accel) -> String {
        let files = MachineFiles {
            kernel: Path::new("/k/kernel"),
            rootfs: Path::new("/r/root,fs.erofs"),
            run_dir: Path::new("/t"),
            disks: &[],
            shares: &[],
        };
        qemu_args(arch, accel, arch.default_kernel_cmdline(), &files)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_arcbox_share_keeps_its_pages_across_opens_and_extra_shares_revalidate() {
        let text = |cache| {
            virtiofsd_args(Path::new("/t/v.sock"), Path::new("/s/share"), cache)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            text(ARCBOX_SHARE_CACHE),
            "--socket-path=/t/v.sock -o source=/s/share -o sandbox=namespace -o cache=always"
        );
        assert!(text(EXTRA_SHARE_CACHE).ends_with("-o cache=auto"));
    }

    #[test]
    fn extra_disks_follow_the_scratch_disk_and_extra_shares_the_arcbox_share() {
        let disks = [
            ExtraDisk {
                path: PathBuf::from("/d/machine.squashfs"),
                read_only: true,
            },
            ExtraDisk {
                path: PathBuf::from("/d/data.img"),
                read_only: false,
            },
        ];
        let shares = [ExtraShare {
            tag: "home".into(),
            dir: PathBuf::from("/h"),
        }];
        let files = MachineFiles {
            kernel: Path::new("/k/kernel"),
            rootfs: Path::new("/r/rootfs.erofs"),
            run_dir: Path::new("/t"),
            disks: &disks,
            shares: &shares,
        };
        let text = qemu_args(Arch::X86_64, Accel::Tcg, "console=ttyS0", &files)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let order = [
            "id=scratch,format=raw,file=/t/scratch.img",
            "-drive if=none,id=disk0,format=raw,readonly=on,file=/d/machine.squashfs -device virtio-blk-pci,drive=disk0",
            "-drive if=none,id=disk1,format=raw,file=/d/data.img -device virtio-blk-pci,drive=disk1",
            "-chardev socket,id=virtiofs,path=/t/virtiofs.sock -device vhost-user-fs-pci,chardev=virtiofs,tag=arcbox",
            "-chardev socket,id=virtiofs0,path=/t/virtiofs-0.sock -device vhost-user-fs-pci,chardev=virtiofs0,tag=home",
        ];
        let mut last = 0;
        for part in order {
            let at = text[last..]
                .find(part)
                .unwrap_or_else(|| panic!("`{part}` missing or out of order in {text}"));
            last += at + part.len();
        }
    }

    #[test]
    fn qmp_shutdown_reason_is_read_from_the_event_only() {
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(shutdown_event_reason(event).as_deref(), Some("guest-shutdown"));
        assert_eq!(shutdown_event_reason(r#"{"return": {}}"#), None);
        assert_eq!(
            shutdown_event_reason(r#"{"event": "RESET", "data": {"reason": "guest-reset"}}"#),
            None
        );
        assert_eq!(shutdown_event_reason("not json"), None);
    }

    #[test]
    fn x86_64_uses_q35_and_the_serial_console() {
        let text = args_text(Arch::X86_64);
        assert!(text.starts_with("-M q35,memory-backend=mem -m 512M"), "{text}");
        assert!(text.contains("-serial chardev:console"), "{text}");
        assert!(
            text.contains("-append console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon panic=-1 no_timer_check "),
            "{text}"
        );
    }

    #[test]
    fn only_x86_64_under_tcg_skips_the_timer_check() {
        assert!(args_text_with(Arch::X86_64, Accel::Tcg).contains(" no_timer_check "));
        assert!(!args_text_with(Arch::X86_64, Accel::Kvm).contains("no_timer_check"));
        assert!(!args_text_with(Arch::Arm64, Accel::Tcg).contains("no_timer_check"));
    }

    #[test]
    fn arm64_uses_virt_cortex_a57_and_a_virtio_console() {
        let text = args_text(Arch::Arm64);
        assert!(text.starts_with("-M virt,memory-backend=mem"), "{text}");
        assert!(text.contains("-cpu cortex-a57"), "{text}");
        assert!(text.contains("-device virtconsole,chardev=console"), "{text}");
        assert!(text.contains("-serial file:/t/early-serial.log"), "{text}");
    }

    #[test]
    fn rootfs_is_the_first_disk_and_read_only_then_scratch_then_share() {
        let text = args_text(Arch::Arm64);
        let rootfs = text
            .find("id=rootfs,format=raw,readonly=on,file=/r/root,,fs.erofs")
            .unwrap();
        let scratch = text.find("id=scratch,format=raw,file=/t/scratch.img").unwrap();
        assert!(rootfs < scratch, "{text}");
        assert!(text.contains("vhost-user-fs-pci,chardev=virtiofs,tag=arcbox"), "{text}");
        assert!(
            text.contains("memory-backend-memfd,id=mem,size=512M,share=on"),
            "{text}"
        );
    }
}

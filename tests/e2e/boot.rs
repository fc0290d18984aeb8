//! Real QEMU boots of both arches: the kernel from `cargo xtask kernel`, the rootfs from
//! `cargo xtask rootfs` (or the seed's BOOT_ASSETS_* artifacts), the VirtioFS share, and
//! checks run inside the guest by a test agent. Also the init trampoline's behaviour (agent
//! restarts, a missing agent, the debug console, the FEX binfmt rule) and the boot command's
//! own failure modes (timeout).
//!
//! Boots run one at a time (see `boot_support::boot_lock`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_assets::Arch;

use crate::boot_support::{self as boot, Assets, InteractiveBoot};
use crate::nginx::Nginx;
use crate::support::{self, project_root, run_ok, xtask};

/// Timeout of a boot that runs the full guest check list (mkfs.btrfs, iptables, socat…).
const CHECK_BOOT_TIMEOUT_SECS: u64 = 180;

/// Timeout of a boot that only exercises the init.
const SHORT_BOOT_TIMEOUT_SECS: u64 = 90;

/// The FEX rule of the contract, exactly as the init must register it.
const FEX_RULE: &str = r":FEX-x86_64:M:0:\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:\xff\xff\xff\xff\xff\xfe\xfe\x00\x00\x00\x00\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/arcbox/runtime/bin/FEX:POCF";

/// The marker the FEX stand-in prints before its argv.
const FEX_STANDIN_MARKER: &str = "FEX-STANDIN-RAN";

/// The asset version of the release that carries the FEX stand-in.
const FEX_CHAIN_VERSION: &str = "0.0.1-fex-chain";

/// A static x86-64 program without libc: writes a line and exits (it never runs natively in
/// the arm64 guest; binfmt_misc must hand it to FEX).
const X86_64_PROGRAM_SOURCE: &str = r#"
void _start(void) {
    static const char message[] = "x86-64 program ran natively\n";
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(1), "D"(1), "S"(message), "d"(sizeof message - 1) : "rcx", "r11", "memory");
    __asm__ volatile ("syscall" : : "a"(60), "D"(0));
    for (;;) {}
}
"#;

/// Builds the FEX stand-in (`tests/fixtures/fex-standin`) with `cargo xtask fex`, releases it
/// with the arm64 kernel and rootfs, serves the CDN tree with nginx and installs the arch's
/// binaries with `cargo xtask fetch`; returns the runtime bin dir that now holds `FEX`.
fn install_fex_through_the_pipeline(assets: &boot::Assets, work: &Path) -> PathBuf {
    let (kernel, rootfs) = boot::kernel_and_rootfs(assets, work);
    let dist = work.join("dist");
    let fragment = dist.join("bin/binaries.json");
    run_ok(
        xtask()
            .arg("fex")
            .arg("--source")
            .arg(project_root().join("tests/fixtures/fex-standin"))
            .arg("--build-dir")
            .arg(work.join("fex-build"))
            .arg("--output")
            .arg(dist.join("bin"))
            .arg("--binaries-json")
            .arg(&fragment),
    );
    run_ok(
        support::release_command(FEX_CHAIN_VERSION, Arch::Arm64, &kernel, &rootfs, &dist)
            .args(["--kernel-version", "6.1.0", "--binaries-json"])
            .arg(&fragment),
    );
    support::merge_manifests(&dist, &[Arch::Arm64]);
    let cdn_root = work.join("cdn");
    support::cdn_tree(&dist, &cdn_root);
    let server = Nginx::start(&cdn_root);
    let runtime_bin = work.join("runtime/bin");
    run_ok(
        xtask()
            .args(["fetch", "--quiet", "--arch", "arm64", "--cdn", &server.url()])
            .arg("--dest")
            .arg(work.join("boot-cache"))
            .arg("--binaries")
            .arg(&runtime_bin),
    );
    let installed = runtime_bin.join("FEX");
    let staged =
        std::fs::read(&installed).unwrap_or_else(|e| panic!("fetch did not install {}: {e}", installed.display()));
    assert!(
        staged.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        installed.display()
    );
    runtime_bin
}

fn full_guest_checks(arch: Arch) {
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("expected-kernel-options");
    std::fs::write(&expected, boot::expected_kernel_options(arch)).unwrap();
    let agent = support::project_root().join(boot::CHECK_AGENT);
    let mut command = boot::boot_command(arch, &assets, Some(&agent), CHECK_BOOT_TIMEOUT_SECS);
    command
        .arg("--share-file")
        .arg(format!("{}={}", boot::EXPECTED_OPTIONS_IN_SHARE, expected.display()));
    let booted = boot::run_boot(&mut command);
    booted.assert_success();
    let console = booted.console();
    let expected = boot::expected_checks(boot::CHECK_AGENT_EXPECTED);
    boot::assert_checks_ok(&format!("{arch} guest"), &console, &expected, 40);
    assert!(console.contains("CHECKS DONE"), "{arch}: the agent did not finish");
    // The two-step protocol: `arcbox-agent init` ran once, to its end, before the agent itself.
    let init_step = console.find("arcbox-init: running /arcbox/bin/arcbox-agent init");
    let init_done = console.find("arcbox-agent: init step (pid ");
    let agent = console.find("arcbox-agent: check agent running");
    assert!(
        init_step < init_done && init_done < agent && init_step.is_some(),
        "{arch}: `arcbox-agent init` did not run before the agent:\n{}",
        boot::tail(&console, 80)
    );
    assert_eq!(
        console.matches("arcbox-agent: init step").count(),
        1,
        "{arch}: init ran more than once"
    );
    assert!(!booted.panicked(), "{arch}: kernel panic");
    let report = booted.report();
    assert!(report.contains("kernel start → /sbin/init: "), "{report}");
    assert!(!report.contains("/sbin/init → agent's first line: never"), "{report}");
    eprintln!("{arch} boot report:\n{report}");
}

support::test_per_case!(full_guest_checks {
    /// The seed's name for the x86_64 boot test: real kernel, real rootfs, every guest check.
    qemu_boots_x86_64_linux: Arch::X86_64,
    qemu_boots_arm64_linux: Arch::Arm64,
});

fn agent_that_exits_is_restarted(arch: Arch) {
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let dir = tempfile::tempdir().unwrap();
    // The share is writable: the count survives the agent's restarts. Runs 1 and 2 exit with
    // an error; run 3 powers the machine off.
    let agent = boot::script_agent(
        dir.path(),
        "exiting-agent.sh",
        r#"count=$(( $(cat /arcbox/agent-runs 2>/dev/null || echo 0) + 1 ))
echo $count > /arcbox/agent-runs
echo "arcbox-agent: run $count"
if [ "$count" -ge 3 ]; then /bin/busybox poweroff -f; sleep 30; fi
exit 1
"#,
    );
    let booted = boot::run_boot(&mut boot::boot_command(
        arch,
        &assets,
        Some(&agent),
        SHORT_BOOT_TIMEOUT_SECS,
    ));
    let console = booted.console();
    assert!(
        !booted.panicked(),
        "{arch}: the kernel panicked when the agent exited:\n{}",
        boot::tail(&console, 30)
    );
    for run in 1..=3 {
        assert!(
            console.contains(&format!("arcbox-agent: run {run}")),
            "{arch}: agent run {run} not seen (restarted fewer than {} times):\n{}",
            run - 1,
            boot::tail(&console, 40)
        );
    }
    booted.assert_success();
}

support::test_per_case!(agent_that_exits_is_restarted {
    init_restarts_an_agent_that_exits_x86_64: Arch::X86_64,
    init_restarts_an_agent_that_exits_arm64: Arch::Arm64,
});

fn missing_agent_powers_off(arch: Arch) {
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let booted = boot::run_boot(&mut boot::boot_command(arch, &assets, None, SHORT_BOOT_TIMEOUT_SECS));
    let console = booted.console();
    booted.assert_success();
    assert!(
        !booted.panicked(),
        "{arch}: kernel panic:\n{}",
        boot::tail(&console, 30)
    );
    assert!(
        console
            .lines()
            .any(|line| line.contains("arcbox-init:") && line.contains("arcbox-agent")),
        "{arch}: no init message about the missing agent:\n{}",
        boot::tail(&console, 30)
    );
    assert!(
        booted.elapsed < Duration::from_secs(SHORT_BOOT_TIMEOUT_SECS / 2),
        "{arch}: powering off took {:?}, not well inside the {SHORT_BOOT_TIMEOUT_SECS} s timeout",
        booted.elapsed
    );
}

support::test_per_case!(missing_agent_powers_off {
    init_powers_off_cleanly_without_an_agent_x86_64: Arch::X86_64,
    init_powers_off_cleanly_without_an_agent_arm64: Arch::Arm64,
});

fn debug_console_gives_a_shell(arch: Arch) {
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let dir = tempfile::tempdir().unwrap();
    // Should the init go on to the agent while the shell runs, this agent keeps the machine up.
    let agent = boot::script_agent(dir.path(), "idle-agent.sh", "echo 'arcbox-agent: idle'\nsleep 600\n");
    let mut command = boot::boot_command(arch, &assets, Some(&agent), SHORT_BOOT_TIMEOUT_SECS);
    command.args(["--append", "arcbox.debug_console"]);
    let mut session = InteractiveBoot::start(command);
    let deadline = Instant::now() + Duration::from_secs(SHORT_BOOT_TIMEOUT_SECS - 10);
    assert!(
        session.wait_for("Run /sbin/init", deadline),
        "{arch}: the kernel never started init:\n{}",
        session.seen.join("\n")
    );
    // The shell's arithmetic proves a shell ran the line: the echoed input shows `$((6*7))`.
    let mut answered = false;
    while !answered && Instant::now() < deadline {
        session.type_text("echo DEBUG-SHELL-$((6*7))\n");
        answered = session.wait_for("DEBUG-SHELL-42", Instant::now() + Duration::from_secs(3));
    }
    session.type_text("/bin/busybox poweroff -f\n");
    let (status, report, seen) = session.finish();
    assert!(
        answered,
        "{arch}: no shell answered on the console with arcbox.debug_console:\n{}\n{report}",
        boot::tail(&seen.join("\n"), 40)
    );
    assert!(
        status.success(),
        "{arch}: the boot did not end with a power-off: {report}"
    );
}

support::test_per_case!(debug_console_gives_a_shell {
    debug_console_gives_a_shell_x86_64: Arch::X86_64,
    debug_console_gives_a_shell_arm64: Arch::Arm64,
});

/// `\x7f…` escapes of the FEX rule's field `index` → lowercase hex, as binfmt_misc prints it.
fn rule_field_hex(index: usize) -> String {
    let field = FEX_RULE.split(':').nth(index).unwrap();
    field
        .split("\\x")
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (hex, literal) = part.split_at(2);
            std::iter::once(hex.to_owned()).chain(literal.bytes().map(|b| format!("{b:02x}")))
        })
        .collect()
}

fn fex_agent(dir: &Path) -> std::path::PathBuf {
    boot::script_agent(
        dir,
        "fex-agent.sh",
        r#"entry=/proc/sys/fs/binfmt_misc/FEX-x86_64
if [ -e $entry ]; then
    while IFS= read -r line; do echo "BINFMT $line"; done < $entry
else
    echo "BINFMT absent"
fi
if [ -e /arcbox/test/hello-x86_64 ]; then
    echo "X86-RUN begin"
    /arcbox/test/hello-x86_64 first-argument 2>&1
    echo "X86-RUN end $?"
fi
/bin/busybox poweroff -f
"#,
    )
}

#[test]
fn arm64_registers_fex_and_runs_x86_64_programs_through_it() {
    let arch = Arch::Arm64;
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    // One chain, as in a release: `fex` builds and stages the interpreter, `release` puts it in
    // the manifest, `cdn-tree` lays the CDN out, nginx serves it, and the AssetManager (`fetch`)
    // installs it into the runtime bin dir that the guest sees as /arcbox/runtime/bin.
    let runtime_bin = install_fex_through_the_pipeline(&assets, dir.path());
    let program = boot::compile_static(
        "gcc",
        X86_64_PROGRAM_SOURCE,
        &["-static", "-nostdlib", "-O2", "-fno-pie", "-no-pie"],
        &dir.path().join("hello-x86_64"),
    );
    let agent = fex_agent(dir.path());
    let _lock = boot::boot_lock();
    let mut command = boot::boot_command(arch, &assets, Some(&agent), SHORT_BOOT_TIMEOUT_SECS);
    command
        .arg("--runtime-bin")
        .arg(&runtime_bin)
        .arg("--share-file")
        .arg(format!("test/hello-x86_64={}", program.display()));
    let booted = boot::run_boot(&mut command);
    booted.assert_success();
    let console = booted.console();
    let binfmt: Vec<&str> = console
        .lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix("BINFMT "))
        .collect();
    let expected = [
        "enabled".to_owned(),
        "interpreter /arcbox/runtime/bin/FEX".to_owned(),
        "flags: POCF".to_owned(),
        "offset 0".to_owned(),
        format!("magic {}", rule_field_hex(4)),
        format!("mask {}", rule_field_hex(5)),
    ];
    assert_eq!(
        binfmt, expected,
        "the FEX-x86_64 entry differs from the contract's rule"
    );
    let ran = console
        .lines()
        .find(|line| line.contains(FEX_STANDIN_MARKER))
        .unwrap_or_else(|| {
            panic!(
                "the x86-64 program did not run through FEX:\n{}",
                boot::tail(&console, 30)
            )
        });
    assert!(
        ran.contains("/arcbox/test/hello-x86_64"),
        "FEX was not given the program: {ran}"
    );
    assert!(
        ran.contains("[first-argument]"),
        "FEX was not given the program's arguments: {ran}"
    );
    assert!(
        !console.contains("x86-64 program ran natively"),
        "an x86-64 program cannot run natively on arm64"
    );
}

#[test]
fn arm64_without_fex_registers_no_x86_64_handler() {
    let arch = Arch::Arm64;
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    let agent = fex_agent(dir.path());
    let _lock = boot::boot_lock();
    let booted = boot::run_boot(&mut boot::boot_command(
        arch,
        &assets,
        Some(&agent),
        SHORT_BOOT_TIMEOUT_SECS,
    ));
    booted.assert_success();
    let console = booted.console();
    assert!(
        console
            .lines()
            .any(|line| line.trim_end_matches('\r') == "BINFMT absent"),
        "an x86-64 handler exists without FEX:\n{}",
        boot::tail(&console, 30)
    );
}

#[test]
fn fex_rule_hex_matches_the_contract_bytes() {
    // The expected magic and mask, spelled out byte by byte from the contract.
    assert_eq!(rule_field_hex(4), "7f454c4602010100000000000000000002003e00");
    assert_eq!(rule_field_hex(5), "fffffffffffefe00000000fffffffffffeffffff");
}

#[test]
fn boot_times_out_kills_qemu_and_shows_the_console() {
    let arch = Arch::Arm64;
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    let agent = boot::script_agent(dir.path(), "hung-agent.sh", "echo 'arcbox-agent: hanging'\nsleep 600\n");
    let _lock = boot::boot_lock();
    let timeout = 25;
    let booted = boot::run_boot(&mut boot::boot_command(arch, &assets, Some(&agent), timeout));
    assert!(!booted.output.status.success(), "a hung guest must fail the boot");
    let report = booted.report();
    assert!(
        report.contains(&format!(
            "the guest was still running after {timeout} s; QEMU and virtiofsd were killed"
        )),
        "{report}"
    );
    assert!(
        report.contains("arcbox-agent: hanging"),
        "the failure shows no console tail: {report}"
    );
    assert!(
        booted.elapsed < Duration::from_secs(timeout + 20),
        "the boot command took {:?} with a {timeout} s timeout",
        booted.elapsed
    );
}

#[test]
fn boot_takes_a_release_tarball() {
    let arch = Arch::X86_64;
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    let tarball = match &assets {
        Assets::Tarball(path) => path.clone(),
        Assets::Files { kernel, rootfs, .. } => {
            support::run_ok(
                support::release_command("0.0.1", arch, kernel, rootfs, dir.path())
                    .env("SOURCE_DATE_EPOCH", "1700000000"),
            );
            dir.path().join("x86_64/boot-assets-x86_64-v0.0.1.tar.gz")
        }
    };
    let agent = support::project_root().join("tests/fixtures/agent/hello-agent.sh");
    let _lock = boot::boot_lock();
    let booted = boot::run_boot(&mut boot::boot_command(
        arch,
        &Assets::Tarball(tarball),
        Some(&agent),
        SHORT_BOOT_TIMEOUT_SECS,
    ));
    booted.assert_success();
    assert!(
        booted.console().contains("arcbox-agent: hello from x86_64"),
        "{}",
        boot::tail(&booted.console(), 20)
    );
    assert!(booted.report().contains("agent's first line: "), "{}", booted.report());
}

#[test]
fn agent_fixtures_are_shellcheck_clean_posix_sh() {
    support::require_tool("shellcheck");
    for agent in [
        boot::CHECK_AGENT,
        "tests/fixtures/agent/hello-agent.sh",
        "tests/fixtures/agent/storage-agent.sh",
        crate::containers_support::CONTAINER_AGENT,
    ] {
        support::run_ok(
            std::process::Command::new("shellcheck")
                .args(["--shell=sh", "--severity=style"])
                .arg(support::project_root().join(agent)),
        );
    }
}

/// The KVM probe that `cargo xtask test` trusts boots real guests: its firmware and the arch's
/// own kernel (no root) run to their markers under TCG, the same guests KVM is asked to run.
#[test]
fn probe_kvm_runs_its_firmware_and_the_kernel_of_each_arch_under_tcg() {
    for arch in Arch::ALL {
        let assets = boot::qemu_and_assets(arch);
        let dir = tempfile::tempdir().unwrap();
        let (kernel, _) = boot::kernel_and_rootfs(&assets, dir.path());
        let _lock = boot::boot_lock();
        let output = run_ok(
            xtask()
                .args(["probe-kvm", "--tcg", "--arch", arch.as_str(), "--kernel"])
                .arg(&kernel),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        for guest in ["probe firmware", "kernel"] {
            assert!(
                stderr.contains(&format!(
                    "probe-kvm: the {arch} {guest} ran to its marker under TCG in "
                )),
                "{stderr}"
            );
        }
    }
}

/// A kernel message inside a program's line (even two, even one the program's line itself
/// contains in brackets) is moved after that line, which reads whole again; a console without one
/// is unchanged.
#[test]
fn kernel_messages_inside_a_line_are_moved_after_it() {
    let split = "[    4.443785] Run /sbin/init\r\n\
                 arcbox-init: FATAL: no agent[    4.506181] tsc: Refined TSC\r\n\
                 [    4.511935] clocksource: Switched to clocksource tsc\r\n; powering off [a.b]\r\n\
                 [    5.730005] reboot: Power down\r\n";
    assert_eq!(
        boot::untangle_kernel_messages(split),
        "[    4.443785] Run /sbin/init\r\n\
         arcbox-init: FATAL: no agent; powering off [a.b]\r\n\
         [    4.506181] tsc: Refined TSC\r\n\
         [    4.511935] clocksource: Switched to clocksource tsc\r\n\
         [    5.730005] reboot: Power down\r\n"
    );
    let whole = "[    0.000000] Linux version\nCHECK a ok [1.5] x\n[   12.000001] y\nlast";
    assert_eq!(boot::untangle_kernel_messages(whole), whole);
}

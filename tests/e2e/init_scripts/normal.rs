//! The normal boot, `/sbin/init`: the two-step agent protocol (`arcbox-agent init` once, then
//! `arcbox-agent` supervised), the loopback link before the agent, the debug console, and PID 1
//! never exiting, even when poweroff fails.

use super::{FakeRoot, Script, KERNEL_FILESYSTEMS, POWER_OFF};

/// The manifest's command line, as the normal boot gets it.
const CMDLINE: &str = "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon";

/// Steps 1 and 2: kernel filesystems, loopback, the share (FEX is absent: no call).
const BEFORE_AGENT: [&str; 5] = [
    KERNEL_FILESYSTEMS[0],
    KERNEL_FILESYSTEMS[1],
    KERNEL_FILESYSTEMS[2],
    "busybox ip link set lo up",
    "busybox mount -t virtiofs arcbox /arcbox",
];

/// `init` succeeds; then the bare agent is started and restarted after every exit. Each exit
/// here comes at once (the uptime stands still), so the fifth in a row powers off.
#[test]
fn init_runs_once_then_the_agent_is_supervised() {
    let root = FakeRoot::new(CMDLINE);
    let run = root.run(Script::Init);
    run.assert_calls(
        &[
            BEFORE_AGENT.as_slice(),
            &["agent init"],
            &[
                "agent",
                "busybox sleep 1",
                "agent",
                "busybox sleep 1",
                "agent",
                "busybox sleep 1",
            ],
            &["agent", "busybox sleep 1", "agent"],
            &POWER_OFF,
        ]
        .concat(),
    );
    run.assert_console_has("arcbox-init: loopback link lo up");
    run.assert_console_has("arcbox-init: running $T/arcbox/bin/arcbox-agent init");
    run.assert_console_has("arcbox-init: $T/arcbox/bin/arcbox-agent init done");
    run.assert_console_has("arcbox-init: agent exited with status 0; restarting in 1s (restart 4)");
    run.assert_refused(
        "agent $T/arcbox/bin/arcbox-agent cannot be started: it exited 5 times in a row right after starting \
         (last status 0)",
    );
}

/// `init` fails: the VM powers off with the reason, and the agent itself never runs.
#[test]
fn a_failing_init_step_powers_off_before_the_agent_runs() {
    let root = FakeRoot::new(CMDLINE);
    root.agent_exits("init", 3);
    let run = root.run(Script::Init);
    run.assert_calls(&[BEFORE_AGENT.as_slice(), &["agent init"], &POWER_OFF].concat());
    run.assert_refused(
        "$T/arcbox/bin/arcbox-agent init failed (exit status 3): the guest is not set up, so the agent is not \
         started",
    );
}

/// `arcbox.debug_console` starts a shell on the console before the share is mounted.
#[test]
fn the_debug_console_starts_before_the_share() {
    let root = FakeRoot::new(&format!("{CMDLINE} arcbox.debug_console"));
    root.agent_exits("init", 1);
    let run = root.run(Script::Init);
    run.assert_calls(
        &[
            &BEFORE_AGENT[..4],
            &["& busybox sh -i"],
            &BEFORE_AGENT[4..],
            &["agent init"],
            &POWER_OFF,
        ]
        .concat(),
    );
    run.assert_console_has("arcbox-init: debug console: starting a shell on the console (boot continues beside it)");
}

/// A loopback link that cannot come up is reported; the boot goes on.
#[test]
fn a_loopback_failure_is_reported_and_the_boot_goes_on() {
    let root = FakeRoot::new(CMDLINE);
    root.fail("ip link set lo up");
    root.agent_exits("init", 1);
    let run = root.run(Script::Init);
    run.assert_calls(&[BEFORE_AGENT.as_slice(), &["agent init"], &POWER_OFF].concat());
    run.assert_console_has("arcbox-init: ERROR: cannot bring the loopback link lo up");
}

/// Without an agent, and with a poweroff that fails: PID 1 says why, then waits forever instead
/// of exiting (the stand-in cuts the wait off at the tenth sleep).
#[test]
fn pid_1_never_exits_even_when_poweroff_fails() {
    let root = FakeRoot::new(CMDLINE);
    std::fs::remove_file(root.path("arcbox/bin/arcbox-agent")).unwrap();
    root.fail("poweroff");
    let run = root.run(Script::Init);
    let waits = ["busybox sleep 60"; 10];
    run.assert_calls(&[BEFORE_AGENT.as_slice(), &POWER_OFF, &waits].concat());
    run.assert_console_has(
        "arcbox-init: FATAL: agent $T/arcbox/bin/arcbox-agent is missing or not executable; powering off",
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&run.status),
        Some(libc::SIGKILL),
        "the script must still be waiting when the stand-in ends it"
    );
}

/// Proc and sysfs already mounted (an initramfs did it) are kept, not mounted again.
#[test]
fn kernel_filesystems_already_mounted_are_kept() {
    let root = FakeRoot::new(CMDLINE);
    root.write("proc/mounts", "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n");
    root.agent_exits("init", 1);
    let run = root.run(Script::Init);
    run.assert_calls(&[&BEFORE_AGENT[2..], &["agent init"], &POWER_OFF].concat());
    run.assert_console_has("arcbox-init: /proc already mounted");
    run.assert_console_has("arcbox-init: /sys already mounted");
}

//! Storage recovery, `/sbin/arcbox-storage-recovery`: with the flag and an agent carrying the
//! marker, PID 1 becomes `arcbox-agent storage-recovery` having mounted nothing but the kernel
//! filesystems and the share; every refusal is one console line and `poweroff -f`.

use super::{FakeRoot, Script, KERNEL_FILESYSTEMS, POWER_OFF, RECOVERY_MARKER};

/// The command line of a recovery boot.
const CMDLINE: &str = "console=hvc0 root=/dev/vda ro init=/sbin/arcbox-storage-recovery arcbox.storage_recovery=1";

const SHARE: &str = "busybox mount -t virtiofs arcbox /arcbox";

fn marker_check() -> String {
    format!("busybox grep -zFq {RECOVERY_MARKER} $T/arcbox/bin/arcbox-agent")
}

#[test]
fn accepted_recovery_execs_only_the_agents_recovery_command() {
    let root = FakeRoot::new(CMDLINE);
    let run = root.run(Script::StorageRecovery);
    let check = marker_check();
    run.assert_calls(
        &[
            KERNEL_FILESYSTEMS.as_slice(),
            &[SHARE, &check, "agent storage-recovery"],
        ]
        .concat(),
    );
    run.assert_handed_over_to("agent", "storage-recovery");
    run.assert_console_has("arcbox-storage-recovery: handing the VM to $T/arcbox/bin/arcbox-agent storage-recovery");
}

/// The key `arcbox.storage_recovery`: missing, or any value but 1, is refused before the share
/// is mounted, and the agent never runs.
#[test]
fn storage_recovery_key_missing_or_not_1_is_refused() {
    let cases = [
        (
            "console=hvc0 init=/sbin/arcbox-storage-recovery",
            "arcbox.storage_recovery=1 is not on the kernel command line: the host did not ask for storage recovery",
        ),
        (
            "console=hvc0 arcbox.storage_recovery",
            "arcbox.storage_recovery=1 is not on the kernel command line: the host did not ask for storage recovery",
        ),
        (
            "console=hvc0 arcbox.storage_recovery=0",
            "arcbox.storage_recovery=0: expected arcbox.storage_recovery=1",
        ),
        (
            "console=hvc0 arcbox.storage_recovery=yes",
            "arcbox.storage_recovery=yes: expected arcbox.storage_recovery=1",
        ),
        (
            "console=hvc0 arcbox.storage_recovery=",
            "arcbox.storage_recovery=: expected arcbox.storage_recovery=1",
        ),
    ];
    for (cmdline, reason) in cases {
        let root = FakeRoot::new(cmdline);
        let run = root.run(Script::StorageRecovery);
        run.assert_calls(&[KERNEL_FILESYSTEMS.as_slice(), &POWER_OFF].concat());
        run.assert_refused(reason);
    }
}

/// An agent without the marker would start its normal services: it is never run.
#[test]
fn an_agent_without_the_marker_is_never_run() {
    let root = FakeRoot::new(CMDLINE);
    root.agent_without_marker();
    let run = root.run(Script::StorageRecovery);
    let check = marker_check();
    run.assert_calls(&[KERNEL_FILESYSTEMS.as_slice(), &[SHARE, &check], &POWER_OFF].concat());
    run.assert_refused(&format!(
        "agent $T/arcbox/bin/arcbox-agent does not carry the marker {RECOVERY_MARKER}: it does not know the \
         storage-recovery command"
    ));
}

#[test]
fn a_missing_share_powers_off_after_five_attempts() {
    let root = FakeRoot::new(CMDLINE);
    root.fail("mount -t virtiofs");
    let run = root.run(Script::StorageRecovery);
    let mut attempts = vec![SHARE];
    for _ in 1..5 {
        attempts.extend(["busybox sleep 1", SHARE]);
    }
    run.assert_calls(&[KERNEL_FILESYSTEMS.as_slice(), &attempts, &POWER_OFF].concat());
    run.assert_refused("the share arcbox cannot be mounted on /arcbox, so there is no agent to recover with");
}

#[test]
fn a_missing_agent_powers_off() {
    let root = FakeRoot::new(CMDLINE);
    std::fs::remove_file(root.path("arcbox/bin/arcbox-agent")).unwrap();
    let run = root.run(Script::StorageRecovery);
    run.assert_calls(&[KERNEL_FILESYSTEMS.as_slice(), &[SHARE], &POWER_OFF].concat());
    run.assert_refused("agent $T/arcbox/bin/arcbox-agent is missing or not executable");
}

/// Each kernel filesystem must really be mounted afterwards.
#[test]
fn a_kernel_filesystem_that_cannot_be_mounted_powers_off() {
    let root = FakeRoot::new(CMDLINE);
    root.fail("mount -t sysfs");
    let run = root.run(Script::StorageRecovery);
    run.assert_calls(&[&KERNEL_FILESYSTEMS[..2], &POWER_OFF].concat());
    run.assert_refused("/sys is not mounted (sysfs)");
}

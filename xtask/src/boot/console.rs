//! Reading a guest console: which lines are the kernel's, the init's and the agent's, and the
//! boot milestones (init started, agent's first line, first container output, power-off, panic)
//! with their times.
//!
//! Pure functions over captured lines; every line carries the host time since QEMU started.

use std::time::Duration;

/// The line the kernel prints just before it executes the init program, in two parts around
/// the program's path: `Run /sbin/init as init process` (or another boot mode's, picked with
/// `init=`, e.g. `/sbin/arcbox-machine-init`).
pub const INIT_HANDOVER_MARKER: (&str, &str) = ("Run /", " as init process");

/// The line the kernel prints when `poweroff -f` powered the machine off.
pub const POWER_OFF_MARKER: &str = "reboot: Power down";

/// The start of the line the kernel prints when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Prefixes of the console lines of the three boot modes' init programs (init/).
pub const INIT_LINE_PREFIXES: [&str; 3] = ["arcbox-init:", "arcbox-machine-init:", "arcbox-storage-recovery:"];

/// The start of the line a container prints first, by convention of the test agents
/// (tests/fixtures/agent/container-agent.sh): the milestone "first container output".
pub const FIRST_CONTAINER_OUTPUT_MARKER: &str = "BOOT-ASSETS-CONTAINER-OUTPUT";

/// One console line and when the host saw it, relative to QEMU's start.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    pub at: Duration,
    pub text: String,
}

/// What a finished boot's console says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootMilestones {
    /// Kernel clock (printk time) when it ran /sbin/init: kernel start → init.
    pub kernel_to_init: Option<Duration>,
    /// Host time when the init hand-over line arrived.
    pub init_seen: Option<Duration>,
    /// Host time when the agent's first line arrived.
    pub agent_first_line: Option<Duration>,
    /// The agent's first line itself.
    pub agent_first_text: Option<String>,
    /// Host time when the first line a container printed arrived (it starts with
    /// [`FIRST_CONTAINER_OUTPUT_MARKER`]).
    pub first_container_output: Option<Duration>,
    /// The guest powered off (kernel's power-down line).
    pub powered_off: bool,
    /// The kernel panicked.
    pub panicked: bool,
}

impl BootMilestones {
    /// Init start → the agent's first line, on the host clock.
    pub fn init_to_agent(&self) -> Option<Duration> {
        Some(self.agent_first_line?.saturating_sub(self.init_seen?))
    }

    /// Kernel start → the first container output: the kernel clock up to init, then the host
    /// clock (the guest's clock and the host's only meet at the init hand-over line).
    pub fn kernel_to_first_container(&self) -> Option<Duration> {
        Some(self.kernel_to_init? + self.first_container_output?.saturating_sub(self.init_seen?))
    }
}

/// Finds the milestones in a console. The agent's first line is the first line after the init
/// hand-over that is neither a kernel message (`[    1.234] …`) nor an init line.
pub fn milestones(lines: &[ConsoleLine]) -> BootMilestones {
    let mut found = BootMilestones::default();
    for line in lines {
        let text = line.text.trim_end_matches('\r');
        if text.contains(PANIC_MARKER) {
            found.panicked = true;
        }
        if text.contains(POWER_OFF_MARKER) {
            found.powered_off = true;
        }
        if found.init_seen.is_none() {
            if is_init_handover(text) {
                found.init_seen = Some(line.at);
                found.kernel_to_init = printk_time(text);
            }
            continue;
        }
        if found.first_container_output.is_none() && text.trim_start().starts_with(FIRST_CONTAINER_OUTPUT_MARKER) {
            found.first_container_output = Some(line.at);
        }
        if found.agent_first_line.is_none()
            && !text.trim().is_empty()
            && printk_time(text).is_none()
            && !INIT_LINE_PREFIXES
                .iter()
                .any(|prefix| text.trim_start().starts_with(prefix))
        {
            found.agent_first_line = Some(line.at);
            found.agent_first_text = Some(text.to_owned());
        }
    }
    found
}

/// Whether a console line is the kernel's init hand-over (see [`INIT_HANDOVER_MARKER`]).
fn is_init_handover(text: &str) -> bool {
    let (before, after) = INIT_HANDOVER_MARKER;
    text.split_once(before).is_some_and(|(_, rest)| rest.contains(after))
}

/// The printk timestamp of a kernel message line: `[    0.523817] Run /sbin/init …` → 0.523817 s.
pub fn printk_time(line: &str) -> Option<Duration> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, _) = rest.split_once(']')?;
    let seconds: f64 = stamp.trim().parse().ok()?;
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The last `count` lines of a console, for failure reports.
pub fn tail(lines: &[ConsoleLine], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| line.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(lines: &[(u64, &str)]) -> Vec<ConsoleLine> {
        lines
            .iter()
            .map(|(ms, text)| ConsoleLine {
                at: Duration::from_millis(*ms),
                text: (*text).to_owned(),
            })
            .collect()
    }

    #[test]
    fn finds_init_agent_and_power_off() {
        let lines = console(&[
            (100, "[    0.000000] Booting Linux on physical CPU 0x0000000000"),
            (900, "[    0.523817] Run /sbin/init as init process"),
            (950, "arcbox-init: mounted /proc /sys /dev"),
            (980, "[    0.601000] virtio_fs: something"),
            (1200, "CHECK proc ok mounted"),
            (1300, "[    0.900000] reboot: Power down"),
        ]);
        let found = milestones(&lines);
        assert_eq!(found.kernel_to_init, Some(Duration::from_micros(523_817)));
        assert_eq!(found.init_seen, Some(Duration::from_millis(900)));
        assert_eq!(found.agent_first_line, Some(Duration::from_millis(1200)));
        assert_eq!(found.agent_first_text.as_deref(), Some("CHECK proc ok mounted"));
        assert_eq!(found.init_to_agent(), Some(Duration::from_millis(300)));
        assert!(found.powered_off);
        assert!(!found.panicked);
    }

    #[test]
    fn first_container_output_is_timed_from_kernel_start() {
        let lines = console(&[
            (900, "[    0.500000] Run /sbin/init as init process"),
            (1000, "arcbox-agent: container agent"),
            (1500, "CHECK runc-run ok BOOT-ASSETS-CONTAINER-OUTPUT runc: hello"),
            (3400, "BOOT-ASSETS-CONTAINER-OUTPUT runc: hello"),
            (5000, "BOOT-ASSETS-CONTAINER-OUTPUT ctr: hello"),
        ]);
        let found = milestones(&lines);
        assert_eq!(found.first_container_output, Some(Duration::from_millis(3400)));
        assert_eq!(found.kernel_to_first_container(), Some(Duration::from_millis(3000)));
        assert_eq!(milestones(&lines[..3]).kernel_to_first_container(), None);
    }

    #[test]
    fn a_panic_is_seen_and_nothing_is_invented() {
        let lines = console(&[
            (
                10,
                "[    0.500000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000",
            ),
            (20, "[    0.500001] ---[ end Kernel panic - not syncing ]---"),
        ]);
        let found = milestones(&lines);
        assert!(found.panicked);
        assert!(!found.powered_off);
        assert_eq!(found.init_seen, None);
        assert_eq!(found.agent_first_line, None);
        assert_eq!(found.init_to_agent(), None);
    }

    #[test]
    fn every_boot_mode_hands_over_and_its_init_lines_are_not_the_agents() {
        let lines = console(&[
            (900, "[    0.700000] Run /sbin/arcbox-machine-init as init process"),
            (950, "arcbox-machine-init: starting (pid 1)"),
            (960, "arcbox-storage-recovery: starting (pid 1)"),
            (1100, "arcbox-agent: machine-init"),
        ]);
        let found = milestones(&lines);
        assert_eq!(found.kernel_to_init, Some(Duration::from_millis(700)));
        assert_eq!(found.agent_first_text.as_deref(), Some("arcbox-agent: machine-init"));
        assert!(!is_init_handover("[    0.7] Run /sbin/init"));
    }

    #[test]
    fn printk_time_only_reads_kernel_lines() {
        assert_eq!(printk_time("[    1.250000] x"), Some(Duration::from_millis(1250)));
        assert_eq!(printk_time("CHECK a ok"), None);
        assert_eq!(printk_time("[not a time] x"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let lines = console(&[(1, "a"), (2, "b"), (3, "c")]);
        assert_eq!(tail(&lines, 2), "b\nc");
    }
}

//! The init files in the image: the FEX rule is the contract's, and the real init (busybox sh
//! from the image) runs as PID 1 in a sandbox. The scripts' own call sequences are checked
//! without an image in `init_scripts`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::{extract, first_builds};
use crate::support::{project_root, require_tool};

/// The contract's FEX rule line, copied verbatim from the contract's "Boot sequence".
const CONTRACT_FEX_RULE: &str = r":FEX-x86_64:M:0:\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:\xff\xff\xff\xff\xff\xfe\xfe\x00\x00\x00\x00\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/arcbox/runtime/bin/FEX:POCF";

#[test]
fn the_fex_rule_is_byte_identical_to_the_contract() {
    let rule = std::fs::read(project_root().join("init/fex-binfmt.rule")).unwrap();
    assert_eq!(rule, format!("{CONTRACT_FEX_RULE}\n").into_bytes());
    // The installed path is the one init reads.
    let init = std::fs::read_to_string(project_root().join("init/init")).unwrap();
    let recipe = std::fs::read_to_string(project_root().join("manifests/rootfs.toml")).unwrap();
    assert!(init.contains("FEX_RULE=/etc/arcbox/fex-binfmt.rule"));
    assert!(recipe.contains("from = \"init/fex-binfmt.rule\"\nto = \"etc/arcbox/fex-binfmt.rule\""));
}

/// How long one sandboxed init run may take before it is killed.
const SANDBOX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the x86_64 image's real `/sbin/init` as PID 1 of fresh PID and mount namespaces,
/// chrooted into the extracted image, with `share` bind-mounted on /arcbox when given and a
/// tmpfs on /dev (so its output stays on our pipe instead of the host's console). `poweroff -f`
/// inside a child PID namespace only ends that namespace. Returns everything init printed.
fn run_init_in_sandbox(root: &Path, share: Option<&Path>, scratch: &Path) -> String {
    require_tool("unshare");
    let euid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&euid.stdout).trim(),
        "0",
        "the init sandbox needs root: run the suite as root"
    );
    let bind_share = match share {
        Some(share) => format!("mount --bind '{}' \"$ROOT/arcbox\" || exit 97\n", share.display()),
        None => String::new(),
    };
    // The guard refuses to go on unless this shell is PID 1 of the new namespace.
    let script = format!(
        "[ \"$$\" -eq 1 ] || {{ echo 'sandbox: not PID 1 of a new namespace' >&2; exit 99; }}\n\
         ROOT='{root}'\n\
         mount --make-rprivate / || exit 96\n\
         mount -t tmpfs tmpfs \"$ROOT/dev\" || exit 98\n\
         {bind_share}\
         exec chroot \"$ROOT\" /sbin/init\n",
        root = root.display()
    );
    let log_path = scratch.join("console.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > SANDBOX_TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "init did not power off within {SANDBOX_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::read_to_string(&log_path).unwrap()
}

/// Asserts that `lines` appear in `output` in this order.
fn assert_in_order(output: &str, lines: &[&str]) {
    let mut rest = output;
    for line in lines {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` missing or out of order in:\n{output}"));
        rest = &rest[at + line.len()..];
    }
}

/// The real init, as PID 1: mounts, share already present, no FEX, the agent restarted after
/// each exit until it powers the (namespaced) machine off itself.
#[test]
fn init_supervises_the_agent_as_pid_1_in_a_sandbox() {
    let extracted = extract(&first_builds()["x86_64"].image);
    let root = extracted.path().join("root");
    let share = extracted.path().join("share");
    std::fs::create_dir_all(share.join("bin")).unwrap();
    let agent = share.join("bin/arcbox-agent");
    std::fs::write(
        &agent,
        "#!/bin/sh\n\
         if [ \"$1\" = init ]; then echo 'fake-agent: init'; exit 0; fi\n\
         runs=$(cat /arcbox/runs 2>/dev/null || echo 0)\n\
         runs=$((runs + 1))\n\
         echo \"$runs\" >/arcbox/runs\n\
         echo \"fake-agent: run $runs as pid $$\"\n\
         if [ \"$runs\" -ge 3 ]; then echo 'fake-agent: powering off'; poweroff -f; sleep 5; fi\n\
         sleep 2\n\
         exit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run_init_in_sandbox(&root, Some(&share), extracted.path());
    assert_in_order(
        &output,
        &[
            "arcbox-init: starting (pid 1)",
            "arcbox-init: mounted proc on /proc",
            "arcbox-init: mounted sysfs on /sys",
            "arcbox-init: /dev already mounted",
            "arcbox-init: loopback link lo up",
            "arcbox-init: /arcbox already mounted",
            "arcbox-init: FEX: /arcbox/runtime/bin/FEX not found or not executable; no x86_64 handler registered",
            "arcbox-init: running /arcbox/bin/arcbox-agent init",
            "fake-agent: init",
            "arcbox-init: /arcbox/bin/arcbox-agent init done",
            "arcbox-init: starting agent /arcbox/bin/arcbox-agent",
            "fake-agent: run 1",
            "arcbox-init: agent exited with status 7; restarting in 1s (restart 1)",
            "arcbox-init: starting agent /arcbox/bin/arcbox-agent",
            "fake-agent: run 2",
            "arcbox-init: agent exited with status 7; restarting in 1s (restart 2)",
            "fake-agent: run 3",
            "fake-agent: powering off",
        ],
    );
    assert!(
        !output.contains("fake-agent: run 1 as pid 1\n"),
        "the agent must not be PID 1"
    );
    assert!(!output.contains("FATAL"), "{output}");
}

/// Without a share and without an agent, init reports both and powers off cleanly.
#[test]
fn init_powers_off_with_a_message_when_the_agent_cannot_start() {
    let extracted = extract(&first_builds()["x86_64"].image);
    let root = extracted.path().join("root");
    let output = run_init_in_sandbox(&root, None, extracted.path());
    assert_in_order(
        &output,
        &[
            "arcbox-init: starting (pid 1)",
            "arcbox-init: mounted proc on /proc",
            "arcbox-init: ERROR: cannot mount virtiofs share arcbox on /arcbox after 5 attempts",
            "arcbox-init: FEX: /arcbox/runtime/bin/FEX not found or not executable",
            "arcbox-init: FATAL: agent /arcbox/bin/arcbox-agent is missing or not executable; powering off",
        ],
    );
    assert!(!output.contains("starting agent"), "{output}");
}

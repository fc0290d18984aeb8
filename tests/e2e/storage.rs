//! The runtime's storage and export tools in a booted guest of each arch (the real kernel and
//! rootfs): the guest agent `tests/fixtures/agent/storage-agent.sh` formats and checks ext4 and
//! btrfs disks the way the runtime does, builds EROFS images from a directory and a tar stream,
//! mounts an overlay with `index=on,nfs_export=on` and exports a directory inside it over NFSv4
//! (rpc.nfsd, rpc.mountd, exportfs). A real NFS client on the host — libnfs's `nfs-cat`, through
//! QEMU's user-mode network and a forwarded port — reads a file from that export.

use std::time::{Duration, Instant};

use boot_assets::Arch;

use crate::boot_support::{self as boot, InteractiveBoot};
use crate::support::{self, require_tool};

/// The guest agent and the checks it must report ok.
const STORAGE_AGENT: &str = "tests/fixtures/agent/storage-agent.sh";
const STORAGE_AGENT_EXPECTED: &str = "tests/fixtures/agent/storage-agent.expected";

/// The whole boot: two mkfs and checks of a 512 MiB disk, EROFS images, the NFS server.
const STORAGE_BOOT_TIMEOUT_SECS: u64 = 600;

/// The NFS server's port in the guest.
const NFS_PORT: u16 = 2049;

/// What the guest serves (the agent's NFS_FILE_TEXT).
const NFS_FILE_TEXT: &str = "served over NFSv4 from an overlay with index=on,nfs_export=on";

/// The line the agent prints once the export is up, followed by the file's path.
const READY_MARKER: &str = "NFS-EXPORT-READY ";

/// A TCP port free on the host's loopback.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Reads `path` from the guest's NFSv4 server with libnfs's client; returns its bytes.
fn nfs_cat(port: u16, path: &str) -> std::process::Output {
    let url = format!("nfs://127.0.0.1{path}?version=4&nfsport={port}");
    std::process::Command::new(require_tool("nfs-cat"))
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("running nfs-cat {url}: {e}"))
}

fn storage_tools_work_in_the_guest(arch: Arch) {
    require_tool("nfs-cat");
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let port = free_port();
    let agent = support::project_root().join(STORAGE_AGENT);
    let mut command = boot::boot_command(arch, &assets, Some(&agent), STORAGE_BOOT_TIMEOUT_SECS);
    command.arg("--forward-tcp").arg(format!("{port}:{NFS_PORT}"));
    let mut session = InteractiveBoot::start(command);
    let deadline = Instant::now() + Duration::from_secs(STORAGE_BOOT_TIMEOUT_SECS - 30);
    let ready = session.wait_for(READY_MARKER, deadline);
    let mut read = None;
    if ready {
        let line = session
            .seen
            .iter()
            .find(|line| line.contains(READY_MARKER))
            .unwrap()
            .clone();
        let path = line[line.find(READY_MARKER).unwrap() + READY_MARKER.len()..]
            .trim()
            .to_owned();
        let output = nfs_cat(port, &path);
        if output.status.success() {
            session.type_text("NFS-READ-DONE\n");
        }
        read = Some(output);
    }
    let (status, report, seen) = session.finish();
    let console = seen.join("\n");
    let read = read.unwrap_or_else(|| {
        panic!(
            "{arch}: the guest never exported over NFS:\n{}\n{report}",
            boot::tail(&console, 60)
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim_end(),
        NFS_FILE_TEXT,
        "{arch}: nfs-cat read the wrong bytes (stderr: {})\n{}",
        String::from_utf8_lossy(&read.stderr),
        boot::tail(&console, 40)
    );
    boot::assert_checks_ok(
        &format!("{arch} storage"),
        &console,
        &boot::expected_checks(STORAGE_AGENT_EXPECTED),
        60,
    );
    assert!(
        status.success(),
        "{arch}: the boot did not end with a power-off: {report}"
    );
}

support::test_per_case!(storage_tools_work_in_the_guest {
    storage_and_nfs_export_work_in_the_x86_64_guest: Arch::X86_64,
    storage_and_nfs_export_work_in_the_arm64_guest: Arch::Arm64,
});

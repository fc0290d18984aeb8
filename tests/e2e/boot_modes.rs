//! The two other boot modes in real guests of both arches (the kernel and rootfs of
//! `boot_support::assets`), picked with `cargo xtask boot --append init=…`:
//!
//! - distro machine (`/sbin/arcbox-machine-init`): a test distribution — a squashfs
//!   (`mksquashfs`) of a busybox-based tree whose busybox comes out of the rootfs the pipeline
//!   built, with its own /sbin/init (`tests/fixtures/machine/distro-init.sh`) that prints what it
//!   sees — on /dev/vdc, a blank data disk on /dev/vdd and two VirtioFS user shares (one
//!   read-only). The first boot formats the data disk (btrfs); the second boot of the same disks
//!   does not, and finds the file the first wrote. A malformed key powers off with one line.
//! - storage recovery (`/sbin/arcbox-storage-recovery`): with the flag and an agent carrying the
//!   marker, the agent runs as `storage-recovery` (PID 1) and finds neither data disk mounted,
//!   and both disks are unchanged; without the flag, or with an agent lacking the marker, the
//!   console says why and the VM powers off.
//!
//! No boot may end in a kernel panic. Boots run one at a time (`boot_support::boot_lock`).

use std::path::{Path, PathBuf};
use std::process::Command;

use boot_assets::Arch;

use crate::boot_support::{self as boot, Assets, Booted};
use crate::support::{self, project_root, require_tool, run_ok};

/// Timeout of one boot; the guests power themselves off in seconds.
const BOOT_TIMEOUT_SECS: u64 = 120;

/// The test distribution's init, its agent, and the storage recovery agent.
const DISTRO_INIT: &str = "tests/fixtures/machine/distro-init.sh";
const MACHINE_AGENT: &str = "tests/fixtures/machine/machine-agent.sh";
const RECOVERY_AGENT: &str = "tests/fixtures/machine/recovery-agent.sh";

/// The marker of an agent that knows `storage-recovery`.
const RECOVERY_MARKER: &str = "arcbox-storage-recovery-v1";

/// The extra disks, in the order `--disk` attaches them after /dev/vda (rootfs) and /dev/vdb
/// (scratch).
const FIRST_DISK: &str = "/dev/vdc";
const SECOND_DISK: &str = "/dev/vdd";

/// Size of a data disk (sparse); mkfs.btrfs wants well over 100 MiB.
const DATA_DISK_BYTES: u64 = 512 * 1024 * 1024;

/// The name in the test distribution's /etc/os-release.
const DISTRO_NAME: &str = "boot-assets test distribution";

/// A sparse, blank disk image.
fn blank_disk(path: &Path) -> PathBuf {
    std::fs::File::create(path)
        .and_then(|file| file.set_len(DATA_DISK_BYTES))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    path.to_path_buf()
}

/// Builds the test distribution of `arch` in `work`: /usr/bin/busybox (taken out of the rootfs
/// being tested, so it is the arch's), /sbin/init, /etc/os-release and the usual directories,
/// as a zstd squashfs. It has no /bin/busybox: the machine init must copy one in.
fn distro_image(assets: &Assets, work: &Path) -> PathBuf {
    let mksquashfs = require_tool("mksquashfs");
    let fsck_erofs = require_tool("fsck.erofs");
    let (_, rootfs) = boot::kernel_and_rootfs(assets, work);
    let extracted = work.join("rootfs");
    run_ok(
        Command::new(fsck_erofs)
            .arg(format!("--extract={}", extracted.display()))
            .arg(&rootfs),
    );
    let tree = work.join("distro");
    for dir in [
        "usr/bin", "sbin", "etc", "proc", "sys", "dev", "mnt", "tmp", "var", "home", "srv",
    ] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    std::fs::copy(extracted.join("bin/busybox"), tree.join("usr/bin/busybox")).unwrap();
    std::fs::copy(project_root().join(DISTRO_INIT), tree.join("sbin/init")).unwrap();
    std::fs::write(tree.join("etc/os-release"), format!("NAME=\"{DISTRO_NAME}\"\n")).unwrap();
    let image = work.join("distro.squashfs");
    run_ok(
        Command::new(mksquashfs)
            .arg(&tree)
            .arg(&image)
            .args(["-noappend", "-all-root", "-comp", "zstd", "-quiet"]),
    );
    image
}

/// `cargo xtask boot` of `arch` with `agent`, `append` added to the command line, and each of
/// `extra` (`--disk …`, `--virtiofs …`) passed on.
fn boot_mode(arch: Arch, assets: &Assets, agent: &Path, append: &str, extra: &[String]) -> Booted {
    let mut command = boot::boot_command(arch, assets, Some(agent), BOOT_TIMEOUT_SECS);
    command.arg("--append").arg(append).args(extra);
    let booted = boot::run_boot(&mut command);
    assert!(
        !booted.panicked(),
        "{arch}: kernel panic:\n{}",
        boot::tail(&booted.console(), 40)
    );
    booted.assert_success();
    booted
}

/// The `DISTRO key=value` lines of a console as (key, value), and the `DISTRO mount …` lines.
fn distro_report(console: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut values = Vec::new();
    let mut mounts = Vec::new();
    for line in console.lines().map(|line| line.trim_end_matches('\r')) {
        let Some(rest) = line.strip_prefix("DISTRO ") else {
            continue;
        };
        if let Some(mount) = rest.strip_prefix("mount ") {
            mounts.push(mount.to_owned());
        } else if let Some((key, value)) = rest.split_once('=') {
            values.push((key.to_owned(), value.to_owned()));
        }
    }
    (values, mounts)
}

/// The value of `key` in a distro report, or a panic with the console tail.
fn distro_value<'a>(values: &'a [(String, String)], key: &str, console: &str) -> &'a str {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "the distribution's init printed no {key}=:\n{}",
                boot::tail(console, 60)
            )
        })
}

/// `lines` appear in `console` in this order.
fn assert_in_order(console: &str, lines: &[&str]) {
    let mut rest = console;
    for line in lines {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` missing or out of order:\n{}", boot::tail(console, 60)));
        rest = &rest[at + line.len()..];
    }
}

/// One machine boot's checks that hold on every boot: the machine init's steps in order, the
/// agent before and beside, the distribution's init as PID 1 on the overlay root with the user
/// shares at their paths and modes, and the old root gone.
fn check_machine_boot(console: &str, home: &Path) -> Vec<(String, String)> {
    assert_in_order(
        console,
        &[
            "Run /sbin/arcbox-machine-init as init process",
            "arcbox-machine-init: mounted virtiofs share arcbox on /arcbox",
            &format!("arcbox-machine-init: mounted the image {FIRST_DISK} (squashfs) read-only"),
            "arcbox-machine-init: the overlay of the image and the data disk is the new root",
            "arcbox-machine-init: mounted user share home on /home/user (rw)",
            "arcbox-machine-init: mounted user share shared on /srv/shared (ro)",
            "MACHINE-AGENT machine-init pid=",
            "arcbox-machine-init: handing the machine to /sbin/init",
            "DISTRO pid=1",
        ],
    );
    assert!(console.contains("MACHINE-AGENT machine-init pid=") && console.contains(" root=overlay"));
    assert!(
        console.contains("MACHINE-AGENT serve started"),
        "{}",
        boot::tail(console, 40)
    );
    let (values, mounts) = distro_report(console);
    let value = |key: &str| distro_value(&values, key, console).to_owned();
    assert_eq!(value("os"), DISTRO_NAME);
    assert!(value("serve").starts_with("running pid "), "serve: {}", value("serve"));
    assert_eq!(value("busybox-copy"), "present");
    let mount = |target: &str| {
        mounts
            .iter()
            .find(|m| m.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("nothing mounted on {target}: {mounts:#?}"))
            .clone()
    };
    assert!(mount("/").starts_with("overlay / overlay "), "{}", mount("/"));
    for (target, mode) in [("/home/user", "rw"), ("/srv/shared", "ro"), ("/arcbox", "rw")] {
        let line = mount(target);
        assert!(
            line.contains(" virtiofs ") && line.contains(&format!(" {mode},")),
            "{line}"
        );
    }
    for gone in ["erofs", FIRST_DISK, SECOND_DISK, "tmpfs /mnt"] {
        assert!(
            !mounts.iter().any(|m| m.contains(gone)),
            "{gone} still mounted: {mounts:#?}"
        );
    }
    assert_eq!(value("home-read"), "from the host");
    assert_eq!(value("home-write"), "ok");
    assert_eq!(
        std::fs::read_to_string(home.join("from-guest")).unwrap(),
        "from-guest\n"
    );
    assert_eq!(value("shared-read"), "read-only from the host");
    assert_eq!(value("shared-write"), "refused");
    values
}

fn distro_machine_boots_twice_on_its_data_disk(arch: Arch) {
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    let image = distro_image(&assets, dir.path());
    let data = blank_disk(&dir.path().join("data.img"));
    let home = dir.path().join("home");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(home.join("from-host"), "from the host").unwrap();
    std::fs::write(shared.join("from-host"), "read-only from the host").unwrap();
    let append = format!(
        "init=/sbin/arcbox-machine-init arcbox.machine_rootfs={FIRST_DISK} arcbox.machine_data={SECOND_DISK} \
         arcbox.machine_mounts=home=/home/user,shared=/srv/shared:ro"
    );
    let extra = [
        format!("--disk={}:ro", image.display()),
        format!("--disk={}", data.display()),
        format!("--virtiofs=home={}", home.display()),
        format!("--virtiofs=shared={}", shared.display()),
    ];
    let agent = project_root().join(MACHINE_AGENT);
    let _lock = boot::boot_lock();

    let first = boot_mode(arch, &assets, &agent, &append, &extra).console();
    let formatting = format!("the data disk {SECOND_DISK} has no btrfs filesystem: formatting it (first boot)");
    assert!(first.contains(&formatting), "{arch}: {}", boot::tail(&first, 60));
    assert!(first.contains("copied busybox into the new root (the distribution has none)"));
    let values = check_machine_boot(&first, &home);
    assert_eq!(distro_value(&values, "boot-count", &first), "1");
    assert_eq!(distro_value(&values, "on-data-disk", &first), "1");
    let magic = std::fs::read(&data).unwrap()[65_600..65_608].to_vec();
    assert_eq!(
        magic, b"_BHRfS_M",
        "{arch}: the data disk holds no btrfs after the first boot"
    );

    std::fs::remove_file(home.join("from-guest")).unwrap();
    let second = boot_mode(arch, &assets, &agent, &append, &extra).console();
    assert!(
        !second.contains("has no btrfs filesystem") && !second.contains("mkfs.btrfs"),
        "{arch}: the second boot formatted the data disk"
    );
    assert!(second.contains(&format!(
        "the data disk {SECOND_DISK} has a btrfs filesystem: not formatting it"
    )));
    assert!(
        !second.contains("copied busybox"),
        "{arch}: the first boot's copy is on the data disk"
    );
    let values = check_machine_boot(&second, &home);
    assert_eq!(
        distro_value(&values, "boot-count", &second),
        "2",
        "the first boot's file is gone"
    );
    assert_eq!(distro_value(&values, "on-data-disk", &second), "2");
}

support::test_per_case!(distro_machine_boots_twice_on_its_data_disk {
    distro_machine_formats_once_and_keeps_its_data_x86_64: Arch::X86_64,
    distro_machine_formats_once_and_keeps_its_data_arm64: Arch::Arm64,
});

/// A missing key: one console line and a clean power-off before the share is even mounted (the
/// image key names the scratch disk, which exists).
fn a_missing_machine_key_powers_off(arch: Arch) {
    let (assets, _lock) = boot::qemu_assets_and_lock(arch);
    let dir = tempfile::tempdir().unwrap();
    let agent = boot::script_agent(dir.path(), "never-runs.sh", "echo 'MACHINE-AGENT ran'\n");
    let append = "init=/sbin/arcbox-machine-init arcbox.machine_rootfs=/dev/vdb arcbox.machine_mounts=home=/home";
    let console = boot_mode(arch, &assets, &agent, append, &[]).console();
    assert_refused_before_the_agent(
        arch,
        &console,
        "arcbox-machine-init: FATAL: arcbox.machine_data is missing from the kernel command line (step 2); \
         powering off",
    );
    assert!(
        !console.contains("mounted virtiofs share"),
        "{arch}: the share was mounted"
    );
}

support::test_per_case!(a_missing_machine_key_powers_off {
    distro_machine_refuses_a_missing_key_x86_64: Arch::X86_64,
    distro_machine_refuses_a_missing_key_arm64: Arch::Arm64,
});

/// Two data disks with real filesystems (btrfs and ext4, as the runtime's data and metadata
/// disks), made on the host.
fn data_disks(work: &Path) -> [PathBuf; 2] {
    let btrfs = blank_disk(&work.join("data-btrfs.img"));
    run_ok(Command::new(require_tool("mkfs.btrfs")).arg("-q").arg("-f").arg(&btrfs));
    let ext4 = blank_disk(&work.join("meta-ext4.img"));
    run_ok(
        Command::new(require_tool("mkfs.ext4"))
            .args(["-q", "-F", "-L", "arcbox-meta"])
            .arg(&ext4),
    );
    [btrfs, ext4]
}

/// The recovery agent, with or without its marker, in `work`.
fn recovery_agent(work: &Path, with_marker: bool) -> PathBuf {
    let text = std::fs::read_to_string(project_root().join(RECOVERY_AGENT)).unwrap();
    let path = work.join("recovery-agent.sh");
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| with_marker || !line.contains(RECOVERY_MARKER))
        .collect();
    // `boot --agent` serves it with mode 0755.
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    path
}

/// Three boots: accepted (the agent is PID 1 as `storage-recovery`, no data disk mounted, both
/// disks unchanged), no flag, and an agent without the marker (each: one line, power-off).
fn storage_recovery_touches_no_disk(arch: Arch) {
    let assets = boot::qemu_and_assets(arch);
    let dir = tempfile::tempdir().unwrap();
    let disks = data_disks(dir.path());
    let digests: Vec<String> = disks.iter().map(|disk| support::sha256_file(disk)).collect();
    let extra: Vec<String> = disks.iter().map(|disk| format!("--disk={}", disk.display())).collect();
    let init = "init=/sbin/arcbox-storage-recovery";
    let _lock = boot::boot_lock();

    let agent = recovery_agent(dir.path(), true);
    let accepted = boot_mode(
        arch,
        &assets,
        &agent,
        &format!("{init} arcbox.storage_recovery=1"),
        &extra,
    )
    .console();
    assert!(
        accepted.contains("RECOVERY-AGENT argv=storage-recovery pid=1"),
        "{arch}: the agent did not become PID 1 as storage-recovery:\n{}",
        boot::tail(&accepted, 40)
    );
    let mounts: Vec<&str> = accepted
        .lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix("RECOVERY-AGENT mount "))
        .collect();
    assert!(
        mounts.iter().any(|m| m.starts_with("arcbox /arcbox virtiofs")),
        "{mounts:#?}"
    );
    for disk in ["/dev/vdb", FIRST_DISK, SECOND_DISK] {
        assert!(
            !mounts.iter().any(|m| m.starts_with(disk)),
            "{arch}: {disk} is mounted: {mounts:#?}"
        );
    }
    assert!(
        !mounts.iter().any(|m| m.contains(" btrfs") || m.contains(" ext4")),
        "{mounts:#?}"
    );
    let after: Vec<String> = disks.iter().map(|disk| support::sha256_file(disk)).collect();
    assert_eq!(after, digests, "{arch}: storage recovery changed a data disk");

    let no_flag = boot_mode(arch, &assets, &agent, init, &extra).console();
    assert_refused_before_the_agent(
        arch,
        &no_flag,
        "arcbox-storage-recovery: FATAL: arcbox.storage_recovery=1 is not on the kernel command line: the host did \
         not ask for storage recovery; powering off",
    );

    let old_agent = recovery_agent(dir.path(), false);
    let no_marker = boot_mode(
        arch,
        &assets,
        &old_agent,
        &format!("{init} arcbox.storage_recovery=1"),
        &extra,
    )
    .console();
    assert_refused_before_the_agent(
        arch,
        &no_marker,
        &format!(
            "arcbox-storage-recovery: FATAL: agent /arcbox/bin/arcbox-agent does not carry the marker \
             {RECOVERY_MARKER}: it does not know the storage-recovery command; powering off"
        ),
    );
}

/// The console has exactly one FATAL line, `fatal_line`, and no test agent (`…-AGENT` lines) ran.
fn assert_refused_before_the_agent(arch: Arch, console: &str, fatal_line: &str) {
    let fatal: Vec<&str> = console
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.contains("FATAL"))
        .collect();
    assert_eq!(fatal, [fatal_line], "{arch}: {}", boot::tail(console, 30));
    assert!(!console.contains("-AGENT "), "{arch}: the agent ran");
}

support::test_per_case!(storage_recovery_touches_no_disk {
    storage_recovery_hands_over_to_the_agent_and_refuses_x86_64: Arch::X86_64,
    storage_recovery_hands_over_to_the_agent_and_refuses_arm64: Arch::Arm64,
});

#[test]
fn boot_mode_fixtures_are_shellcheck_clean_posix_sh() {
    let shellcheck = require_tool("shellcheck");
    for fixture in [DISTRO_INIT, MACHINE_AGENT, RECOVERY_AGENT] {
        run_ok(
            Command::new(&shellcheck)
                .args(["--shell=sh", "--severity=style"])
                .arg(project_root().join(fixture)),
        );
    }
}

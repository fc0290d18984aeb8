//! Distro machines, `/sbin/arcbox-machine-init`: the first boot formats a blank data disk, a
//! second boot never does; the overlay root, the user shares (read-write and read-only), the
//! agent's `machine-init` before and `serve` beside, pivot_root and the distribution's init as
//! PID 1; every malformed key refused before anything is mounted or formatted.

use super::{FakeRoot, Script, KERNEL_FILESYSTEMS, POWER_OFF};

/// The devices of the fake root: the distribution's image and the data disk.
const IMAGE: &str = "dev/vdc";
const DATA: &str = "dev/vdd";

/// A command line with the image, the data disk and `mounts` (none when empty).
fn cmdline(mounts: &str) -> String {
    let mut line = format!(
        "console=ttyS0 root=/dev/vda ro init=/sbin/arcbox-machine-init arcbox.machine_rootfs=$T/{IMAGE} \
         arcbox.machine_data=$T/{DATA}"
    );
    if !mounts.is_empty() {
        line.push_str(&format!(" arcbox.machine_mounts={mounts}"));
    }
    line
}

/// A fake root with the image and a data disk, blank or already formatted.
fn machine_root(cmdline: &str, formatted: bool) -> FakeRoot {
    let root = FakeRoot::new(cmdline);
    root.disk(IMAGE, true);
    root.disk(DATA, formatted);
    root
}

/// Steps 2 and 3: the share, the scratch tmpfs, the image.
const SHARE_AND_IMAGE: [&str; 4] = [
    "busybox mount -t virtiofs arcbox /arcbox",
    "busybox mount -t tmpfs -o mode=0755 tmpfs $T/mnt",
    "busybox mkdir -p $T/mnt/image $T/mnt/data $T/mnt/root",
    "busybox mount -t squashfs -o ro $T/dev/vdc $T/mnt/image",
];

const MAGIC_CHECK: &str = "busybox dd if=$T/dev/vdd bs=1 skip=65600 count=8";

/// Steps 4 (after formatting) and 5: the data disk, the overlay root, the share moved into it.
const OVERLAY_ROOT: [&str; 5] = [
    "busybox mount -t btrfs $T/dev/vdd $T/mnt/data",
    "busybox mkdir -p $T/mnt/data/upper $T/mnt/data/work",
    "busybox mount -t overlay -o lowerdir=$T/mnt/image,upperdir=$T/mnt/data/upper,workdir=$T/mnt/data/work \
     overlay $T/mnt/root",
    "busybox mkdir -p $T/mnt/root/arcbox",
    "busybox mount --move /arcbox $T/mnt/root/arcbox",
];

/// Steps 7 and 8: the kernel filesystems move in, the agent, pivot_root, the distribution's init.
const HAND_OVER: [&str; 15] = [
    "busybox mkdir -p $T/mnt/root/proc",
    "busybox mount --move /proc $T/mnt/root/proc",
    "busybox mkdir -p $T/mnt/root/sys",
    "busybox mount --move /sys $T/mnt/root/sys",
    "busybox mkdir -p $T/mnt/root/dev",
    "busybox mount --move /dev $T/mnt/root/dev",
    "busybox chroot $T/mnt/root $T/arcbox/bin/arcbox-agent machine-init",
    "agent machine-init",
    "busybox chroot $T/mnt/root $T/bin/busybox sh -c \"$0\" serve & $T/arcbox/bin/arcbox-agent",
    "busybox sh -c \"$0\" serve & $T/arcbox/bin/arcbox-agent",
    "& agent serve",
    "busybox mkdir -p $T/mnt/root/mnt",
    "busybox pivot_root $T/mnt/root $T/mnt/root/mnt",
    "busybox umount -l /mnt",
    "init",
];

const COPY_BUSYBOX: [&str; 2] = [
    "busybox mkdir -p $T/mnt/root/bin",
    "busybox cp $T/bin/busybox $T/mnt/root/bin/busybox",
];

const USER_SHARES: [&str; 4] = [
    "busybox mkdir -p $T/mnt/root/home/user",
    "busybox mount -t virtiofs -o rw home $T/mnt/root/home/user",
    "busybox mkdir -p $T/mnt/root/srv/shared",
    "busybox mount -t virtiofs -o ro shared $T/mnt/root/srv/shared",
];

/// The calls of a machine boot that hands over: formatting the data disk or not, copying busybox
/// or not (the distribution has one), the two user shares or none.
fn handing_over(format: bool, copy_busybox: bool, user_shares: bool) -> Vec<&'static str> {
    let format: &[&str] = if format { &["mkfs.btrfs -f $T/dev/vdd"] } else { &[] };
    let copy: &[&str] = if copy_busybox { &COPY_BUSYBOX } else { &[] };
    let shares: &[&str] = if user_shares { &USER_SHARES } else { &[] };
    [
        KERNEL_FILESYSTEMS.as_slice(),
        &SHARE_AND_IMAGE,
        &[MAGIC_CHECK],
        format,
        &OVERLAY_ROOT,
        copy,
        shares,
        &HAND_OVER,
    ]
    .concat()
}

/// First boot: the blank data disk is formatted; busybox is copied (the distribution has none);
/// a read-write and a read-only share; the distribution's init is exec'd as PID 1.
#[test]
fn first_boot_formats_the_blank_data_disk_and_hands_over() {
    let root = machine_root(&cmdline("home=/home/user,shared=/srv/shared:ro"), false);
    let run = root.run(Script::MachineInit);
    run.assert_calls(&handing_over(true, true, true));
    run.assert_handed_over_to("init", "");
    for line in [
        "arcbox-machine-init: mounted the image $T/dev/vdc (squashfs) read-only",
        "arcbox-machine-init: the data disk $T/dev/vdd has no btrfs filesystem: formatting it (first boot)",
        "arcbox-machine-init: the overlay of the image and the data disk is the new root",
        "arcbox-machine-init: copied busybox into the new root (the distribution has none)",
        "arcbox-machine-init: mounted user share home on /home/user (rw)",
        "arcbox-machine-init: mounted user share shared on /srv/shared (ro)",
        "arcbox-machine-init: handing the machine to $T/sbin/init",
    ] {
        run.assert_console_has(line);
    }
    assert!(!run.console().contains("FATAL"), "{}", run.console());
}

/// Second boot: the data disk has the btrfs magic, so it is not formatted; the distribution
/// has busybox now (the first boot's copy, on the data disk), so nothing is copied.
#[test]
fn second_boot_never_formats_the_data_disk() {
    let root = machine_root(&cmdline(""), true);
    root.write("mnt/root/bin/busybox", "");
    let run = root.run(Script::MachineInit);
    run.assert_calls(&handing_over(false, false, false));
    run.assert_handed_over_to("init", "");
    run.assert_console_has("arcbox-machine-init: the data disk $T/dev/vdd has a btrfs filesystem: not formatting it");
}

/// A user share that cannot be mounted is reported and skipped; so is a failing `machine-init`
/// of the agent: the machine still boots.
#[test]
fn a_failing_user_share_and_agent_machine_init_do_not_stop_the_boot() {
    let root = machine_root(&cmdline("home=/home/user,shared=/srv/shared:ro"), true);
    root.fail("mount -t virtiofs -o rw home");
    root.agent_exits("machine-init", 4);
    let run = root.run(Script::MachineInit);
    run.assert_calls(&handing_over(false, true, true));
    run.assert_handed_over_to("init", "");
    run.assert_console_has("arcbox-machine-init: ERROR: cannot mount user share home on /home/user (rw); skipped");
    run.assert_console_has(
        "arcbox-machine-init: ERROR: $T/arcbox/bin/arcbox-agent machine-init failed (exit status 4); booting the \
         machine anyway",
    );
}

/// Runs the machine init with `cmdline` and asserts it refused with `reason` right after the
/// kernel filesystems, before anything else was mounted or formatted.
fn assert_refused_at_once(cmdline: &str, reason: &str) {
    let root = machine_root(cmdline, false);
    let run = root.run(Script::MachineInit);
    run.assert_calls(&[KERNEL_FILESYSTEMS.as_slice(), &POWER_OFF].concat());
    run.assert_refused(reason);
}

#[test]
fn machine_rootfs_key_missing_relative_or_absent_is_refused() {
    let base = "console=ttyS0 arcbox.machine_data=$T/dev/vdd";
    assert_refused_at_once(
        base,
        "arcbox.machine_rootfs is missing from the kernel command line (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_rootfs=vdc"),
        "arcbox.machine_rootfs=vdc: expected the absolute path of a device (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_rootfs="),
        "arcbox.machine_rootfs=: expected the absolute path of a device (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_rootfs=$T/dev/vdz"),
        "arcbox.machine_rootfs=$T/dev/vdz: no such device (step 2)",
    );
}

#[test]
fn machine_data_key_missing_absent_or_the_image_is_refused() {
    let base = "console=ttyS0 arcbox.machine_rootfs=$T/dev/vdc";
    assert_refused_at_once(
        base,
        "arcbox.machine_data is missing from the kernel command line (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_data=dev/vdd"),
        "arcbox.machine_data=dev/vdd: expected the absolute path of a device (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_data=$T/dev/vdz"),
        "arcbox.machine_data=$T/dev/vdz: no such device (step 2)",
    );
    assert_refused_at_once(
        &format!("{base} arcbox.machine_data=$T/dev/vdc"),
        "arcbox.machine_rootfs and arcbox.machine_data are the same device $T/dev/vdc (step 2)",
    );
}

/// A malformed type is refused at once; a well-formed one the kernel does not know fails the
/// image mount (step 3), before the data disk is looked at.
#[test]
fn machine_rootfs_type_key_malformed_or_unknown_is_refused() {
    for bad in ["", "Squashfs", "squash-fs", "../ext4"] {
        assert_refused_at_once(
            &format!("{} arcbox.machine_rootfs_type={bad}", cmdline("")),
            &format!("arcbox.machine_rootfs_type={bad}: expected a filesystem type such as squashfs or erofs (step 2)"),
        );
    }
    let root = machine_root(&format!("{} arcbox.machine_rootfs_type=nosuchfs", cmdline("")), false);
    root.fail("mount -t nosuchfs");
    let run = root.run(Script::MachineInit);
    let mount_image = "busybox mount -t nosuchfs -o ro $T/dev/vdc $T/mnt/image";
    run.assert_calls(
        &[
            KERNEL_FILESYSTEMS.as_slice(),
            &SHARE_AND_IMAGE[..3],
            &[mount_image],
            &POWER_OFF,
        ]
        .concat(),
    );
    run.assert_refused("cannot mount the image $T/dev/vdc (nosuchfs) read-only (step 3)");
}

#[test]
fn machine_mounts_key_malformed_is_refused() {
    let cases = [
        ("home", "entry 'home': expected TAG=/path"),
        ("home=home/user", "entry 'home=home/user': the path must be absolute"),
        (
            "home=/home/user:rw",
            "entry 'home=/home/user:rw': the only option is :ro",
        ),
        (
            "=/home/user",
            "entry '=/home/user': the tag must be letters, digits, '.', '_' or '-'",
        ),
        (
            "ho%me=/home/user",
            "entry 'ho%me=/home/user': the tag must be letters, digits, '.', '_' or '-'",
        ),
        ("home=/", "entry 'home=/': the path cannot be the machine's root"),
        (
            "home=//:ro",
            "entry 'home=//:ro': the path cannot be the machine's root",
        ),
        (
            "home=/home/../etc",
            "entry 'home=/home/../etc': the path cannot have . or .. components",
        ),
        ("a=/a,home", "entry 'home': expected TAG=/path"),
    ];
    for (mounts, problem) in cases {
        assert_refused_at_once(
            &cmdline(mounts),
            &format!("arcbox.machine_mounts={mounts}: {problem}; expected TAG=/path[:ro],... (step 2)"),
        );
    }
    for empty_entry in ["a=/a,,b=/b", "a=/a,", ",a=/a"] {
        assert_refused_at_once(
            &cmdline(empty_entry),
            &format!("arcbox.machine_mounts={empty_entry}: an empty entry; expected TAG=/path[:ro],... (step 2)"),
        );
    }
}

/// Formatting that fails and a distribution without an init both power off naming the step.
#[test]
fn a_failing_format_or_a_missing_distribution_init_powers_off() {
    let root = machine_root(&cmdline(""), false);
    root.fail("mkfs.btrfs");
    let run = root.run(Script::MachineInit);
    run.assert_refused("mkfs.btrfs cannot format the data disk $T/dev/vdd (step 4)");

    let root = machine_root(&cmdline(""), true);
    std::fs::remove_file(root.path("sbin/init")).unwrap();
    let run = root.run(Script::MachineInit);
    run.assert_refused("the machine image has no executable $T/sbin/init (step 8)");
}

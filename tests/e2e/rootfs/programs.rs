//! The image's programs run: natively in a chroot on x86_64, under user-mode QEMU on arm64, and
//! iptables loads every extension Docker's rules use.

use std::process::Command;

use super::{extract, first_builds, DOCKER_EXTENSIONS, IPTABLES_NAMES};
use crate::support::{require_tool, run_ok};

/// The storage and export tools, each with a harmless argument and what its answer must hold
/// (the version its recipe pins, or its own name).
const STORAGE_TOOLS: [(&str, &[&str], &str); 7] = [
    ("sbin/btrfs", &["--version"], "btrfs-progs"),
    ("sbin/mkfs.ext4", &["-V"], "mke2fs 1.47.2"),
    ("sbin/e2fsck", &["-V"], "e2fsck 1.47.2"),
    ("sbin/mkfs.erofs", &["--version"], "mkfs.erofs (erofs-utils) 1.8.6"),
    ("sbin/exportfs", &["-h"], "exportfs"),
    ("sbin/rpc.nfsd", &["--help"], "rpc.nfsd"),
    ("sbin/rpc.mountd", &["--help"], "rpc.mountd"),
];

/// On this x86_64 machine the x86_64 image's programs run for real (chroot into the extracted
/// tree: the loader's own default paths, no host libraries), and iptables loads the extensions
/// Docker uses.
#[test]
fn x86_64_programs_and_iptables_extensions_run_in_a_chroot() {
    if !cfg!(target_arch = "x86_64") {
        panic!("this test runs the x86_64 image's programs and needs an x86_64 host");
    }
    let euid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&euid.stdout).trim(),
        "0",
        "this test needs root for chroot: run the suite as root (CI does)"
    );
    let extracted = extract(&first_builds()["x86_64"].image);
    let root = extracted.path().join("root");
    let chroot_any = |args: &[&str]| {
        let output = Command::new("chroot").arg(&root).args(args).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let chroot = |args: &[&str]| {
        let output = run_ok(Command::new("chroot").arg(&root).args(args));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    for (program, args, answer) in STORAGE_TOOLS {
        let mut argv = vec![format!("/{program}")];
        argv.extend(args.iter().map(|arg| (*arg).to_owned()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let text = chroot_any(&argv);
        assert!(
            text.contains(answer),
            "/{program} {args:?} did not say {answer:?}:\n{text}"
        );
    }
    assert!(chroot(&["/sbin/ethtool", "--version"]).contains("ethtool version"));
    assert!(chroot(&["/sbin/socat", "-V"]).contains("socat version"));
    assert!(chroot(&["/sbin/mkfs.btrfs", "--version"]).contains("btrfs-progs"));
    assert!(chroot(&["/sbin/ebtables", "-V"]).contains("legacy"));
    for name in IPTABLES_NAMES {
        assert!(
            chroot(&[&format!("/sbin/{name}"), "--version"]).contains("(legacy)"),
            "{name}"
        );
    }
    for (extension, heading) in DOCKER_EXTENSIONS {
        let mut args = vec!["/sbin/iptables"];
        args.extend(extension.split(' '));
        args.push("-h");
        let text = chroot(&args);
        assert!(
            text.contains(heading),
            "iptables {extension} -h did not load it:\n{text}"
        );
    }
    assert!(chroot(&["/bin/sh", "-c", "echo shell-ok"]).contains("shell-ok"));
}

/// The arm64 image's programs run under user-mode QEMU with the extracted tree as their root
/// for path lookups (`-L`): the loader, libraries and iptables extensions all come from the
/// image. (The strict "nothing from outside" closure check is the static one above; the
/// x86_64 chroot test is the strict run.)
#[test]
fn arm64_programs_and_iptables_extensions_run_under_qemu_user() {
    let qemu = require_tool("qemu-aarch64");
    let extracted = extract(&first_builds()["arm64"].image);
    let root = extracted.path().join("root");
    let run = |argv0: &str, program: &str, args: &[&str]| {
        let output = run_ok(
            Command::new(&qemu)
                .arg("-L")
                .arg(&root)
                .args(["-0", argv0])
                .arg(root.join(program))
                .args(args),
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    for (program, args, answer) in STORAGE_TOOLS {
        let output = Command::new(&qemu)
            .arg("-L")
            .arg(&root)
            .arg(root.join(program))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains(answer),
            "/{program} {args:?} did not say {answer:?}:\n{text}"
        );
    }
    assert!(run("ethtool", "sbin/ethtool", &["--version"]).contains("ethtool version"));
    assert!(run("socat", "sbin/socat", &["-V"]).contains("socat version"));
    assert!(run("mkfs.btrfs", "sbin/mkfs.btrfs", &["--version"]).contains("btrfs-progs"));
    assert!(run("ebtables", "sbin/ebtables", &["-V"]).contains("legacy"));
    for name in IPTABLES_NAMES {
        assert!(
            run(name, "sbin/xtables-legacy-multi", &["--version"]).contains("(legacy)"),
            "{name}"
        );
    }
    for (extension, heading) in DOCKER_EXTENSIONS {
        let mut args: Vec<&str> = extension.split(' ').collect();
        args.push("-h");
        let text = run("iptables", "sbin/xtables-legacy-multi", &args);
        assert!(
            text.contains(heading),
            "iptables {extension} -h did not load it:\n{text}"
        );
    }
    assert!(run("sh", "bin/busybox", &["-c", "echo shell-ok"]).contains("shell-ok"));
}

/// The build scripts of the tools built from source are plain POSIX sh, shellcheck-clean.
#[test]
fn build_scripts_are_shellcheck_clean_posix_sh() {
    let shellcheck = require_tool("shellcheck");
    let dir = crate::support::project_root().join("manifests/builds");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "sh"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 5, "{} holds only {scripts:?}", dir.display());
    run_ok(
        Command::new(shellcheck)
            .args(["--shell=sh", "--severity=style"])
            .args(&scripts),
    );
}

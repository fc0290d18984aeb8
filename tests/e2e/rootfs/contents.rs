//! What a cold build of each arch holds: every contract path, mode, owner and timestamp, the ELF
//! machine and library closure of every program, and the SBOM through the SPDX validator.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{extract, first_builds, mode, ARCHES, IPTABLES_NAMES};
use crate::support::{project_root, require_tool, run_ok, sha256_file, stdout_of};

/// The contract's mount points.
const MOUNT_POINTS: [&str; 11] = [
    "tmp", "run", "proc", "sys", "dev", "mnt", "arcbox", "Users", "etc", "var", "export",
];

/// Applets the contract names (the runtime's agent calls udhcpc, ntpd, ifconfig, route, ip,
/// mount, sync), plus what init itself runs.
const REQUIRED_APPLETS: [&str; 17] = [
    "sh", "mount", "umount", "mkdir", "cat", "echo", "sleep", "ln", "chmod", "poweroff", "sync", "grep", "udhcpc",
    "ntpd", "ifconfig", "route", "ip",
];

/// The contract's programs (regular files, 0755), besides busybox and init.
const PROGRAMS: [&str; 13] = [
    "sbin/mkfs.btrfs",
    "sbin/btrfs",
    "sbin/mkfs.ext4",
    "sbin/e2fsck",
    "sbin/mkfs.erofs",
    "sbin/rpc.nfsd",
    "sbin/rpc.mountd",
    "sbin/exportfs",
    "sbin/xtables-legacy-multi",
    "sbin/ebtables",
    "sbin/ethtool",
    "sbin/socat",
    "sbin/ipset",
];

/// The contract's device nodes: path, major, minor, permission bits.
const DEVICE_NODES: [(&str, u32, u32, u32); 2] = [("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666)];

/// Resolves `path` inside `root` the way the kernel does for a process whose root is `root`:
/// `openat2` with `RESOLVE_IN_ROOT`, so symlinks, absolute targets and `..` stay inside it. The
/// kernel, not a second copy of xtask's own resolver, is the judge. `None` when a component is
/// missing or the links loop.
fn resolve_inside(root: &Path, path: &str) -> Option<PathBuf> {
    let root_dir = std::fs::File::open(root).unwrap_or_else(|e| panic!("opening {}: {e}", root.display()));
    let c_path = CString::new(path).unwrap();
    // SAFETY: all-zero is a valid `open_how` (no flags), and the struct cannot be built by name.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: the pointers are valid for the call, and the size is that of the struct passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => None,
            _ => panic!("openat2 of {path} in {}: {error}", root.display()),
        };
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    Some(std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
}

/// The resolver follows relative and absolute links inside the root, keeps `..` from leaving
/// it, and gives `None` for a dangling link.
#[test]
fn resolve_inside_keeps_links_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/busybox"), b"").unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/sh")).unwrap();
    std::os::unix::fs::symlink("../../../../usr/bin/busybox", root.join("usr/bin/up")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("usr/bin/dangling")).unwrap();
    let busybox = root.canonicalize().unwrap().join("usr/bin/busybox");
    for path in ["bin/sh", "/bin/sh", "bin/up", "usr/bin/../bin/busybox"] {
        assert_eq!(
            resolve_inside(&root, path).as_deref(),
            Some(busybox.as_path()),
            "{path}"
        );
    }
    assert_eq!(resolve_inside(&root, "bin/dangling"), None);
    assert_eq!(resolve_inside(&root, "bin/missing"), None);
}

fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

/// Libraries no program in the image needs, shipped for the container runtime binaries that come
/// through the share: Debian's runc loads libseccomp (see manifests/rootfs.toml).
const LIBRARIES_FOR_RUNTIME_BINARIES: &[&str] = &["libseccomp.so.2"];

/// Checks every contract path, mode, ELF machine and the library closure of one extracted image.
fn check_contract(root: &Path, triplet: &str, machine: u16) {
    let regular = |path: &str, expected_mode: u32| {
        let full = root.join(path);
        let metadata = std::fs::symlink_metadata(&full).unwrap_or_else(|_| panic!("/{path} is missing"));
        assert!(metadata.is_file(), "/{path} is not a regular file");
        assert_eq!(mode(&full), expected_mode, "mode of /{path}");
        assert_eq!(metadata.uid(), 0, "/{path} is not root-owned");
    };
    regular("bin/busybox", 0o755);
    regular("sbin/init", 0o755);
    regular("sbin/arcbox-machine-init", 0o755);
    regular("sbin/arcbox-storage-recovery", 0o755);
    regular("lib/arcbox/init-common.sh", 0o644);
    for program in PROGRAMS {
        regular(program, 0o755);
    }
    regular("cacerts/ca-certificates.crt", 0o644);
    for (path, major, minor, bits) in DEVICE_NODES {
        let metadata = std::fs::symlink_metadata(root.join(path)).unwrap_or_else(|_| panic!("/{path} is missing"));
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&metadata.file_type()),
            "/{path} is not a character device"
        );
        let rdev = metadata.rdev();
        assert_eq!(
            (libc::major(rdev), libc::minor(rdev)),
            (major, minor),
            "/{path} device numbers"
        );
        assert_eq!(metadata.mode() & 0o7777, bits, "mode of /{path}");
    }
    regular("etc/arcbox/fex-binfmt.rule", 0o644);

    for (image_path, source) in [
        ("sbin/init", "init/init"),
        ("sbin/arcbox-machine-init", "init/machine-init"),
        ("sbin/arcbox-storage-recovery", "init/storage-recovery"),
        ("lib/arcbox/init-common.sh", "init/common.sh"),
    ] {
        assert_eq!(
            std::fs::read(root.join(image_path)).unwrap(),
            std::fs::read(project_root().join(source)).unwrap(),
            "/{image_path} is {source}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("etc/arcbox/fex-binfmt.rule")).unwrap(),
        std::fs::read(project_root().join("init/fex-binfmt.rule")).unwrap()
    );
    for overlay_file in ["etc/passwd", "etc/group"] {
        assert_eq!(
            std::fs::read(root.join(overlay_file)).unwrap(),
            std::fs::read(project_root().join("rootfs-overlay").join(overlay_file)).unwrap(),
            "overlay file /{overlay_file}"
        );
    }

    let busybox = root.join("bin/busybox");
    for applet in REQUIRED_APPLETS {
        let link = root.join("bin").join(applet);
        assert!(
            std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "/bin/{applet} is not a symlink"
        );
        assert_eq!(
            resolve_inside(root, &format!("bin/{applet}")),
            Some(busybox.clone()),
            "/bin/{applet}"
        );
    }
    // Every applet of busybox's own list has a link, unless the image ships a file of that
    // name (the list the build saved is the one `--list` printed; the guest tests run it too).
    for applet in ["timeout", "nc", "mkdosfs", "losetup"] {
        assert!(
            resolve_inside(root, &format!("bin/{applet}")) == Some(busybox.clone()),
            "/bin/{applet} is not a link to busybox"
        );
    }
    assert!(
        !std::fs::symlink_metadata(root.join("bin/init")).is_ok_and(|m| m.is_symlink()),
        "/sbin/init ships, so no /bin/init applet link"
    );
    for name in IPTABLES_NAMES {
        assert_eq!(
            resolve_inside(root, &format!("sbin/{name}")),
            Some(root.join("sbin/xtables-legacy-multi")),
            "/sbin/{name}"
        );
    }
    for mount_point in MOUNT_POINTS {
        let full = root.join(mount_point);
        assert!(full.is_dir(), "mount point /{mount_point} is missing");
        assert_eq!(mode(&full), 0o755, "mode of /{mount_point}");
    }
    for empty in ["tmp", "run", "proc", "sys", "mnt", "arcbox", "Users", "var", "export"] {
        assert_eq!(
            std::fs::read_dir(root.join(empty)).unwrap().count(),
            0,
            "/{empty} is not empty"
        );
    }
    let bundle = std::fs::read_to_string(root.join("cacerts/ca-certificates.crt")).unwrap();
    let certificates = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certificates > 100, "only {certificates} certificates in the CA bundle");
    assert_eq!(certificates, bundle.matches("-----END CERTIFICATE-----").count());

    // Every ELF: the target machine; every dynamic one: interpreter and libraries inside.
    let default_dirs = [
        format!("lib/{triplet}"),
        format!("usr/lib/{triplet}"),
        "lib".to_owned(),
        "usr/lib".to_owned(),
    ];
    let mut needed_anywhere = BTreeSet::new();
    let mut interpreter_sonames = BTreeSet::new();
    let mut elves = Vec::new();
    for path in all_paths(root) {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        if !metadata.is_file() {
            if metadata.is_symlink() {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                assert!(
                    resolve_inside(root, &relative).is_some_and(|p| p.exists()),
                    "dangling /{relative}"
                );
            } else if metadata.is_dir() {
                assert_eq!(mode(&path), 0o755, "directory {}", path.display());
            }
            continue;
        }
        let file_mode = mode(&path);
        assert!(
            file_mode == 0o755 || file_mode == 0o644,
            "{} has mode {file_mode:o}",
            path.display()
        );
        let bytes = std::fs::read(&path).unwrap();
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        assert_eq!(elf.header.e_machine, machine, "ELF machine of /{relative}");
        if let Some(interpreter) = elf.interpreter {
            let found = resolve_inside(root, interpreter).unwrap_or_else(|| panic!("/{relative}: no {interpreter}"));
            let loader_bytes = std::fs::read(&found).unwrap_or_else(|_| panic!("/{relative}: {interpreter} missing"));
            let loader = goblin::elf::Elf::parse(&loader_bytes).unwrap();
            interpreter_sonames.insert(loader.soname.unwrap().to_owned());
            assert_eq!(mode(&found), 0o755, "{interpreter} is executable");
        }
        let runpath: Vec<String> = elf
            .runpaths
            .iter()
            .chain(if elf.runpaths.is_empty() {
                elf.rpaths.iter()
            } else {
                [].iter()
            })
            .flat_map(|list| list.split(':'))
            .map(|dir| dir.trim_start_matches('/').to_owned())
            .collect();
        needed_anywhere.extend(elf.libraries.iter().map(|lib| lib.to_string()));
        elves.push((
            relative,
            elf.libraries.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            runpath,
            elf.interpreter.is_none() && elf.libraries.is_empty(),
        ));
    }
    for (relative, needed, runpath, _) in &elves {
        for lib in needed {
            if interpreter_sonames.contains(lib) {
                continue;
            }
            let found = runpath
                .iter()
                .chain(default_dirs.iter())
                .any(|dir| resolve_inside(root, &format!("{dir}/{lib}")).is_some_and(|p| p.is_file()));
            assert!(
                found,
                "/{relative} needs {lib}, which does not resolve inside the image"
            );
        }
    }
    let busybox_static = elves.iter().find(|(path, ..)| path == "bin/busybox").unwrap().3;
    assert!(busybox_static, "/bin/busybox is not static");
    // Nothing more: every library under /lib/{triplet} is needed by some ELF in the image, or is
    // one the recipe ships for the runtime binaries that arrive through the share.
    for library in LIBRARIES_FOR_RUNTIME_BINARIES {
        regular(&format!("lib/{triplet}/{library}"), 0o644);
    }
    for entry in std::fs::read_dir(root.join("lib").join(triplet)).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            needed_anywhere.contains(&name) || LIBRARIES_FOR_RUNTIME_BINARIES.contains(&name.as_str()),
            "/lib/{triplet}/{name} is not needed by anything"
        );
    }
}

/// Owner, group and timestamp as recorded in the image itself (an extraction as root would
/// hide a non-root owner).
fn check_inode_metadata(image: &Path) {
    let dump = require_tool("dump.erofs");
    for path in [
        "/sbin/init",
        "/bin/busybox",
        "/cacerts/ca-certificates.crt",
        "/etc",
        "/sbin/iptables",
    ] {
        let text = stdout_of(Command::new(&dump).arg(format!("--path={path}")).arg(image));
        assert!(text.contains("Uid: 0   Gid: 0"), "{path} is not root-owned:\n{text}");
        // SOURCE_DATE_EPOCH 1700000000 is 2023-11-14 22:13:20 UTC; dump.erofs prints local time.
        assert!(
            text.contains("Timestamp: 2023-11-1"),
            "{path} does not carry SOURCE_DATE_EPOCH:\n{text}"
        );
    }
}

#[test]
fn both_arches_build_from_empty_caches_and_hold_every_contract_path() {
    for (arch, triplet, machine) in ARCHES {
        let build = &first_builds()[arch];
        let size = std::fs::metadata(&build.image).unwrap().len();
        assert!(size > 1_000_000, "{arch} image is only {size} bytes");
        check_inode_metadata(&build.image);
        let extracted = extract(&build.image);
        check_contract(&extracted.path().join("root"), triplet, machine);
    }
}

#[test]
fn sbom_passes_the_spdx_validator_and_names_every_package() {
    let validator = require_tool("pyspdxtools");
    for (arch, _, _) in ARCHES {
        let build = &first_builds()[arch];
        run_ok(Command::new(&validator).arg("-i").arg(&build.sbom));
        let sbom: serde_json::Value = serde_json::from_slice(&std::fs::read(&build.sbom).unwrap()).unwrap();
        let packages = sbom["packages"].as_array().unwrap();
        assert_eq!(packages[0]["checksums"][0]["checksumValue"], sha256_file(&build.image));
        assert!(
            packages[0]["comment"].as_str().unwrap().contains("mkfs.erofs 1."),
            "{}",
            packages[0]
        );
        assert!(packages[0]["comment"].as_str().unwrap().contains("-zlz4hc"));
        let names: BTreeSet<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
        for expected in [
            "busybox",
            "btrfs-progs",
            "e2fsprogs",
            "erofs-utils",
            "nfs-utils",
            "libtirpc",
            "iptables",
            "ebtables",
            "ethtool",
            "socat",
            "ca-certificates",
            "libc6",
        ] {
            assert!(names.contains(expected), "{arch} SBOM lacks {expected}");
        }
        let e2fsprogs = packages.iter().find(|p| p["name"] == "e2fsprogs").unwrap();
        let patch = project_root().join("manifests/patches/e2fsprogs/0001-e2fsck-n-reports-superblock-damage.patch");
        assert!(
            e2fsprogs["comment"].as_str().unwrap().contains(&sha256_file(&patch)),
            "the SBOM names our e2fsprogs patch by digest: {e2fsprogs}"
        );
        let lock = std::fs::read_to_string(project_root().join("manifests/rootfs.lock")).unwrap();
        for package in &packages[1..] {
            let digest = package["checksums"][0]["checksumValue"].as_str().unwrap();
            assert!(
                lock.contains(digest),
                "{} digest is not the locked one",
                package["name"]
            );
        }
        assert_eq!(sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    }
}

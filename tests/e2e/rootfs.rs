//! `cargo xtask rootfs`: real builds from empty caches for both arches, extracted without
//! mounting (`fsck.erofs --extract`) and checked against the contract; reproducibility across
//! directories; the SBOM through the SPDX validator; refused inputs; the init files.
//!
//! Builds are serialized with a mutex (they download and compress); the two cold builds per
//! arch are made once and shared by the tests that read them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::support::{project_root, require_tool, run_fails, run_ok, sha256_file, xtask};

/// Serializes the heavy builds of this module.
static BUILDS: Mutex<()> = Mutex::new(());
/// SOURCE_DATE_EPOCH of every build here.
const EPOCH: &str = "1700000000";
/// The contract's FEX rule line, copied verbatim from the contract's "Boot sequence".
const CONTRACT_FEX_RULE: &str = r":FEX-x86_64:M:0:\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:\xff\xff\xff\xff\xff\xfe\xfe\x00\x00\x00\x00\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/arcbox/runtime/bin/FEX:POCF";
/// The contract's mount points.
const MOUNT_POINTS: [&str; 10] = [
    "tmp", "run", "proc", "sys", "dev", "mnt", "arcbox", "Users", "etc", "var",
];
/// The contract's iptables names, all the legacy multi-call binary.
const IPTABLES_NAMES: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];
/// Applets the contract names, plus what init itself runs.
const REQUIRED_APPLETS: [&str; 12] = [
    "sh", "mount", "umount", "mkdir", "cat", "echo", "sleep", "ln", "chmod", "poweroff", "sync", "grep",
];
/// Extensions Docker's rules load, with the heading iptables prints once it has dlopened the
/// extension: `-h` loads each one without touching the kernel.
const DOCKER_EXTENSIONS: [(&str, &str); 9] = [
    ("-j MASQUERADE", "MASQUERADE target options:"),
    ("-j DNAT", "DNAT target options:"),
    ("-j SNAT", "SNAT target options:"),
    ("-j REJECT", "REJECT target options:"),
    ("-m conntrack", "conntrack match options:"),
    ("-m state", "state match options:"),
    ("-m addrtype", "Address type match options:"),
    ("-m comment", "comment match options:"),
    ("-m physdev", "physdev match options:"),
];

/// The two contract arches with their Debian triplet and ELF machine.
const ARCHES: [(&str, &str, u16); 2] = [
    ("arm64", "aarch64-linux-gnu", goblin::elf::header::EM_AARCH64),
    ("x86_64", "x86_64-linux-gnu", goblin::elf::header::EM_X86_64),
];

/// One cold build: its private cache and output directory.
struct ColdBuild {
    _dir: tempfile::TempDir,
    cache: PathBuf,
    image: PathBuf,
    sbom: PathBuf,
}

fn require_build_tools() {
    require_tool("mkfs.erofs", "apt-get install -y erofs-utils");
    require_tool("fsck.erofs", "apt-get install -y erofs-utils");
    require_tool("apt-get", "a Debian or Ubuntu host");
}

/// A build of `arch` from an empty cache, with the output in a fresh directory.
fn cold_build(arch: &str) -> ColdBuild {
    require_build_tools();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let image = dir.path().join("out").join("rootfs.erofs");
    let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let output = run_ok(
        xtask()
            .current_dir(dir.path())
            .env("BOOT_ASSETS_CACHE_DIR", &cache)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["rootfs", "--arch", arch, "--output"])
            .arg(&image),
    );
    eprintln!(
        "cold build {arch} in {:.1?}:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    let sbom = PathBuf::from(format!("{}.spdx.json", image.display()));
    ColdBuild {
        _dir: dir,
        cache,
        image,
        sbom,
    }
}

/// The first cold build of each arch, shared by the tests that only read it.
fn first_builds() -> &'static BTreeMap<&'static str, ColdBuild> {
    static FIRST: OnceLock<BTreeMap<&'static str, ColdBuild>> = OnceLock::new();
    FIRST.get_or_init(|| ARCHES.iter().map(|(arch, _, _)| (*arch, cold_build(arch))).collect())
}

/// Extracts an image with erofs-utils, without mounting it.
fn extract(image: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("root");
    run_ok(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", target.display()))
            .arg(image),
    );
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Follows symlinks inside `root` (absolute targets are taken from `root`).
fn resolve_inside(root: &Path, path: &str) -> Option<PathBuf> {
    let mut current = PathBuf::new();
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        current.push(&part);
        let full = root.join(&current);
        let metadata = std::fs::symlink_metadata(&full).ok()?;
        if metadata.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&full).ok()?.to_string_lossy().into_owned();
            current.pop();
            if target.starts_with('/') {
                current = PathBuf::new();
            }
            pending.extend(target.split('/').rev().map(str::to_owned));
        }
    }
    Some(root.join(current))
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
    regular("sbin/mkfs.btrfs", 0o755);
    regular("sbin/xtables-legacy-multi", 0o755);
    regular("sbin/ebtables", 0o755);
    regular("sbin/ethtool", 0o755);
    regular("sbin/socat", 0o755);
    regular("sbin/ipset", 0o755);
    regular("cacerts/ca-certificates.crt", 0o644);
    regular("etc/arcbox/fex-binfmt.rule", 0o644);

    assert_eq!(
        std::fs::read(root.join("sbin/init")).unwrap(),
        std::fs::read(project_root().join("init/init")).unwrap(),
        "/sbin/init is init/init"
    );
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
    assert!(
        !root.join("bin/timeout").exists(),
        "the fragile `timeout` applet must not be linked"
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
    for empty in ["tmp", "run", "proc", "sys", "dev", "mnt", "arcbox", "Users", "var"] {
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
            } else {
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
    let dump = require_tool("dump.erofs", "apt-get install -y erofs-utils");
    for path in [
        "/sbin/init",
        "/bin/busybox",
        "/cacerts/ca-certificates.crt",
        "/etc",
        "/sbin/iptables",
    ] {
        let output = run_ok(Command::new(&dump).arg(format!("--path={path}")).arg(image));
        let text = String::from_utf8_lossy(&output.stdout);
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
    let chroot = |args: &[&str]| {
        let output = run_ok(Command::new("chroot").arg(&root).args(args));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
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

#[test]
fn two_cold_builds_in_different_directories_are_identical() {
    for (arch, _, _) in ARCHES {
        let first = &first_builds()[arch];
        let second = cold_build(arch);
        assert_ne!(first.cache, second.cache);
        assert_eq!(
            sha256_file(&first.image),
            sha256_file(&second.image),
            "{arch} image digests differ"
        );
        assert_eq!(
            sha256_file(&first.sbom),
            sha256_file(&second.sbom),
            "{arch} SBOM digests differ"
        );
    }
}

#[test]
fn sbom_passes_the_spdx_validator_and_names_every_package() {
    let validator = require_tool("pyspdxtools", "pip install spdx-tools");
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
            "busybox-static",
            "btrfs-progs",
            "iptables",
            "ebtables",
            "ethtool",
            "socat",
            "ca-certificates",
            "libc6",
        ] {
            assert!(names.contains(expected), "{arch} SBOM lacks {expected}");
        }
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

/// A fresh cache holding copies of the x86_64 package files (no apt lists).
fn warm_cache_copy() -> tempfile::TempDir {
    let source = first_builds()["x86_64"].cache.join("rootfs/debs");
    let dir = tempfile::tempdir().unwrap();
    let debs = dir.path().join("cache/rootfs/debs");
    std::fs::create_dir_all(&debs).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "deb") {
            std::fs::copy(&path, debs.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Runs a build that must fail; asserts nothing was written at the output path or beside it.
fn build_fails(dir: &Path, extra: &[&str]) -> String {
    let output = dir.join("out").join("rootfs.erofs");
    let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let stderr = run_fails(
        xtask()
            .env("BOOT_ASSETS_CACHE_DIR", dir.join("cache"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["rootfs", "--arch", "x86_64", "--output"])
            .arg(&output)
            .args(extra),
    );
    assert!(!output.exists(), "{} was written by a failed build", output.display());
    if let Ok(entries) = std::fs::read_dir(dir.join("out")) {
        let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "a failed build left {left:?} in the output directory");
    }
    stderr
}

fn lock_entry_sha(name: &str, for_arch: &str) -> String {
    let lock = std::fs::read_to_string(project_root().join("manifests/rootfs.lock")).unwrap();
    let value: toml_like::Lock = toml_like::parse(&lock);
    value
        .into_iter()
        .find(|(n, a, _)| n == name && a == for_arch)
        .map(|(_, _, sha)| sha)
        .unwrap_or_else(|| panic!("{name} ({for_arch}) is not in the lock"))
}

/// Just enough of the lock's TOML to find an entry's digest, without a TOML dependency.
mod toml_like {
    pub type Lock = Vec<(String, String, String)>;
    pub fn parse(text: &str) -> Lock {
        let mut entries = Vec::new();
        for block in text.split("[[package]]").skip(1) {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
                    .map(|rest| rest.trim_end_matches('"').to_owned())
                    .unwrap()
            };
            entries.push((field("name"), field("for_arch"), field("sha256")));
        }
        entries
    }
}

#[test]
fn a_tampered_cached_package_file_fails_naming_package_and_file() {
    let dir = warm_cache_copy();
    let sha = lock_entry_sha("ethtool", "amd64");
    let cached = dir.path().join(format!("cache/rootfs/debs/{sha}.deb"));
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cached, bytes).unwrap();
    let stderr = build_fails(dir.path(), &[]);
    assert!(
        stderr.contains("package ethtool 1:6.1-1 (amd64): cached file"),
        "{stderr}"
    );
    assert!(stderr.contains(&cached.display().to_string()), "{stderr}");
    assert!(stderr.contains("was tampered with"), "{stderr}");
}

#[test]
fn a_wrong_lock_digest_fails_naming_the_package() {
    let dir = warm_cache_copy();
    let lock_path = dir.path().join("rootfs.lock");
    let good = lock_entry_sha("socat", "amd64");
    let lock = std::fs::read_to_string(project_root().join("manifests/rootfs.lock")).unwrap();
    std::fs::write(&lock_path, lock.replace(&good, &"0".repeat(64))).unwrap();
    let stderr = build_fails(dir.path(), &["--lock", lock_path.to_str().unwrap()]);
    assert!(
        stderr.contains("package socat 1.7.4.4-2 (amd64): apt-get downloaded no file with the locked sha256 0000"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256 {good}")),
        "the error shows what was downloaded: {stderr}"
    );
}

#[test]
fn a_recipe_naming_a_missing_file_fails_naming_package_and_file() {
    let dir = warm_cache_copy();
    let recipe_path = dir.path().join("rootfs.toml");
    let recipe = std::fs::read_to_string(project_root().join("manifests/rootfs.toml")).unwrap();
    let broken = recipe.replace(
        r#"files = [{ from = "sbin/ethtool", to = "sbin/ethtool" }]"#,
        r#"files = [{ from = "sbin/ethtool-missing", to = "sbin/ethtool" }]"#,
    );
    assert_ne!(broken, recipe, "the recipe's ethtool rule changed: update this test");
    std::fs::write(&recipe_path, broken).unwrap();
    let stderr = build_fails(dir.path(), &["--recipe", recipe_path.to_str().unwrap()]);
    assert!(
        stderr.contains("package ethtool 1:6.1-1 (amd64) has no file /sbin/ethtool-missing"),
        "{stderr}"
    );
}

#[test]
fn an_image_over_budget_fails_naming_the_largest_contributors() {
    let dir = warm_cache_copy();
    let recipe_path = dir.path().join("rootfs.toml");
    let recipe = std::fs::read_to_string(project_root().join("manifests/rootfs.toml")).unwrap();
    let small = regex_free_replace_budget(&recipe, 1_000_000);
    std::fs::write(&recipe_path, small).unwrap();
    let stderr = build_fails(dir.path(), &["--recipe", recipe_path.to_str().unwrap()]);
    assert!(
        stderr.contains("over the recipe's size_budget_bytes of 1000000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/lib/x86_64-linux-gnu/libcrypto.so.3  (libssl3)"),
        "{stderr}"
    );
}

fn regex_free_replace_budget(recipe: &str, budget: u64) -> String {
    recipe
        .lines()
        .map(|line| {
            if line.starts_with("size_budget_bytes = ") {
                format!("size_budget_bytes = {budget}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn init_is_shellcheck_clean_posix_sh() {
    let shellcheck = require_tool("shellcheck", "apt-get install -y shellcheck");
    run_ok(
        Command::new(shellcheck)
            .args(["-s", "sh"])
            .arg(project_root().join("init/init")),
    );
    let init = std::fs::read_to_string(project_root().join("init/init")).unwrap();
    assert!(init.starts_with("#!/bin/sh\n"));
    assert_eq!(
        mode(&project_root().join("init/init")) & 0o111,
        0o111,
        "init/init is executable in git"
    );
}

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

/// The trampoline's steps appear in the contract's order, with their console markers, and PID 1
/// never hands itself over (`exec`) to the agent.
#[test]
fn init_follows_the_boot_sequence_in_order() {
    let init = std::fs::read_to_string(project_root().join("init/init")).unwrap();
    let code: String = init
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let steps = [
        "mount_fs proc /proc",
        "mount_fs sysfs /sys",
        "mount_fs devtmpfs /dev",
        "arcbox.debug_console",
        "sh -i </dev/console",
        "mount -t virtiofs \"$SHARE_TAG\" \"$SHARE_DIR\"",
        "if [ -f \"$FEX\" ] && [ -x \"$FEX\" ]",
        "mount -t binfmt_misc binfmt_misc \"$BINFMT_DIR\"",
        "echo -1 >\"$BINFMT_DIR/$FEX_NAME\"",
        "cat \"$FEX_RULE\" >\"$BINFMT_DIR/register\"",
        "\"$AGENT\"\n    status=$?",
    ];
    let mut last = 0;
    for step in steps {
        let at = code[last..]
            .find(step)
            .unwrap_or_else(|| panic!("step `{step}` missing or out of order"));
        last += at + step.len();
    }
    for marker in [
        "log \"starting (pid $$)\"",
        "log \"mounted $1 on $2\"",
        "log \"$2 already mounted\"",
        "log \"debug console: starting a shell on the console",
        "log \"mounted virtiofs share $SHARE_TAG on $SHARE_DIR\"",
        "log \"FEX: registered $FEX_NAME for $FEX\"",
        "log \"FEX: $FEX not found or not executable; no x86_64 handler registered\"",
        "log \"starting agent $AGENT\"",
        "log \"agent exited with status $status; restarting",
        "log \"FATAL: $*\"",
    ] {
        assert!(code.contains(marker), "marker `{marker}` missing");
    }
    assert!(code.contains("echo \"arcbox-init: $*\""));
    assert!(code.contains("AGENT=/arcbox/bin/arcbox-agent"));
    assert!(code.contains("poweroff -f"));
    assert!(
        !code.contains("exec \"$AGENT\""),
        "PID 1 must supervise the agent, not become it"
    );
    assert!(!code.contains("set -e"), "PID 1 must not exit on a failing command");
    assert!(!code.contains("timeout"), "no `timeout` applet in the critical path");
    assert!(
        !code.contains("mountpoint"),
        "Debian's busybox has no `mountpoint` applet"
    );
    assert!(!code.contains("FEX_ROOTFS"), "FEX_ROOTFS is not set");
}

#[test]
fn the_rootfs_help_documents_every_flag() {
    let output = run_ok(xtask().args(["rootfs", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--arch", "--output", "--update-lock", "--recipe", "--lock"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// `release` without `--rootfs` builds `build/{arch}/rootfs.erofs` itself and ships it.
#[test]
fn release_without_rootfs_builds_the_image_first() {
    let dir = warm_cache_copy();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, b"not a real kernel").unwrap();
    let dist = dir.path().join("dist");
    {
        let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run_ok(
            xtask()
                .env("BOOT_ASSETS_CACHE_DIR", dir.path().join("cache"))
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args([
                    "release",
                    "--version",
                    "0.2.0",
                    "--arch",
                    "x86_64",
                    "--kernel-version",
                    "6.1.0",
                ])
                .arg("--kernel")
                .arg(&kernel)
                .arg("--output-dir")
                .arg(&dist),
        );
    }
    let built = project_root().join("build/x86_64/rootfs.erofs");
    assert_eq!(sha256_file(&built), sha256_file(&first_builds()["x86_64"].image));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dist.join("x86_64/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["targets"]["x86_64"]["rootfs"]["sha256"], sha256_file(&built));
}

/// The arm64 image's programs run under user-mode QEMU with the extracted tree as their root
/// for path lookups (`-L`): the loader, libraries and iptables extensions all come from the
/// image. (The strict "nothing from outside" closure check is the static one above; the
/// x86_64 chroot test is the strict run.)
#[test]
fn arm64_programs_and_iptables_extensions_run_under_qemu_user() {
    let qemu = require_tool("qemu-aarch64", "apt-get install -y --no-install-recommends qemu-user");
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

/// How long one sandboxed init run may take before it is killed.
const SANDBOX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the x86_64 image's real `/sbin/init` as PID 1 of fresh PID and mount namespaces,
/// chrooted into the extracted image, with `share` bind-mounted on /arcbox when given and a
/// tmpfs on /dev (so its output stays on our pipe instead of the host's console). `poweroff -f`
/// inside a child PID namespace only ends that namespace. Returns everything init printed.
fn run_init_in_sandbox(root: &Path, share: Option<&Path>, scratch: &Path) -> String {
    require_tool("unshare", "apt-get install -y util-linux");
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
            "arcbox-init: /arcbox already mounted",
            "arcbox-init: FEX: /arcbox/runtime/bin/FEX not found or not executable; no x86_64 handler registered",
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
            "arcbox-init: FATAL: agent /arcbox/bin/arcbox-agent is missing or not executable",
            "arcbox-init: powering off",
        ],
    );
    assert!(!output.contains("starting agent"), "{output}");
}

/// A lock missing an entry fails with the command that fixes it; `--update-lock` re-resolves
/// the arch's entries (leaving the other arch's alone) and the build then succeeds.
#[test]
fn update_lock_fills_a_missing_entry_and_leaves_the_other_arch_alone() {
    let dir = warm_cache_copy();
    let lock_path = dir.path().join("rootfs.lock");
    let lock = std::fs::read_to_string(project_root().join("manifests/rootfs.lock")).unwrap();
    let blocks: Vec<&str> = lock.split("[[package]]").collect();
    let kept: Vec<&str> = blocks
        .iter()
        .copied()
        .filter(|block| !(block.contains("name = \"ethtool\"") && block.contains("for_arch = \"amd64\"")))
        .collect();
    assert_eq!(kept.len() + 1, blocks.len(), "the lock has one ethtool entry for amd64");
    std::fs::write(&lock_path, kept.join("[[package]]")).unwrap();
    let arm64_blocks = |text: &str| -> Vec<String> {
        text.split("[[package]]")
            .filter(|block| block.contains("for_arch = \"arm64\""))
            .map(|block| block.trim().to_owned())
            .collect()
    };

    let stderr = build_fails(dir.path(), &["--lock", lock_path.to_str().unwrap()]);
    assert!(
        stderr.contains(
            "the lock has no entry for ethtool on amd64: run `cargo xtask rootfs --arch x86_64 --update-lock`"
        ),
        "{stderr}"
    );

    let output = dir.path().join("out/rootfs.erofs");
    {
        let _guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run_ok(
            xtask()
                .env("BOOT_ASSETS_CACHE_DIR", dir.path().join("cache"))
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["rootfs", "--arch", "x86_64", "--update-lock", "--lock"])
                .arg(&lock_path)
                .arg("--output")
                .arg(&output),
        );
    }
    let updated = std::fs::read_to_string(&lock_path).unwrap();
    let ethtool = updated
        .split("[[package]]")
        .find(|block| block.contains("name = \"ethtool\"") && block.contains("for_arch = \"amd64\""))
        .expect("--update-lock added ethtool for amd64");
    assert!(ethtool.contains("filename = \"ethtool_"), "{ethtool}");
    assert_eq!(
        arm64_blocks(&updated),
        arm64_blocks(&lock),
        "the arm64 entries must not change"
    );
    assert!(output.exists());
}

//! Contract over HTTP: the real `cargo xtask release` (both arches) + `merge-manifest` +
//! `cdn-tree`, served by a real nginx on loopback, installed by the real `cargo xtask fetch`.
//! Checks `latest.json` resolution, the installed kernel, rootfs, manifest and binaries (bytes,
//! digests, modes), the `install_dir` rule, and that a warm fetch makes no request at all.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use boot_assets::{cdn, Arch, Binary, FileEntry, Manifest};

use crate::cdn_fixture::random_bytes;
use crate::fixtures::{fixture_kernel_bytes, with_erofs_superblock, FIXTURE_KERNEL_VERSION};
use crate::nginx::Nginx;
use crate::support::{self, run_ok, sha256_hex, xtask};

/// The version the fixture release carries.
pub(crate) const RELEASE_VERSION: &str = "0.9.1";

/// A fixed SOURCE_DATE_EPOCH (2026-03-03T12:00:00Z).
const EPOCH: &str = "1772539200";

/// The release inputs of one arch.
struct ArchInputs {
    kernel: Vec<u8>,
    rootfs: Vec<u8>,
}

/// Fixture binaries: (name, version, install_dir, arches).
pub(crate) const FIXTURE_BINARIES: [(&str, &str, Option<&str>, &[Arch]); 3] = [
    ("dockerd", "27.5.1", None, &[Arch::Arm64, Arch::X86_64]),
    (
        "docker-init",
        "0.19.0",
        Some("libexec/docker"),
        &[Arch::Arm64, Arch::X86_64],
    ),
    ("FEX", "2508+abc", None, &[Arch::Arm64]),
];

/// Writes the binaries fragment and stages the binary files under `dist/bin/…`; returns the
/// fragment path and every binary's bytes by (name, arch).
fn stage_binaries(work: &Path, dist: &Path) -> (PathBuf, BTreeMap<(String, Arch), Vec<u8>>) {
    let mut fragment = Vec::new();
    let mut contents = BTreeMap::new();
    for (name, version, install_dir, arches) in FIXTURE_BINARIES {
        let mut targets = BTreeMap::new();
        for &arch in arches {
            let bytes = [
                format!("#!/bin/sh\necho {name} {arch}\n").into_bytes(),
                random_bytes(4096),
            ]
            .concat();
            let path = cdn::binary_path(name, version, arch);
            let staged = dist.join(&path);
            std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
            std::fs::write(&staged, &bytes).unwrap();
            targets.insert(
                arch,
                FileEntry {
                    path,
                    sha256: sha256_hex(&bytes),
                    size: Some(bytes.len() as u64),
                },
            );
            contents.insert((name.to_owned(), arch), bytes);
        }
        fragment.push(Binary {
            name: name.into(),
            version: version.into(),
            install_dir: install_dir.map(str::to_owned),
            targets,
        });
    }
    let fragment_path = work.join("binaries.json");
    std::fs::write(&fragment_path, serde_json::to_vec_pretty(&fragment).unwrap()).unwrap();
    (fragment_path, contents)
}

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A release made by the real pipeline and laid out as a CDN tree.
pub(crate) struct ReleasedTree {
    /// The CDN tree's root (serve it with nginx).
    pub cdn_root: PathBuf,
    /// The unified manifest's bytes, as published.
    pub manifest_bytes: Vec<u8>,
    /// The unified manifest.
    pub manifest: Manifest,
    /// Every binary's bytes by (name, arch).
    pub binaries: BTreeMap<(String, Arch), Vec<u8>>,
    inputs: BTreeMap<Arch, ArchInputs>,
}

/// The real pipeline: `release` per arch (with the fixture binaries, one with `install_dir`,
/// one with a `+` version), `merge-manifest`, `cdn-tree`, all under `work`.
pub(crate) fn released_cdn_tree(work: &Path) -> ReleasedTree {
    let dist = work.join("dist");
    let cdn_root = work.join("cdn");
    let inputs: BTreeMap<Arch, ArchInputs> = [
        (
            Arch::X86_64,
            ArchInputs {
                kernel: fixture_kernel_bytes(Arch::X86_64),
                rootfs: with_erofs_superblock(random_bytes(512 * 1024)),
            },
        ),
        (
            Arch::Arm64,
            ArchInputs {
                kernel: fixture_kernel_bytes(Arch::Arm64),
                rootfs: with_erofs_superblock(random_bytes(384 * 1024)),
            },
        ),
    ]
    .into();
    let (fragment, binaries) = stage_binaries(work, &dist);

    for (arch, input) in &inputs {
        let kernel = work.join(format!("kernel-{arch}"));
        let rootfs = work.join(format!("rootfs-{arch}.erofs"));
        std::fs::write(&kernel, &input.kernel).unwrap();
        std::fs::write(&rootfs, &input.rootfs).unwrap();
        run_ok(
            support::release_command(RELEASE_VERSION, *arch, &kernel, &rootfs, &dist)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .arg("--binaries-json")
                .arg(&fragment),
        );
    }
    support::merge_manifests(&dist, &Arch::ALL);
    support::cdn_tree(&dist, &cdn_root);
    let manifest_bytes = std::fs::read(dist.join("manifest.json")).unwrap();
    let manifest = Manifest::from_json_validated(&manifest_bytes).unwrap();
    ReleasedTree {
        cdn_root,
        manifest_bytes,
        manifest,
        binaries,
        inputs,
    }
}

/// The names of the fixture binaries built for `arch`.
fn arch_binaries(arch: Arch) -> impl Iterator<Item = &'static str> {
    FIXTURE_BINARIES
        .into_iter()
        .filter(move |(_, _, _, arches)| arches.contains(&arch))
        .map(|(name, ..)| name)
}

/// Every path a cold fetch of `arch` with its binaries requests.
fn cold_fetch_paths(manifest: &Manifest, arch: Arch) -> Vec<String> {
    let target = &manifest.targets[&arch];
    let mut paths = vec![
        cdn::LATEST_PATH.to_owned(),
        cdn::manifest_path(RELEASE_VERSION),
        target.kernel.path.clone(),
        target.rootfs.path.clone(),
    ];
    paths.extend(
        Manifest::binaries_for(&manifest.binaries, arch)
            .iter()
            .map(|binary| binary.targets[&arch].path.clone()),
    );
    paths
}

#[test]
fn release_outputs_served_by_nginx_install_per_the_contract() {
    let work = tempfile::tempdir().unwrap();
    let ReleasedTree {
        cdn_root,
        manifest_bytes,
        manifest,
        binaries,
        inputs,
    } = released_cdn_tree(work.path());
    assert_eq!(
        std::fs::read_to_string(cdn_root.join(cdn::LATEST_PATH)).unwrap(),
        format!("{{\n  \"version\": \"{RELEASE_VERSION}\"\n}}\n")
    );
    assert!(
        cdn_root.join("bin/FEX/2508-abc/arm64/FEX").is_file(),
        "safe_version turns + into -"
    );
    // release and sync-binaries record every file's size.
    for target in manifest.targets.values() {
        assert!(
            target.kernel.size.is_some() && target.rootfs.size.is_some(),
            "{target:?}"
        );
    }

    let server = Nginx::start(&cdn_root);
    for (arch, input) in &inputs {
        let home = work.path().join(format!("home-{arch}"));
        let cache = home.join(".arcbox/boot");
        let bin_dir = home.join(".arcbox/runtime/bin");
        let fetch = |version: &str| -> (String, String) {
            let output = run_ok(
                xtask()
                    .args([
                        "fetch",
                        "--cdn",
                        &server.url(),
                        "--version",
                        version,
                        "--arch",
                        arch.as_str(),
                    ])
                    .arg("--dest")
                    .arg(&cache)
                    .arg("--binaries")
                    .arg(&bin_dir),
            );
            (
                String::from_utf8(output.stdout).unwrap(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };

        // `latest` resolves through latest.json.
        let (stdout, _) = fetch("latest");
        assert!(stdout.starts_with(&format!("version\t{RELEASE_VERSION}\n")), "{stdout}");
        let version_dir = cache.join(RELEASE_VERSION);
        let target = &manifest.targets[arch];
        let kernel = std::fs::read(version_dir.join(cdn::KERNEL_FILE)).unwrap();
        let rootfs = std::fs::read(version_dir.join(cdn::ROOTFS_FILE)).unwrap();
        assert!(kernel == input.kernel, "{arch} kernel bytes differ");
        // The release's rootfs is the input image followed by its dm-verity hash tree.
        assert!(rootfs.starts_with(&input.rootfs), "{arch} rootfs bytes differ");
        assert_eq!(Some(rootfs.len() as u64), target.rootfs.size, "{arch} rootfs size");
        assert_eq!(sha256_hex(&kernel), target.kernel.sha256);
        assert_eq!(sha256_hex(&rootfs), target.rootfs.sha256);
        assert_eq!(target.kernel.version, FIXTURE_KERNEL_VERSION);
        assert_eq!(
            std::fs::read(version_dir.join(cdn::MANIFEST_FILE)).unwrap(),
            manifest_bytes
        );
        assert!(stdout.contains(&format!("kernel_cmdline\t{}\n", target.kernel_cmdline)));
        assert!(
            target.kernel_cmdline.contains(" root=/dev/dm-0 "),
            "{}",
            target.kernel_cmdline
        );

        for (name, _, install_dir, arches) in FIXTURE_BINARIES {
            let dir = match install_dir {
                None => bin_dir.clone(),
                Some(dir) => home.join(".arcbox/runtime").join(dir),
            };
            let path = dir.join(name);
            if !arches.contains(arch) {
                assert!(!path.exists(), "{name} has no {arch} build but was installed");
                continue;
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                binaries[&(name.to_owned(), *arch)],
                "{name}"
            );
            assert_eq!(file_mode(&path), 0o755, "{}", path.display());
            assert!(stdout.contains(&format!("{name}\t{}\n", path.display())), "{stdout}");
        }
        assert_eq!(file_mode(&version_dir.join(cdn::ROOTFS_FILE)), 0o644);

        // Warm, with an explicit version: everything is verified, nginx sees no request. nginx
        // logs a request after it has sent the response, so the cold fetch can finish before
        // its last line is written: wait for every line of the cold fetch first (reading the
        // log too early once made a late line look like a request of the warm fetch).
        let cold_paths = cold_fetch_paths(&manifest, *arch);
        let before = server.wait_for_requests(&cold_paths);
        let (warm, warm_log) = fetch(RELEASE_VERSION);
        assert_eq!(warm, stdout);
        // The client's own account: every object cached, nothing downloaded.
        for object in ["kernel", "rootfs"].into_iter().chain(arch_binaries(*arch)) {
            assert!(
                warm_log.contains(&format!("fetch: {object} cached (")),
                "{object} was not reported cached by the warm fetch:\n{warm_log}"
            );
        }
        assert!(!warm_log.contains(" ready ("), "the warm fetch downloaded:\n{warm_log}");
        assert_eq!(server.requests(), before, "a warm fetch made requests");
    }
    let requests = server.requests();
    assert!(
        requests.contains(&"GET /latest.json HTTP/1.1".to_owned()),
        "{requests:?}"
    );
}

//! `cargo xtask dist`, the main job, end to end from a clean output directory: fixture kernels and
//! rootfs images for both arches, and a tiny binaries config whose upstream files (a Docker-style
//! `.tgz` and a direct binary) are served by a real nginx on loopback, plus FEX built from the
//! stand-in by `fex` inside dist. Checks the complete `dist/`: the exact file list, tarball members,
//! `sha256sum -c` on the sidecars, the per-arch manifests (same bytes as in the tarballs), the
//! merged manifest and the staged binaries.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use boot_assets::{cdn, Arch, Manifest};

use crate::fixtures::{write_fixture_inputs, FIXTURE_KERNEL_VERSION};
use crate::nginx::Nginx;
use crate::support::{files_under, require_tool, run_fails, run_ok, sha256_hex, write_tgz, xtask, TgzMember};

const VERSION: &str = "0.4.0";

/// The upstream files: `docker.tgz` with `docker/dockerd`, and a direct binary `tool`.
fn serve_upstream(dir: &Path) -> (String, String) {
    let tgz = dir.join("docker.tgz");
    let tgz_sha256 = write_tgz(
        &tgz,
        &[TgzMember::Program("docker/dockerd", b"\x7fELF dockerd for dist")],
    );
    std::fs::write(dir.join("tool"), b"\x7fELF tool for dist").unwrap();
    (tgz_sha256, sha256_hex(b"\x7fELF tool for dist"))
}

fn binaries_config(base: &str, tgz_sha256: &str, tool_sha256: &str) -> String {
    format!(
        "[[binary]]\nname = \"dockerd\"\nversion = \"27.5.1\"\n\
         [binary.source.arm64]\nformat = \"tgz\"\nurl = \"{base}/docker.tgz\"\nextract = \"docker/dockerd\"\nsha256 = \"{tgz_sha256}\"\n\
         [binary.source.x86_64]\nformat = \"tgz\"\nurl = \"{base}/docker.tgz\"\nextract = \"docker/dockerd\"\nsha256 = \"{tgz_sha256}\"\n\
         [[binary]]\nname = \"tool\"\nversion = \"1.0+build.7\"\n\
         [binary.source.arm64]\nformat = \"binary\"\nurl = \"{base}/tool\"\nsha256 = \"{tool_sha256}\"\n"
    )
}

/// `cargo xtask dist` with fixture kernels and rootfs images for both arches.
/// `dist` of both arches from fixture kernels and images; `config` is `--binaries-config`, the
/// default `manifests/binaries.toml` when `None`.
fn dist_command(inputs: &Path, config: Option<&Path>, out: &Path) -> std::process::Command {
    let mut command = xtask();
    command.args(["dist", "--version", VERSION]);
    for arch in [Arch::Arm64, Arch::X86_64] {
        let (kernel, rootfs) = write_fixture_inputs(inputs, arch);
        command
            .arg("--kernel")
            .arg(format!("{arch}={}", kernel.display()))
            .arg("--rootfs")
            .arg(format!("{arch}={}", rootfs.display()));
    }
    if let Some(config) = config {
        command.arg("--binaries-config").arg(config);
    }
    command
        .arg("--output-dir")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1772539200");
    command
}

fn tar_members(tarball: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    let mut archive = tar::Archive::new(gz);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn dist_from_a_clean_directory_makes_the_whole_release_with_its_runtime_binaries() {
    require_tool("sha256sum");
    let work = tempfile::tempdir().unwrap();
    let upstream = work.path().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    let (tgz_sha256, tool_sha256) = serve_upstream(&upstream);
    let nginx = Nginx::start(&upstream);
    let config = work.path().join("binaries.toml");
    std::fs::write(&config, binaries_config(&nginx.url(), &tgz_sha256, &tool_sha256)).unwrap();
    let inputs = work.path().join("inputs");
    let out = work.path().join("dist");

    // FEX from the stand-in tree, built by `fex` inside dist (clang + lld, our patches).
    let output = run_ok(
        dist_command(&inputs, Some(&config), &out)
            .arg("--fex-source")
            .arg(crate::support::project_root().join("tests/fixtures/fex-standin")),
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("dist: runtime binaries from"), "{log}");

    // The complete dist/: nothing missing, nothing extra (no staging leftovers).
    let merged = Manifest::from_json(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let fex = merged
        .binaries
        .iter()
        .find(|b| b.name == "FEX")
        .expect("FEX in the merged manifest");
    let fex_staged = format!("bin/{}", cdn::binary_relative_path("FEX", &fex.version, Arch::Arm64));
    assert!(fex_staged.ends_with("/arm64/FEX"), "{fex_staged}");
    let expected: BTreeSet<String> = [
        fex_staged.clone(),
        "manifest.json".to_owned(),
        "bin/binaries.json".to_owned(),
        "bin/dockerd/27.5.1/arm64/dockerd".to_owned(),
        "bin/dockerd/27.5.1/x86_64/dockerd".to_owned(),
        "bin/tool/1.0-build.7/arm64/tool".to_owned(),
    ]
    .into_iter()
    .chain(["arm64", "x86_64"].iter().flat_map(|arch| {
        [
            format!("{arch}/boot-assets-{arch}-v{VERSION}.tar.gz"),
            format!("{arch}/boot-assets-{arch}-v{VERSION}.tar.gz.sha256"),
            format!("{arch}/manifest.json"),
        ]
    }))
    .collect();
    assert_eq!(files_under(&out), expected);
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "staging folders left beside dist/: {leftovers:?}");

    merged.validate().unwrap();
    assert_eq!(merged.asset_version, VERSION);
    assert_eq!(merged.built_at, "2026-03-03T12:00:00Z");
    let names: Vec<&str> = merged.binaries.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["FEX", "dockerd", "tool"]);

    for arch in [Arch::Arm64, Arch::X86_64] {
        let dir = out.join(arch.as_str());
        let tarball_name = format!("boot-assets-{arch}-v{VERSION}.tar.gz");
        // The real sha256sum accepts the sidecar.
        run_ok(
            std::process::Command::new("sha256sum")
                .args(["-c", &format!("{tarball_name}.sha256")])
                .current_dir(&dir),
        );
        let members = tar_members(&dir.join(&tarball_name));
        let member_names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(member_names, ["kernel", "manifest.json", "rootfs.erofs"], "{arch}");
        let per_arch = std::fs::read(dir.join("manifest.json")).unwrap();
        assert_eq!(
            members[1].1, per_arch,
            "{arch}: dist/{arch}/manifest.json differs from the tarball's"
        );
        let (kernel, rootfs) = write_fixture_inputs(&work.path().join("again"), arch);
        assert_eq!(members[0].1, std::fs::read(kernel).unwrap(), "{arch} kernel");
        // The input image, then its dm-verity hash tree (one 4 KiB block over 16 data blocks).
        let input = std::fs::read(rootfs).unwrap();
        assert!(members[2].1.starts_with(&input), "{arch} rootfs");
        assert_eq!(
            members[2].1.len(),
            input.len() + 4096,
            "{arch} rootfs with its hash tree"
        );

        let manifest = Manifest::from_json(&per_arch).unwrap();
        manifest.validate().unwrap();
        let target = &manifest.targets[&arch];
        assert_eq!(target.kernel.version, FIXTURE_KERNEL_VERSION);
        assert_eq!(target.kernel.sha256, sha256_hex(&members[0].1));
        assert_eq!(merged.targets[&arch], *target, "{arch}: merged target differs");
        // Per arch, the manifest lists exactly the binaries that arch has.
        let arch_names: Vec<&str> = manifest.binaries.iter().map(|b| b.name.as_str()).collect();
        let want: &[&str] = if arch == Arch::Arm64 {
            &["FEX", "dockerd", "tool"]
        } else {
            &["dockerd"]
        };
        assert_eq!(arch_names, want, "{arch}");
        for binary in &manifest.binaries {
            let entry = &binary.targets[&arch];
            assert_eq!(entry.path, cdn::binary_path(&binary.name, &binary.version, arch));
            let staged = out
                .join("bin")
                .join(cdn::binary_relative_path(&binary.name, &binary.version, arch));
            let bytes = std::fs::read(&staged).unwrap_or_else(|e| panic!("{}: {e}", staged.display()));
            assert_eq!(entry.sha256, sha256_hex(&bytes), "{}", staged.display());
            let mode = std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{}", staged.display());
        }
    }
    assert_eq!(
        std::fs::read(out.join("bin/dockerd/27.5.1/x86_64/dockerd")).unwrap(),
        b"\x7fELF dockerd for dist"
    );
}

#[test]
fn dist_refuses_unpinned_binaries_before_building_anything() {
    let work = tempfile::tempdir().unwrap();
    let config: PathBuf = work.path().join("binaries.toml");
    std::fs::write(&config, binaries_config("http://127.0.0.1:9", "", "")).unwrap();
    let out = work.path().join("dist");
    let err = run_fails(&mut dist_command(&work.path().join("inputs"), Some(&config), &out));
    assert!(err.contains("dist: staging the runtime binaries of"), "{err}");
    assert!(
        err.contains("no sha256 pinned for dockerd (arm64), dockerd (x86_64), tool (arm64)"),
        "{err}"
    );
    assert!(err.contains("pin-binaries"), "{err}");
    assert!(
        !out.join("arm64").exists() && !out.join("manifest.json").exists(),
        "a refused dist wrote a release"
    );
}

/// The main job with the default binaries config (`manifests/binaries.toml`, no
/// `--binaries-config`): the container stack, built from pinned sources (cached), ships all five
/// runtime binaries for both arches, each a static executable of its arch, listed in the merged
/// manifest with the config's versions.
#[test]
fn dist_with_the_default_config_ships_the_static_container_stack_of_both_arches() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("dist");
    run_ok(&mut dist_command(&work.path().join("inputs"), None, &out));
    let manifest = Manifest::from_json(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: BTreeSet<(&str, &str)> = manifest
        .binaries
        .iter()
        .map(|b| (b.name.as_str(), b.version.as_str()))
        .collect();
    let expected = BTreeSet::from([
        ("dockerd", "26.1.5"),
        ("containerd", "2.1.9-boot.1"),
        ("containerd-shim-runc-v2", "2.1.9-boot.1"),
        ("runc", "1.1.15"),
        ("docker-init", "0.19.0"),
    ]);
    assert_eq!(listed, expected);
    for binary in &manifest.binaries {
        for arch in Arch::ALL {
            let entry = &binary.targets[&arch];
            let path = out.join(&entry.path);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(sha256_hex(&bytes), entry.sha256, "{}", path.display());
            let elf = goblin::elf::Elf::parse(&bytes).unwrap();
            let machine = match arch {
                Arch::X86_64 => goblin::elf::header::EM_X86_64,
                Arch::Arm64 => goblin::elf::header::EM_AARCH64,
            };
            assert_eq!(elf.header.e_machine, machine, "{}", path.display());
            assert!(
                elf.interpreter.is_none() && elf.libraries.is_empty(),
                "{} is not static",
                path.display()
            );
        }
    }
}

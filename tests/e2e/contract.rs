//! The release contract, end to end: `cargo xtask release` for both arches from fixture inputs,
//! then the tarball members, the sidecar (checked by the real `sha256sum -c`), the manifests
//! against the checked-in JSON Schema (a real validator), and `merge-manifest` refusals.

use std::io::Read;
use std::path::Path;

use boot_assets::{cdn, Arch, Manifest};

use crate::fixtures::{write_fixture_inputs, FIXTURE_KERNEL_VERSION};
use crate::support::{
    merge_manifests, project_root, release_command, require_tool, run_fails, run_ok, sha256_hex, xtask,
};

const VERSION: &str = "0.2.0";

/// The fixed dm-verity salt of every release: SHA-256 of `boot-assets dm-verity salt v1`.
/// Pinned here so that a changed salt (a different tree for the same image) is a visible change.
const VERITY_SALT: &str = "a29e9ca4f220c7793923928b6ab6b97a39997fdb7ea821128418b2d0b93c1b53";

fn release(dist: &Path, inputs: &Path, arch: Arch, extra: &[&str]) {
    let (kernel, rootfs) = write_fixture_inputs(inputs, arch);
    run_ok(
        release_command(VERSION, arch, &kernel, &rootfs, dist)
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1772539200"),
    );
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(project_root().join("manifests/manifest.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("the checked-in schema is a valid JSON Schema")
}

fn assert_schema_valid(validator: &jsonschema::Validator, path: &Path) {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{} does not validate against the schema: {errors:#?}",
        path.display()
    );
}

/// Member name → bytes, in archive order.
fn tar_members(tarball: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(tarball).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut members = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        members.push((name, bytes));
    }
    members
}

#[test]
fn release_both_arches_then_merge() {
    let sha256sum = require_tool("sha256sum");
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    let validator = schema_validator();

    for arch in Arch::ALL {
        let inputs = work.path().join("inputs");
        release(
            &dist,
            &inputs,
            arch,
            &["--source-repo", "arcboxlabs/kernel", "--source-ref", "v0.1.0"],
        );
        let arch_dir = dist.join(arch.as_str());
        let tarball_name = cdn::tarball_name(VERSION, arch);

        // Exactly the contract's files, nothing else.
        let mut files: Vec<String> = std::fs::read_dir(&arch_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            vec![
                tarball_name.clone(),
                format!("{tarball_name}.sha256"),
                "manifest.json".into()
            ]
        );

        // Flat members in sorted order; the manifest inside is the manifest beside.
        let members = tar_members(&arch_dir.join(&tarball_name));
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["kernel", "manifest.json", "rootfs.erofs"]);
        let manifest_bytes = std::fs::read(arch_dir.join("manifest.json")).unwrap();
        assert_eq!(members[1].1, manifest_bytes);

        // The sidecar is what the real sha256sum accepts.
        run_ok(
            std::process::Command::new(&sha256sum)
                .arg("-c")
                .arg(format!("{tarball_name}.sha256"))
                .current_dir(&arch_dir),
        );

        // CDN paths and digests of what is inside.
        assert_schema_valid(&validator, &arch_dir.join("manifest.json"));
        let manifest = Manifest::from_json_validated(&manifest_bytes).unwrap();
        let target = &manifest.targets[&arch];
        assert_eq!(manifest.targets.len(), 1);
        assert_eq!(target.kernel.path, format!("asset/v{VERSION}/{arch}/kernel"));
        assert_eq!(target.rootfs.path, format!("asset/v{VERSION}/{arch}/rootfs.erofs"));
        assert_eq!(target.kernel.sha256, sha256_hex(&members[0].1));
        assert_eq!(target.rootfs.sha256, sha256_hex(&members[2].1));
        assert_eq!(target.kernel.version, FIXTURE_KERNEL_VERSION);
        // The verified root: the contract's line with root=/dev/vda replaced by the dm-verity
        // device over it (16 data blocks = 128 sectors, the tree right after them, fixed salt).
        let root_hash = target
            .rootfs_verity_root_hash
            .as_deref()
            .expect("the root hash is recorded");
        let verified_root = format!(
            "dm-mod.create=\"rootfs,,0,ro,0 128 verity 1 /dev/vda /dev/vda 4096 4096 16 16 sha256 {root_hash} \
             {VERITY_SALT}\" dm-mod.waitfor=/dev/vda root=/dev/dm-0"
        );
        assert_eq!(
            target.kernel_cmdline,
            arch.default_kernel_cmdline().replace("root=/dev/vda", &verified_root)
        );
        assert_eq!(target.rootfs.size, Some(members[2].1.len() as u64));
        assert_eq!(manifest.built_at, "2026-03-03T12:00:00Z");
        assert_eq!(manifest.source_repo.as_deref(), Some("arcboxlabs/kernel"));
        assert_eq!(manifest.source_sha, None);
    }

    let merged_path = merge_manifests(&dist, &Arch::ALL);
    assert_schema_valid(&validator, &merged_path);
    let merged = Manifest::from_json_validated(&std::fs::read(&merged_path).unwrap()).unwrap();
    for arch in Arch::ALL {
        let per_arch =
            Manifest::from_json(&std::fs::read(dist.join(arch.as_str()).join("manifest.json")).unwrap()).unwrap();
        assert_eq!(merged.targets[&arch], per_arch.targets[&arch]);
        assert_eq!(merged.targets[&arch].kernel.path, cdn::kernel_path(VERSION, arch));
    }
}

#[test]
fn binaries_fragment_is_filtered_per_arch_and_unioned_by_merge() {
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    let fragment = work.path().join("binaries.json");
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let fragment_json = serde_json::json!([
        { "name": "dockerd", "version": "27.5.1", "targets": {
            "arm64": { "path": cdn::binary_path("dockerd", "27.5.1", Arch::Arm64), "sha256": a },
            "x86_64": { "path": cdn::binary_path("dockerd", "27.5.1", Arch::X86_64), "sha256": b } } },
        { "name": "FEX", "version": "2511+g1234", "install_dir": "fex", "targets": {
            "arm64": { "path": cdn::binary_path("FEX", "2511+g1234", Arch::Arm64), "sha256": b } } }
    ]);
    std::fs::write(&fragment, serde_json::to_vec_pretty(&fragment_json).unwrap()).unwrap();
    for arch in Arch::ALL {
        release(
            &dist,
            &work.path().join("in"),
            arch,
            &["--binaries-json", fragment.to_str().unwrap()],
        );
    }
    let x86 = Manifest::from_json(&std::fs::read(dist.join("x86_64/manifest.json")).unwrap()).unwrap();
    assert_eq!(x86.binaries.len(), 1, "FEX has no x86_64 file");
    assert_eq!(
        x86.binaries[0].targets.keys().copied().collect::<Vec<_>>(),
        [Arch::X86_64]
    );

    let merged_path = dist.join("manifest.json");
    run_ok(
        xtask()
            .arg("merge-manifest")
            .arg(dist.join("x86_64/manifest.json"))
            .arg(dist.join("arm64/manifest.json"))
            .arg("-o")
            .arg(&merged_path),
    );
    let merged = Manifest::from_json_validated(&std::fs::read(&merged_path).unwrap()).unwrap();
    let names: Vec<&str> = merged.binaries.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["FEX", "dockerd"]);
    assert_eq!(merged.binaries[0].install_dir.as_deref(), Some("fex"));
    assert_eq!(
        merged.binaries[0].targets[&Arch::Arm64].path,
        "bin/FEX/2511-g1234/arm64/FEX"
    );
    assert_eq!(merged.binaries[1].targets.len(), 2);
}

#[test]
fn merge_of_conflicting_manifests_names_both_files() {
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    release(&one, &work.path().join("in"), Arch::Arm64, &[]);
    release(&two, &work.path().join("in"), Arch::Arm64, &[]);
    let (first, second) = (one.join("arm64/manifest.json"), two.join("arm64/manifest.json"));
    let output = work.path().join("merged.json");
    let merge_fails = |first: &Path, second: &Path| {
        run_fails(
            xtask()
                .arg("merge-manifest")
                .arg(first)
                .arg(second)
                .arg("--output")
                .arg(&output),
        )
    };
    let stderr = merge_fails(&first, &second);
    assert!(stderr.contains("arch arm64 appears twice"), "{stderr}");
    assert!(
        stderr.contains(first.to_str().unwrap()) && stderr.contains(second.to_str().unwrap()),
        "{stderr}"
    );
    assert!(!output.exists(), "a refused merge must not write its output");

    // A different asset version is refused the same way.
    let other = work.path().join("other");
    let (kernel, rootfs) = write_fixture_inputs(&work.path().join("in"), Arch::X86_64);
    run_ok(&mut release_command("0.3.0", Arch::X86_64, &kernel, &rootfs, &other));
    let third = other.join("x86_64/manifest.json");
    let stderr = merge_fails(&first, &third);
    assert!(stderr.contains("asset_version differs"), "{stderr}");
    assert!(
        stderr.contains(first.to_str().unwrap()) && stderr.contains(third.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn contract_example_manifest_validates_against_schema() {
    let validator = schema_validator();
    let example = project_root().join("tests/fixtures/contract-example-manifest.json");
    assert_schema_valid(&validator, &example);
    Manifest::from_json_validated(&std::fs::read(&example).unwrap()).unwrap();

    // The validator is real: a broken digest and an unknown arch are rejected.
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
    value["targets"]["arm64"]["kernel"]["sha256"] = "ABC".into();
    assert!(!validator.is_valid(&value));
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
    let arm = value["targets"]["arm64"].clone();
    value["targets"]["riscv64"] = arm;
    assert!(!validator.is_valid(&value));
}

#[test]
fn release_errors_name_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let (kernel, rootfs) = write_fixture_inputs(work.path(), Arch::Arm64);
    let stderr = run_fails(
        xtask()
            .args(["release", "--version", VERSION, "--arch", "arm64", "--rootfs"])
            .arg(&rootfs)
            .arg("--kernel")
            .arg(work.path().join("missing-kernel")),
    );
    assert!(
        stderr.contains("--kernel") && stderr.contains("missing-kernel"),
        "{stderr}"
    );

    let opaque = work.path().join("opaque-kernel");
    std::fs::write(&opaque, vec![0u8; 4096]).unwrap();
    let stderr = run_fails(
        xtask()
            .args(["release", "--version", VERSION, "--arch", "arm64", "--output-dir"])
            .arg(work.path().join("dist"))
            .arg("--kernel")
            .arg(&opaque)
            .arg("--rootfs")
            .arg(&rootfs),
    );
    assert!(stderr.contains("pass --kernel-version"), "{stderr}");
    assert!(!work.path().join("dist/arm64/manifest.json").exists());

    let stderr = run_fails(
        xtask()
            .args(["release", "--version", "v0.2", "--arch", "arm64", "--kernel"])
            .arg(&kernel)
            .arg("--rootfs")
            .arg(&rootfs),
    );
    assert!(
        stderr.contains("--version \"v0.2\" is not a semantic version"),
        "{stderr}"
    );
}

//! `cargo xtask merge-manifest`: unions per-arch manifests into the multi-arch manifest.
//!
//! Reads each input manifest, writes the merged one atomically. [`merge`] is the pure rule set:
//! inputs must agree on asset_version, schema_version and source_*; no arch may appear twice;
//! binaries are unioned by name and must agree on version, install_dir and per-arch files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{Binary, Manifest};
use xshell::Shell;

use crate::manifest_io::read_manifest;
use crate::{flags, util};

impl flags::MergeManifest {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        run(&self.inputs, &self.output)?;
        Ok(())
    }
}

/// Reads the per-arch manifests `inputs`, merges them, writes the result to `output` and
/// returns it; `dist` calls this after its releases.
pub fn run(inputs: &[PathBuf], output: &Path) -> Result<Manifest> {
    let mut labelled = Vec::new();
    for path in inputs {
        labelled.push((path.display().to_string(), read_manifest(path)?));
    }
    let merged = merge(&labelled)?;
    util::write_atomic(output, merged.to_json_pretty().as_bytes())?;
    let arches: Vec<String> = merged.targets.keys().map(ToString::to_string).collect();
    eprintln!(
        "merge-manifest: wrote {} ({}; {} binaries)",
        output.display(),
        arches.join(", "),
        merged.binaries.len()
    );
    Ok(merged)
}

/// Merges labelled manifests (the label is the file name, used in every error).
pub fn merge(inputs: &[(String, Manifest)]) -> Result<Manifest> {
    let Some((first_label, first)) = inputs.first() else {
        bail!("no manifests to merge: pass at least one per-arch manifest.json");
    };
    for (label, manifest) in inputs {
        manifest
            .validate_for_writing()
            .with_context(|| format!("manifest {label}"))?;
    }

    let mut merged = first.clone();
    merged.binaries.clear();
    let mut arch_source: BTreeMap<_, &str> = first.targets.keys().map(|arch| (*arch, first_label.as_str())).collect();

    for (label, manifest) in &inputs[1..] {
        let fields = [
            (
                "asset_version",
                Some(&first.asset_version),
                Some(&manifest.asset_version),
            ),
            ("source_repo", first.source_repo.as_ref(), manifest.source_repo.as_ref()),
            ("source_ref", first.source_ref.as_ref(), manifest.source_ref.as_ref()),
            ("source_sha", first.source_sha.as_ref(), manifest.source_sha.as_ref()),
        ];
        for (field, ours, theirs) in fields {
            if ours != theirs {
                bail!(
                    "{field} differs: {} in {first_label}, {} in {label}",
                    describe(ours),
                    describe(theirs)
                );
            }
        }
        if manifest.schema_version != first.schema_version {
            bail!(
                "schema_version differs: {} in {first_label}, {} in {label}",
                first.schema_version,
                manifest.schema_version
            );
        }
        for (arch, target) in &manifest.targets {
            if let Some(other) = arch_source.insert(*arch, label) {
                bail!("arch {arch} appears twice: in {other} and in {label}");
            }
            merged.targets.insert(*arch, target.clone());
        }
        if manifest.built_at > merged.built_at {
            merged.built_at = manifest.built_at.clone();
        }
    }

    merged.binaries = merge_binaries(inputs)?;
    merged
        .validate_for_writing()
        .context("the merged manifest is invalid")?;
    Ok(merged)
}

/// Unions the binaries of every input by name, sorted by name so argument order does not matter.
fn merge_binaries(inputs: &[(String, Manifest)]) -> Result<Vec<Binary>> {
    let mut by_name: BTreeMap<&str, (Binary, &str)> = BTreeMap::new();
    for (label, manifest) in inputs {
        for binary in &manifest.binaries {
            let Some((existing, existing_label)) = by_name.get_mut(binary.name.as_str()) else {
                by_name.insert(&binary.name, (binary.clone(), label));
                continue;
            };
            let name = &binary.name;
            if existing.version != binary.version {
                bail!(
                    "binary {name:?} has version {:?} in {existing_label} but {:?} in {label}",
                    existing.version,
                    binary.version
                );
            }
            if existing.install_dir != binary.install_dir {
                bail!(
                    "binary {name:?} has install_dir {} in {existing_label} but {} in {label}",
                    describe(existing.install_dir.as_ref()),
                    describe(binary.install_dir.as_ref())
                );
            }
            for (arch, file) in &binary.targets {
                match existing.targets.get(arch) {
                    Some(known) if known != file => bail!(
                        "binary {name:?} for {arch} differs: {} ({}) in {existing_label}, {} ({}) in {label}",
                        known.path,
                        known.sha256,
                        file.path,
                        file.sha256
                    ),
                    Some(_) => {}
                    None => {
                        existing.targets.insert(*arch, file.clone());
                    }
                }
            }
        }
    }
    Ok(by_name.into_values().map(|(binary, _)| binary).collect())
}

fn describe(value: Option<&String>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "(absent)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_assets::{cdn, Arch, FileEntry, KernelEntry, Target};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn binary(name: &str, arch: Arch, sha256: &str) -> Binary {
        Binary {
            name: name.into(),
            version: "1.0".into(),
            install_dir: None,
            targets: [(
                arch,
                FileEntry {
                    path: cdn::binary_path(name, "1.0", arch),
                    sha256: sha256.into(),
                    size: None,
                },
            )]
            .into(),
        }
    }

    fn per_arch(arch: Arch) -> Manifest {
        Manifest {
            schema_version: 0,
            asset_version: "0.2.0".into(),
            built_at: "2026-03-03T12:00:00Z".into(),
            source_repo: Some("arcboxlabs/kernel".into()),
            source_ref: None,
            source_sha: None,
            targets: [(
                arch,
                Target {
                    kernel: KernelEntry {
                        path: cdn::kernel_path("0.2.0", arch),
                        sha256: A.into(),
                        version: "6.1.0".into(),
                        size: Some(1),
                    },
                    rootfs: FileEntry {
                        path: cdn::rootfs_path("0.2.0", arch),
                        sha256: B.into(),
                        size: Some(2),
                    },
                    kernel_cmdline: arch.default_kernel_cmdline().into(),
                    rootfs_verity_root_hash: None,
                    runtime: None,
                },
            )]
            .into(),
            binaries: vec![binary("dockerd", arch, A)],
        }
    }

    fn inputs(a: Manifest, b: Manifest) -> Vec<(String, Manifest)> {
        vec![("arm.json".into(), a), ("x86.json".into(), b)]
    }

    fn merge_error(a: Manifest, b: Manifest) -> String {
        format!("{:#}", merge(&inputs(a, b)).unwrap_err())
    }

    #[test]
    fn merges_two_arches_and_unions_binaries() {
        let mut x86 = per_arch(Arch::X86_64);
        x86.built_at = "2026-03-04T00:00:00Z".into();
        x86.binaries.push(binary("containerd", Arch::X86_64, B));
        let merged = merge(&inputs(per_arch(Arch::Arm64), x86)).unwrap();
        assert_eq!(merged.targets.keys().copied().collect::<Vec<_>>(), Arch::ALL);
        assert_eq!(merged.built_at, "2026-03-04T00:00:00Z");
        let names: Vec<_> = merged.binaries.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["containerd", "dockerd"]);
        assert_eq!(merged.binaries[1].targets.len(), 2);
    }

    #[test]
    fn argument_order_does_not_change_the_result() {
        let ab = merge(&inputs(per_arch(Arch::Arm64), per_arch(Arch::X86_64))).unwrap();
        let ba = merge(&inputs(per_arch(Arch::X86_64), per_arch(Arch::Arm64))).unwrap();
        assert_eq!(ab.to_json_pretty(), ba.to_json_pretty());
    }

    /// A change to one input manifest.
    type Edit = fn(&mut Manifest);

    /// An x86_64 input that differs from the arm64 one in a single field is refused with an
    /// error naming the field, both values and both files.
    #[test]
    fn refuses_an_input_that_disagrees_in_one_field() {
        let cases: [(Edit, &str); 3] = [
            (
                |x86| x86.asset_version = "0.3.0".into(),
                "asset_version differs: \"0.2.0\" in arm.json, \"0.3.0\" in x86.json",
            ),
            (
                |x86| x86.binaries[0].version = "2.0".into(),
                "binary \"dockerd\" has version \"1.0\" in arm.json but \"2.0\" in x86.json",
            ),
            (
                |x86| x86.binaries[0].install_dir = Some("libexec".into()),
                "binary \"dockerd\" has install_dir (absent) in arm.json but \"libexec\" in x86.json",
            ),
        ];
        for (edit, expected) in cases {
            let mut x86 = per_arch(Arch::X86_64);
            edit(&mut x86);
            assert_eq!(merge_error(per_arch(Arch::Arm64), x86), expected);
        }
    }

    #[test]
    fn refuses_different_schema_version() {
        let mut arm = per_arch(Arch::Arm64);
        let mut x86 = per_arch(Arch::X86_64);
        arm.asset_version = "1.0.0".into();
        arm.schema_version = 1;
        x86.asset_version = "1.0.0".into();
        x86.schema_version = 2;
        // An input whose schema_version breaks the rule is refused while it is read, naming it.
        let err = merge_error(arm, x86);
        assert!(err.starts_with("manifest x86.json: manifest breaks 1 rule(s)"), "{err}");
        assert!(err.contains("schema_version: is 2"), "{err}");
    }

    #[test]
    fn refuses_different_sources() {
        for (field, edit) in [
            (
                "source_repo",
                (|m: &mut Manifest| m.source_repo = Some("other/kernel".into())) as Edit,
            ),
            ("source_ref", |m: &mut Manifest| m.source_ref = Some("v9".into())),
            ("source_sha", |m: &mut Manifest| m.source_sha = Some("deadbeef".into())),
        ] {
            let mut x86 = per_arch(Arch::X86_64);
            edit(&mut x86);
            let err = merge_error(per_arch(Arch::Arm64), x86);
            assert!(err.starts_with(&format!("{field} differs:")), "{err}");
            assert!(err.contains("in arm.json") && err.contains("in x86.json"), "{err}");
        }
    }

    #[test]
    fn refuses_same_arch_twice_naming_both_files() {
        assert_eq!(
            merge_error(per_arch(Arch::Arm64), per_arch(Arch::Arm64)),
            "arch arm64 appears twice: in arm.json and in x86.json"
        );
    }

    #[test]
    fn refuses_binary_with_different_digest_for_same_arch() {
        let mut a = per_arch(Arch::Arm64);
        let mut b = per_arch(Arch::X86_64);
        b.binaries[0] = binary("dockerd", Arch::Arm64, B);
        a.binaries[0] = binary("dockerd", Arch::Arm64, A);
        let err = merge_error(a, b);
        assert!(err.starts_with("binary \"dockerd\" for arm64 differs:"), "{err}");
        assert!(
            err.contains(A) && err.contains(B) && err.contains("arm.json") && err.contains("x86.json"),
            "{err}"
        );
    }

    #[test]
    fn refuses_invalid_input_naming_it() {
        let mut x86 = per_arch(Arch::X86_64);
        x86.targets.get_mut(&Arch::X86_64).unwrap().kernel.path = "../kernel".into();
        let err = merge_error(per_arch(Arch::Arm64), x86);
        assert!(
            err.starts_with("manifest x86.json:") && err.contains("targets.x86_64.kernel.path"),
            "{err}"
        );
    }

    #[test]
    fn refuses_nothing_to_merge() {
        assert!(merge(&[]).unwrap_err().to_string().starts_with("no manifests to merge"));
    }
}

#[cfg(test)]
mod proptests;

//! The binaries fragment: a JSON array of manifest `binaries` entries, written by
//! `sync-binaries` and `fex`, embedded by `release --binaries-json`, unioned by `merge-manifest`.
//!
//! Reads and writes the fragment file (atomically, sorted by name, validated).

use std::path::Path;

use anyhow::{Context, Result};
use boot_assets::manifest::{binaries_from_json_strict, validate_binaries};
use boot_assets::Binary;

use crate::util;

/// Reads a fragment; errors name the file and the JSON path that did not fit.
pub fn read_fragment(path: &Path) -> Result<Vec<Binary>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading binaries fragment {}", path.display()))?;
    let binaries = binaries_from_json_strict(&bytes)
        .with_context(|| format!("{}: not a JSON array of manifest binaries", path.display()))?;
    validate_binaries(&binaries).with_context(|| format!("binaries fragment {}", path.display()))?;
    Ok(binaries)
}

/// Reads a fragment, or an empty list when the file does not exist yet.
pub fn read_fragment_or_empty(path: &Path) -> Result<Vec<Binary>> {
    if path.exists() {
        read_fragment(path)
    } else {
        Ok(Vec::new())
    }
}

/// Writes a fragment atomically, sorted by name, after validating it.
pub fn write_fragment(path: &Path, binaries: &[Binary]) -> Result<()> {
    let mut sorted = binaries.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    validate_binaries(&sorted).with_context(|| format!("refusing to write binaries fragment {}", path.display()))?;
    let mut text = serde_json::to_string_pretty(&sorted).expect("binaries always serialize");
    text.push('\n');
    util::write_atomic(path, text.as_bytes())
}

/// The list with `entry` in place of any binary of the same name.
pub fn replace_entry(binaries: &[Binary], entry: Binary) -> Vec<Binary> {
    let mut updated: Vec<Binary> = binaries.iter().filter(|b| b.name != entry.name).cloned().collect();
    updated.push(entry);
    updated.sort_by(|a, b| a.name.cmp(&b.name));
    updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_assets::{cdn, Arch, FileEntry};

    fn binary(name: &str, version: &str) -> Binary {
        Binary {
            name: name.into(),
            version: version.into(),
            install_dir: None,
            targets: [(
                Arch::Arm64,
                FileEntry {
                    path: cdn::binary_path(name, version, Arch::Arm64),
                    sha256: "c".repeat(64),
                    size: None,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn replace_swaps_same_name_and_sorts() {
        let list = vec![binary("runc", "1"), binary("FEX", "old")];
        let updated = replace_entry(&list, binary("FEX", "new"));
        let summary: Vec<(&str, &str)> = updated.iter().map(|b| (b.name.as_str(), b.version.as_str())).collect();
        assert_eq!(summary, [("FEX", "new"), ("runc", "1")]);
    }

    #[test]
    fn round_trip_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binaries.json");
        assert!(read_fragment_or_empty(&path).unwrap().is_empty());
        write_fragment(&path, &[binary("runc", "1.2.4"), binary("dockerd", "27.5.1")]).unwrap();
        let names: Vec<String> = read_fragment(&path).unwrap().into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["dockerd", "runc"]);

        std::fs::write(
            &path,
            r#"[{"name": "x", "version": "1", "targets": {"arm64": {"path": "bin/x"}}}]"#,
        )
        .unwrap();
        let err = format!("{:#}", read_fragment(&path).unwrap_err());
        assert!(
            err.contains("binaries.json") && err.contains("[0].targets.arm64") && err.contains("sha256"),
            "{err}"
        );

        let mut bad = binary("x", "1");
        bad.targets.get_mut(&Arch::Arm64).unwrap().path = "../x".into();
        let err = format!("{:#}", write_fragment(&path, &[bad]).unwrap_err());
        assert!(err.contains("binaries[0].targets.arm64.path"), "{err}");
    }
}

//! Property tests: bad input never panics. Arbitrary bytes and arbitrary JSON values go through
//! manifest parsing, validation and merge; each either succeeds or returns an error.
//!
//! Random JSON rarely has the manifest's shape, so most cases start from a valid manifest and
//! replace one value somewhere inside it with an arbitrary one, which reaches every rule.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::Value;

use boot_assets::{Arch, Manifest};

use super::merge;

/// Every key the manifest's JSON Schema names (nested ones included), so random objects
/// sometimes look like manifests; taken from the schema so that it never misses a new field.
fn known_keys() -> Vec<String> {
    fn collect(value: &Value, keys: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    keys.extend(properties.keys().cloned());
                }
                map.values().for_each(|inner| collect(inner, keys));
            }
            Value::Array(items) => items.iter().for_each(|inner| collect(inner, keys)),
            _ => {}
        }
    }
    let schema = serde_json::to_value(schemars::schema_for!(Manifest)).expect("a schema is JSON");
    let mut keys = BTreeSet::new();
    collect(&schema, &mut keys);
    keys.into_iter().collect()
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(known_keys()), "[a-z_0-9]{0,6}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-f0-9]{64}".prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        "(\\.\\./)?[a-z0-9./\\\\]{0,16}".prop_map(Value::from),
        "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-rc\\.1|\\+b1)?".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid per-arch manifest as JSON, for `arch`.
fn valid_manifest(arch: Arch, version: &str) -> Value {
    serde_json::json!({
        "schema_version": 0,
        "asset_version": version,
        "built_at": "2026-03-03T12:00:00Z",
        "source_repo": "arcboxlabs/kernel",
        "targets": { arch.as_str(): {
            "kernel": { "path": format!("asset/v{version}/{arch}/kernel"), "sha256": "1".repeat(64), "version": "6.1.0" },
            "rootfs": { "path": format!("asset/v{version}/{arch}/rootfs.erofs"), "sha256": "2".repeat(64) },
            "kernel_cmdline": arch.default_kernel_cmdline()
        }},
        "binaries": [{ "name": "dockerd", "version": "27.5.1", "install_dir": "bin",
            "targets": { arch.as_str(): { "path": format!("bin/dockerd/27.5.1/{arch}/dockerd"), "sha256": "3".repeat(64) } } }]
    })
}

/// Every JSON pointer inside a value, the root included.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// A valid manifest with the value at one (index-chosen) place replaced.
fn mutated(arch: Arch, which: usize, replacement: Value) -> Value {
    let mut value = valid_manifest(arch, "0.2.0");
    let mut all = Vec::new();
    pointers(&value, String::new(), &mut all);
    let pointer = &all[which % all.len()];
    if pointer.is_empty() {
        return replacement;
    }
    *value.pointer_mut(pointer).expect("pointer was just listed") = replacement;
    value
}

/// Parse, validate and merge; the only requirement is a result, never a panic.
fn exercise(values: Vec<Value>) {
    let mut manifests = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(manifest) = Manifest::from_json(&bytes) {
            let _ = manifest.validate();
            let _ = manifest.to_json_pretty();
            manifests.push((format!("input{index}.json"), manifest));
        }
        let _ = Manifest::from_value(value);
    }
    if let Ok(merged) = merge(&manifests) {
        merged.validate().expect("merge only returns validated manifests");
    }
}

fn arch() -> impl Strategy<Value = Arch> {
    prop::sample::select(Arch::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::from_json(&bytes).map(|m| m.validate());
        let _ = boot_assets::Latest::from_json(&bytes);
        let _ = boot_assets::sidecar::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_values_never_panic(a in json_value(), b in json_value()) {
        exercise(vec![a, b]);
    }

    #[test]
    fn mutated_manifests_never_panic(
        first in (arch(), any::<usize>(), json_value()),
        second in (arch(), any::<usize>(), json_value()),
    ) {
        exercise(vec![mutated(first.0, first.1, first.2), mutated(second.0, second.1, second.2)]);
    }

    #[test]
    fn valid_inputs_for_two_arches_always_merge(version in "[0-9]\\.(0|[1-9][0-9]?)\\.(0|[1-9][0-9]?)") {
        let inputs: Vec<(String, Manifest)> = Arch::ALL
            .iter()
            .map(|arch| (format!("{arch}.json"), Manifest::from_value(valid_manifest(*arch, &version)).unwrap()))
            .map(|(label, mut manifest)| {
                manifest.schema_version = semver::Version::parse(&version).unwrap().major;
                (label, manifest)
            })
            .collect();
        let merged = merge(&inputs).unwrap();
        prop_assert_eq!(merged.targets.len(), 2);
        prop_assert_eq!(merged.binaries[0].targets.len(), 2);
    }
}

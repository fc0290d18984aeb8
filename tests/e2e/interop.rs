//! Interop with the published upstream client, both directions.
//!
//! - `arcbox-boot` 0.8.0 (its `download` feature, a dev-dependency) installs the CDN tree our
//!   pipeline makes (`release` for both arches, `merge-manifest`, `cdn-tree`, served by a real
//!   nginx), binaries with `install_dir` and a `+` version included; every installed file is
//!   checked against our manifest.
//! - Our AssetManager installs a manifest written the way upstream writes it: serialized from
//!   upstream's own types, with the legacy `targets.{arch}.runtime`, a kernel tag as
//!   `kernel.version`, and fields this version does not know.

use boot_assets::{cdn, Arch, Manifest};

use crate::cdn_fixture::{kernel_path, rootfs_path, Fixture, ARCH, VERSION};
use crate::fetch::{released_cdn_tree, FIXTURE_BINARIES, RELEASE_VERSION};
use crate::nginx::Nginx;
use crate::support::{sha256_file, sha256_hex};

/// A single-threaded tokio runtime, only to drive upstream's async client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn upstream_client_installs_our_cdn_tree_for_both_arches() {
    let work = tempfile::tempdir().unwrap();
    let tree = released_cdn_tree(work.path());
    // Our manifest carries the new optional `size`; upstream must not mind.
    assert!(String::from_utf8_lossy(&tree.manifest_bytes).contains("\"size\""));
    let server = Nginx::start(&tree.cdn_root);
    let runtime = runtime();
    for arch in Arch::ALL {
        let home = work.path().join(format!("upstream-home-{arch}"));
        let bin_dir = home.join(".arcbox/runtime/bin");
        let manager = arcbox_boot::asset_manager::AssetManager::new(arcbox_boot::asset_manager::AssetManagerConfig {
            cdn_base_url: server.url(),
            version: RELEASE_VERSION.into(),
            arch: arch.as_str().into(),
            cache_dir: home.join(".arcbox/boot"),
            custom_kernel: None,
        })
        .expect("upstream accepts the configuration");
        let prepared = runtime
            .block_on(manager.prepare(None))
            .unwrap_or_else(|e| panic!("upstream's prepare for {arch}: {e}"));
        runtime
            .block_on(manager.prepare_binaries(&bin_dir, None))
            .unwrap_or_else(|e| panic!("upstream's prepare_binaries for {arch}: {e}"));

        let target = &tree.manifest.targets[&arch];
        assert_eq!(prepared.version, RELEASE_VERSION);
        assert_eq!(prepared.kernel_cmdline, target.kernel_cmdline);
        assert_eq!(sha256_file(&prepared.kernel), target.kernel.sha256, "{arch} kernel");
        assert_eq!(sha256_file(&prepared.rootfs), target.rootfs.sha256, "{arch} rootfs");
        assert_eq!(
            std::fs::metadata(&prepared.rootfs).unwrap().len(),
            target.rootfs.size.unwrap(),
            "{arch} rootfs size"
        );
        let mut installed = 0;
        for binary in Manifest::binaries_for(&tree.manifest.binaries, arch) {
            let entry = &binary.targets[&arch];
            let path =
                boot_assets::asset_manager::install_dir_of(&bin_dir, binary.install_dir.as_deref()).join(&binary.name);
            assert_eq!(sha256_file(&path), entry.sha256, "{arch} {}", binary.name);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                tree.binaries[&(binary.name.clone(), arch)]
            );
            installed += 1;
        }
        let expected = FIXTURE_BINARIES
            .iter()
            .filter(|(_, _, _, arches)| arches.contains(&arch))
            .count();
        assert_eq!(installed, expected, "{arch}: every binary of the manifest is checked");
        if arch == Arch::Arm64 {
            // The `+` version: our CDN path is bin/FEX/2508-abc/…, and upstream found it.
            assert!(bin_dir.join("FEX").is_file());
        }
        assert!(
            home.join(".arcbox/runtime/libexec/docker/docker-init").is_file(),
            "install_dir"
        );
    }
}

/// The fixture's release as upstream's `release` writes it: upstream's own types, serialized
/// the way it serializes them, plus fields a later upstream may add.
fn upstream_written_manifest(fixture: &Fixture) -> String {
    use arcbox_boot::manifest as upstream;
    let ours = &fixture.manifest.targets[&ARCH];
    let entry = |path: &str, sha256: &str, version: Option<&str>| upstream::FileEntry {
        path: path.into(),
        sha256: sha256.into(),
        version: version.map(str::to_owned),
    };
    let binary_bytes = b"#!/bin/sh\necho from upstream\n";
    fixture
        .server
        .put(&cdn::binary_path("k3s", "v1.31.4+k3s1", ARCH), binary_bytes.to_vec());
    let manifest = upstream::Manifest {
        schema_version: 1,
        asset_version: VERSION.into(),
        built_at: "2026-03-03T12:00:00Z".into(),
        source_repo: Some("arcboxlabs/kernel".into()),
        source_ref: Some("v0.0.19".into()),
        source_sha: None,
        targets: [(
            ARCH.as_str().to_owned(),
            upstream::Target {
                kernel: entry(&kernel_path(), &ours.kernel.sha256, Some("v0.0.19")),
                rootfs: entry(&rootfs_path(), &ours.rootfs.sha256, Some("erofs-lz4hc")),
                kernel_cmdline: ours.kernel_cmdline.clone(),
                runtime: Some(entry(
                    &format!("asset/v{VERSION}/{ARCH}/runtime.erofs"),
                    &"e".repeat(64),
                    None,
                )),
            },
        )]
        .into(),
        binaries: vec![upstream::Binary {
            name: "k3s".into(),
            version: "v1.31.4+k3s1".into(),
            targets: [(
                ARCH.as_str().to_owned(),
                upstream::BinaryTarget {
                    path: cdn::binary_path("k3s", "v1.31.4+k3s1", ARCH),
                    sha256: sha256_hex(binary_bytes),
                },
            )]
            .into(),
            install_dir: Some("kernel".into()),
        }],
    };
    let mut value = serde_json::to_value(&manifest).unwrap();
    // Fields a later minor may add, at every level.
    value["signing"] = serde_json::json!({ "key_id": "ABCD" });
    value["targets"][ARCH.as_str()]["firmware"] = serde_json::json!(null);
    value["binaries"][0]["targets"][ARCH.as_str()]["size"] = serde_json::json!(binary_bytes.len());
    value["binaries"][0]["license"] = serde_json::json!("Apache-2.0");
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn our_client_installs_manifests_written_the_way_upstream_writes_them() {
    let fixture = Fixture::new();
    let text = upstream_written_manifest(&fixture);
    assert!(text.contains("\"runtime\"") && text.contains("\"v0.0.19\""), "{text}");
    fixture.serve_manifest_text(&text);

    let home = tempfile::tempdir().unwrap();
    let bin_dir = home.path().join("runtime/bin");
    let manager = fixture.manager();
    let prepared = manager.prepare().unwrap();
    fixture.assert_installed();
    let installed = manager.prepare_binaries(&bin_dir).unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].path, home.path().join("runtime/kernel/k3s"));
    assert_eq!(
        std::fs::read(&installed[0].path).unwrap(),
        b"#!/bin/sh\necho from upstream\n"
    );

    // The legacy runtime image is data, kept but never downloaded.
    let target = &prepared.manifest.targets[&ARCH];
    assert_eq!(target.kernel.version, "v0.0.19");
    assert_eq!(
        target.runtime.as_ref().map(|r| r.path.as_str()),
        Some(format!("asset/v{VERSION}/{ARCH}/runtime.erofs").as_str())
    );
    assert!(
        !fixture
            .server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("runtime.erofs")),
        "the legacy runtime image was requested"
    );
    // The cached manifest is the bytes upstream wrote; a read-modify-write keeps `runtime`.
    let cached = std::fs::read(fixture.version_dir().join(cdn::MANIFEST_FILE)).unwrap();
    assert_eq!(cached, text.as_bytes());
    let rewritten = Manifest::from_json(&cached).unwrap().to_json_pretty();
    assert!(rewritten.contains("\"runtime\""), "{rewritten}");
    // Our producer side stays strict: the same manifest is not something we would write.
    let strict = Manifest::from_json_strict(&cached).unwrap_err().to_string();
    assert!(strict.contains("is not a field of the contract"), "{strict}");
}

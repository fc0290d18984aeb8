//! Refused inputs and the lock: a tampered cached package, a wrong locked digest, a recipe naming
//! a missing file, an image over budget, `--update-lock`, and the flags `--help` documents.

use super::{build_fails, builds_lock, warm_cache_copy, xtask_on_cache_copy};
use crate::support::{cached_download, project_root, run_ok, stdout_of, xtask};

/// The locked sha256 of package `name` for the Debian arch `for_arch`, read with the `toml` crate.
fn lock_entry_sha(name: &str, for_arch: &str) -> String {
    let text = std::fs::read_to_string(project_root().join("manifests/rootfs.lock")).unwrap();
    let lock: toml::Table = toml::from_str(&text).unwrap();
    let field = |package: &toml::Value, key: &str| package[key].as_str().unwrap().to_owned();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .find(|package| field(package, "name") == name && field(package, "for_arch") == for_arch)
        .map(|package| field(package, "sha256"))
        .unwrap_or_else(|| panic!("{name} ({for_arch}) is not in the lock"))
}

#[test]
fn a_tampered_cached_package_file_fails_naming_package_and_file() {
    let dir = warm_cache_copy();
    let sha = lock_entry_sha("ethtool", "amd64");
    let cached = cached_download(&dir.path().join("cache"), &sha);
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

/// A build from a warm cache copy with the checked-in `manifests/{file}` replaced by `edit` of
/// it, passed as `flag`: it must fail; returns its stderr.
fn build_with_edited_manifest_fails(file: &str, flag: &str, edit: impl FnOnce(&str) -> String) -> String {
    let dir = warm_cache_copy();
    let edited = dir.path().join(file);
    let text = std::fs::read_to_string(project_root().join("manifests").join(file)).unwrap();
    std::fs::write(&edited, edit(&text)).unwrap();
    build_fails(dir.path(), &[flag, edited.to_str().unwrap()])
}

#[test]
fn a_wrong_lock_digest_fails_naming_the_package() {
    let good = lock_entry_sha("ethtool", "amd64");
    let stderr = build_with_edited_manifest_fails("rootfs.lock", "--lock", |lock| lock.replace(&good, &"0".repeat(64)));
    assert!(
        stderr.contains("package ethtool 1:6.1-1 (amd64): apt-get downloaded no file with the locked sha256 0000"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256 {good}")),
        "the error shows what was downloaded: {stderr}"
    );
}

#[test]
fn a_recipe_naming_a_missing_file_fails_naming_package_and_file() {
    let stderr = build_with_edited_manifest_fails("rootfs.toml", "--recipe", |recipe| {
        let broken = recipe.replace(
            r#"files = [{ from = "sbin/ethtool", to = "sbin/ethtool" }]"#,
            r#"files = [{ from = "sbin/ethtool-missing", to = "sbin/ethtool" }]"#,
        );
        assert_ne!(broken, recipe, "the recipe's ethtool rule changed: update this test");
        broken
    });
    assert!(
        stderr.contains("package ethtool 1:6.1-1 (amd64) has no file /sbin/ethtool-missing"),
        "{stderr}"
    );
}

#[test]
fn an_image_over_budget_fails_naming_the_largest_contributors() {
    let stderr = build_with_edited_manifest_fails("rootfs.toml", "--recipe", |recipe| {
        regex_free_replace_budget(recipe, 1_000_000)
    });
    assert!(
        stderr.contains("over the recipe's size_budget_bytes of 1000000"),
        "{stderr}"
    );
    assert!(stderr.contains("/bin/busybox  (busybox)"), "{stderr}");
}

/// The e2fsck the image would ship without our fix (the recipe's patch folder dropped, so
/// e2fsprogs is built as Debian ships it) exits 0 on the damaged filesystem: the build fails
/// naming the check and writes nothing.
#[test]
fn an_unfixed_e2fsck_fails_the_build_naming_the_regression_check() {
    let stderr = build_with_edited_manifest_fails("rootfs.toml", "--recipe", |recipe| {
        let unfixed = recipe.replace("patches = \"manifests/patches/e2fsprogs\"\n", "");
        assert_ne!(
            unfixed, recipe,
            "the recipe's e2fsprogs patches line changed: update this test"
        );
        unfixed
    });
    assert!(
        stderr.contains("the e2fsck regression check failed for the /sbin/e2fsck about to ship"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exited Some(0), not exactly 4: it does not report damage"),
        "{stderr}"
    );
    assert!(stderr.contains("IGNORED"), "e2fsck's own words are shown: {stderr}");
}

fn regex_free_replace_budget(recipe: &str, budget: u64) -> String {
    recipe
        .lines()
        .map(|line| {
            if line.starts_with("size_budget_bytes = ") {
                format!("size_budget_bytes = {{ arm64 = {budget}, x86_64 = {budget} }}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        let _guard = builds_lock();
        run_ok(
            xtask_on_cache_copy(dir.path())
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

#[test]
fn the_rootfs_help_documents_every_flag() {
    let help = stdout_of(xtask().args(["rootfs", "--help"]));
    for flag in ["--arch", "--output", "--update-lock", "--recipe", "--lock"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

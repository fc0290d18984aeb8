//! `publish --remote` with a remote that rclone defines only from its environment.

use std::path::Path;
use std::process::Command;

use crate::publish_support::{publish_setup, publish_to_remote, stderr_of, Cdn, Keys, BUCKET};
use crate::support::{run_fails, run_ok};

/// `cargo xtask publish --remote {remote}` with the remote defined only by rclone's own
/// `RCLONE_CONFIG_{NAME}_*` variables (no config file, no BOOT_ASSETS_S3_ENDPOINT).
fn publish_to_env_remote(cdn: &Cdn, dist: &Path, keys: &Keys, env_name: &str, remote: &str) -> Command {
    let mut command = publish_to_remote(dist, "0.2.0", keys, remote, &cdn.url());
    command
        .arg("--signing-key")
        .arg(&keys.secret)
        .env("RCLONE_CONFIG", "/dev/null")
        .env(format!("RCLONE_CONFIG_{env_name}_TYPE"), "s3")
        .env(format!("RCLONE_CONFIG_{env_name}_PROVIDER"), "Other")
        .env(format!("RCLONE_CONFIG_{env_name}_ENV_AUTH"), "true")
        .env(format!("RCLONE_CONFIG_{env_name}_ENDPOINT"), cdn.s3.endpoint())
        .env(format!("RCLONE_CONFIG_{env_name}_FORCE_PATH_STYLE"), "true")
        .env_remove("BOOT_ASSETS_S3_ENDPOINT");
    command
}

#[test]
fn a_remote_rclone_defines_from_its_environment_is_accepted_in_any_letter_case() {
    let (_work, cdn, keys, dist) = publish_setup("0.2.0");

    // rclone lists this remote as `mixedcase:` yet resolves `MixedCase:` to it; publish asks rclone.
    let listed = run_ok(
        std::process::Command::new("rclone")
            .arg("listremotes")
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_MIXEDCASE_TYPE", "s3"),
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "mixedcase:");

    // A name rclone does not know fails with rclone's own reason and how to define it; nothing is uploaded.
    let err = run_fails(&mut publish_to_env_remote(
        &cdn,
        &dist,
        &keys,
        "MIXEDCASE",
        &format!("Other:{BUCKET}"),
    ));
    assert!(
        err.contains("--remote Other:boot-assets: rclone does not know a remote named \"Other\" (Failed to backend: didn't find section in config file (\"Other\"))"),
        "{err}"
    );
    assert!(err.contains("RCLONE_CONFIG_OTHER_TYPE"), "{err}");
    assert!(cdn.snapshot().is_empty());

    let output = run_ok(&mut publish_to_env_remote(
        &cdn,
        &dist,
        &keys,
        "MIXEDCASE",
        &format!("MixedCase:{BUCKET}"),
    ));
    assert!(
        stderr_of(&output).contains("publish: verified v0.2.0"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
    assert!(cdn.object("asset/v0.2.0/manifest.json.minisig").is_some());
}

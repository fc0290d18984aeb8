//! `cargo xtask keygen`, and where `publish` takes its signing key from.

use std::os::unix::fs::PermissionsExt;

use crate::publish_support::{keygen, publish_setup, stderr_of};
use crate::support::{run_fails, run_ok, xtask};

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let work = tempfile::tempdir().unwrap();
    let keys = keygen(work.path());
    let mode = std::fs::metadata(&keys.secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(&keys.public).unwrap();
    assert!(public.starts_with("untrusted comment: minisign public key"), "{public}");
    let output = run_fails(
        xtask()
            .arg("keygen")
            .arg("--output")
            .arg(keys.secret.with_extension("")),
    );
    assert!(
        output.contains("already exists: keygen never overwrites a key"),
        "{output}"
    );
    assert_eq!(std::fs::read_to_string(&keys.public).unwrap(), public);
}

#[test]
fn the_signing_key_comes_from_the_environment_and_is_never_printed() {
    let (_work, cdn, keys, dist) = publish_setup("0.2.0");
    let secret = std::fs::read_to_string(&keys.secret).unwrap();
    let secret_line = secret.lines().nth(1).unwrap().to_owned();

    // A CDN URL users could not download from is refused before anything is uploaded.
    let err = run_fails(&mut cdn.publish_via(&dist, "0.2.0", &keys, "http://cdn.example.com"));
    assert!(
        err.contains("--cdn http://cdn.example.com: refusing plain-http URL"),
        "{err}"
    );
    assert!(cdn.snapshot().is_empty());

    // Without any key, nothing is uploaded and the error says how to give one.
    let err = run_fails(&mut cdn.publish_unsigned(&dist, "0.2.0", &keys, &cdn.url()));
    assert!(
        err.contains("no signing key: pass --signing-key FILE or put the key file's text in BOOT_ASSETS_SIGNING_KEY"),
        "{err}"
    );
    assert!(cdn.snapshot().is_empty());

    let output = run_ok(
        cdn.publish_unsigned(&dist, "0.2.0", &keys, &cdn.url())
            .env("BOOT_ASSETS_SIGNING_KEY", &secret),
    );
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr_of(&output));
    assert!(!printed.contains(&secret_line), "the secret key was printed");
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
}

//! Signature interop: manifests signed with Debian's `minisign` CLI verify in the AssetManager;
//! a flipped byte in the manifest or in the signature, a different key, or no signature at all
//! is refused before any asset is requested.

use std::path::{Path, PathBuf};
use std::process::Command;

use boot_assets::asset_manager::AssetError;
use boot_assets::cdn;

use crate::cdn_fixture::{rootfs_path, Fixture, VERSION};
use crate::support::{self, run_ok};

/// A minisign key pair made by the real CLI, without a password.
pub(crate) struct KeyPair {
    pub(crate) public: PathBuf,
    pub(crate) secret: PathBuf,
}

fn minisign() -> PathBuf {
    support::require_tool("minisign")
}

pub(crate) fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let pair = KeyPair {
        public: dir.join(format!("{name}.pub")),
        secret: dir.join(format!("{name}.key")),
    };
    run_ok(
        Command::new(minisign())
            .args(["-G", "-W", "-p"])
            .arg(&pair.public)
            .arg("-s")
            .arg(&pair.secret)
            .stdin(std::process::Stdio::null()),
    );
    pair
}

/// Signs `bytes` with the CLI and returns the `.minisig` text.
pub(crate) fn sign(pair: &KeyPair, bytes: &[u8], dir: &Path) -> String {
    let file = dir.join(cdn::MANIFEST_FILE);
    std::fs::write(&file, bytes).unwrap();
    run_ok(
        Command::new(minisign())
            .args(["-S", "-s"])
            .arg(&pair.secret)
            .arg("-m")
            .arg(&file)
            .stdin(std::process::Stdio::null()),
    );
    std::fs::read_to_string(dir.join(cdn::signature_path(cdn::MANIFEST_FILE))).unwrap()
}

fn signature_path() -> String {
    cdn::manifest_signature_path(VERSION)
}

/// A fresh fixture whose manifest is signed by a fresh key pair made by the CLI.
pub(crate) struct SignedFixture {
    /// Holds the key pair and the files the CLI signs.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pair: KeyPair,
    pub(crate) fixture: Fixture,
    /// The manifest text that was signed.
    pub(crate) manifest: String,
    /// The manifest's `.minisig` text, served beside it.
    pub(crate) signature: String,
}

impl SignedFixture {
    /// A fresh fixture, its manifest signed by a fresh key pair named `name`.
    pub(crate) fn new(name: &str) -> SignedFixture {
        let dir = tempfile::tempdir().unwrap();
        let pair = key_pair(dir.path(), name);
        let fixture = Fixture::new();
        let manifest = fixture.manifest.to_json_pretty();
        let signature = sign(&pair, manifest.as_bytes(), dir.path());
        fixture.server.put(&signature_path(), signature.clone());
        SignedFixture {
            dir,
            pair,
            fixture,
            manifest,
            signature,
        }
    }

    /// The public key's text, as a client that trusts it is given it.
    pub(crate) fn public_key(&self) -> String {
        std::fs::read_to_string(&self.pair.public).unwrap()
    }
}

fn prepare_with_key(fixture: &Fixture, pair: &KeyPair) -> Result<(), AssetError> {
    let key = std::fs::read_to_string(&pair.public).unwrap();
    fixture.builder().trusted_public_key(key).build()?.prepare().map(|_| ())
}

/// Asserts that a prepare trusting `pair`'s key is refused for a signature reason containing
/// `reason`, before any asset is requested and without keeping the manifest.
fn assert_refused(fixture: &Fixture, pair: &KeyPair, reason: &str) {
    let error = prepare_with_key(fixture, pair).unwrap_err();
    assert!(matches!(error, AssetError::Signature { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(reason), "{text:?} does not contain {reason:?}");
    assert!(
        fixture.server.requests_for(&rootfs_path()).is_empty(),
        "an asset was requested"
    );
    assert!(
        !fixture.version_dir().join(cdn::MANIFEST_FILE).exists(),
        "a refused manifest was kept"
    );
}

#[test]
fn manifest_signed_by_the_cli_verifies() {
    let signed = SignedFixture::new("release");
    let (fixture, pair) = (&signed.fixture, &signed.pair);
    prepare_with_key(fixture, pair).unwrap();
    fixture.assert_installed();
    let kept = fixture.version_dir().join(cdn::signature_path(cdn::MANIFEST_FILE));
    assert_eq!(std::fs::read_to_string(kept).unwrap(), signed.signature);

    // Warm, the stored signature is checked again and nothing is fetched.
    let before = fixture.server.requests().len();
    prepare_with_key(fixture, pair).unwrap();
    assert_eq!(fixture.server.requests().len(), before);

    // The CLI takes the key file as it is.
    let fresh = tempfile::tempdir().unwrap();
    let output = run_ok(
        fixture
            .fetch_command(fresh.path())
            .arg("--public-key")
            .arg(&pair.public),
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("version\t{VERSION}")));
}

#[test]
fn a_flipped_byte_in_the_manifest_is_refused() {
    let signed = SignedFixture::new("release");
    // Still a valid manifest, so only the signature can refuse it.
    let tampered = signed.manifest.replacen("2026-03-03", "2027-03-03", 1);
    assert_ne!(tampered, signed.manifest);
    signed.fixture.serve_manifest_text(&tampered);
    assert_refused(
        &signed.fixture,
        &signed.pair,
        "not signed by any of the 1 trusted key(s)",
    );
}

#[test]
fn a_flipped_byte_in_the_signature_is_refused() {
    let signed = SignedFixture::new("release");
    let mut lines: Vec<String> = signed.signature.lines().map(str::to_owned).collect();
    // Line 2 is the signature itself; change one base64 digit in its Ed25519 part.
    let mut digits: Vec<char> = lines[1].chars().collect();
    let at = 40;
    digits[at] = if digits[at] == 'A' { 'B' } else { 'A' };
    lines[1] = digits.into_iter().collect();
    signed.fixture.server.put(&signature_path(), lines.join("\n") + "\n");
    assert_refused(&signed.fixture, &signed.pair, "signature of");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let signed = SignedFixture::new("signer");
    let trusted = key_pair(signed.dir.path(), "trusted");
    assert_refused(&signed.fixture, &trusted, "not signed by any of the 1 trusted key(s)");
}

#[test]
fn a_missing_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pair = key_pair(dir.path(), "release");
    let fixture = Fixture::new();
    assert_refused(&fixture, &pair, "HTTP status 404");
}

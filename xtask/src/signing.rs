//! Minisign (Ed25519, prehashed) signing of the unified manifest and of `latest.json`: key
//! generation, loading the secret key from a file or the environment, signing, and checking a
//! signature. Used by `keygen`, `publish` and `verify-published`; it imports no command.
//!
//! Pure functions over bytes and key text, plus [`load_secret_key`], which reads the key file or
//! the BOOT_ASSETS_SIGNING_KEY variable. Key material is never printed: errors name where the
//! key came from, never what it holds.

use std::path::Path;

use anyhow::{bail, Context, Result};
use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox, SignatureBox};

/// The environment variable that may hold the secret key file's text (for CI secrets).
pub const SIGNING_KEY_ENV: &str = "BOOT_ASSETS_SIGNING_KEY";

/// Untrusted comment of a generated secret key file.
const SECRET_KEY_COMMENT: &str = "boot-assets release signing key (unencrypted: keep it secret)";

/// Untrusted comment of a manifest signature (not covered by the signature).
const SIGNATURE_UNTRUSTED_COMMENT: &str = "signature of a boot-assets manifest";

/// A freshly generated key pair, as the text of its two files.
pub struct GeneratedKeys {
    /// The secret key file (minisign format, unencrypted).
    pub secret_key_file: String,
    /// The public key file (minisign format).
    pub public_key_file: String,
    /// The key id, as minisign prints it (16 upper-case hex digits).
    pub key_id: String,
}

/// Generates an unencrypted minisign key pair (CI signs without a password prompt).
pub fn generate() -> Result<GeneratedKeys> {
    let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair().context("generating a minisign key pair")?;
    let secret_key_file = sk
        .to_box(Some(SECRET_KEY_COMMENT))
        .context("encoding the secret key")?
        .into_string();
    let public_key_file = pk.to_box().context("encoding the public key")?.into_string();
    Ok(GeneratedKeys {
        secret_key_file,
        public_key_file,
        key_id: key_id(&pk),
    })
}

/// The key id of a public key, as minisign prints it.
pub fn key_id(key: &PublicKey) -> String {
    let bytes: [u8; 8] = key.keynum().try_into().expect("a minisign key id has 8 bytes");
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// Parses a public key: a minisign `.pub` file's text, or just its base64 line. Which line is
/// the key is the library's rule (the AssetManager reads trusted keys with it); the signing
/// crate's key type is built from that line.
pub fn parse_public_key(text: &str, source: &str) -> Result<PublicKey> {
    PublicKey::from_base64(boot_assets::asset_manager::public_key_base64(text))
        .map_err(|e| anyhow::anyhow!("{source}: not a minisign public key: {e}"))
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<(PublicKey, String)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading public key {} (make one with `cargo xtask keygen`)",
            path.display()
        )
    })?;
    let key = parse_public_key(&text, &path.display().to_string())?;
    Ok((key, text))
}

/// Parses a secret key file's text; `source` says where it came from, for errors.
pub fn parse_secret_key(text: &str, source: &str) -> Result<SecretKey> {
    let sk_box = SecretKeyBox::from_string(text.trim())
        .map_err(|_| anyhow::anyhow!("{source}: not a minisign secret key file"))?;
    let key = sk_box
        .into_unencrypted_secret_key()
        .map_err(|_| anyhow::anyhow!("{source}: not a minisign secret key file"))?;
    if key.is_encrypted() {
        bail!(
            "{source}: the secret key is password-protected; publishing runs unattended, so use an unencrypted key (`cargo xtask keygen`)"
        );
    }
    Ok(key)
}

/// The secret key from `--signing-key FILE`, else from BOOT_ASSETS_SIGNING_KEY; `None` when
/// neither is given.
pub fn load_secret_key(file: Option<&Path>) -> Result<Option<SecretKey>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--signing-key {}: cannot read it", path.display()))?;
        return parse_secret_key(&text, &format!("--signing-key {}", path.display())).map(Some);
    }
    match std::env::var(SIGNING_KEY_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_secret_key(&text, SIGNING_KEY_ENV).map(Some),
        _ => Ok(None),
    }
}

/// The trusted comment of a manifest signature: it is signed too, so it binds the version and
/// the manifest digest, and `minisign -V` prints it.
pub fn trusted_comment(version: &str, manifest_sha256: &str) -> String {
    format!("boot-assets manifest v{version} sha256:{manifest_sha256}")
}

/// The trusted comment of the `latest.json` signature: it binds the version it points to.
pub fn latest_trusted_comment(version: &str) -> String {
    format!("boot-assets latest.json v{version}")
}

/// Signs `manifest` and checks the result against `public_key`, so a secret key that does not
/// belong to the trusted public key is caught before anything is uploaded.
pub fn sign(secret_key: &SecretKey, public_key: &PublicKey, manifest: &[u8], trusted: &str) -> Result<String> {
    let signature = minisign::sign(
        None,
        secret_key,
        std::io::Cursor::new(manifest),
        Some(trusted),
        Some(SIGNATURE_UNTRUSTED_COMMENT),
    )
    .context("signing the manifest")?
    .into_string();
    verify(public_key, manifest, signature.as_bytes()).with_context(|| {
        format!(
            "the signing key does not belong to the trusted public key {}: sign with the matching secret key, or check in the new public key",
            key_id(public_key)
        )
    })?;
    Ok(signature)
}

/// Checks that `signature` (a `.minisig` file's text) is a prehashed minisign signature of
/// `manifest` by `public_key`.
pub fn verify(public_key: &PublicKey, manifest: &[u8], signature: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(signature).context("the signature is not text")?;
    let signature_box = SignatureBox::from_string(text).map_err(|e| anyhow::anyhow!("malformed signature: {e}"))?;
    minisign::verify(
        public_key,
        &signature_box,
        std::io::Cursor::new(manifest),
        true,
        false,
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SecretKey, PublicKey, GeneratedKeys) {
        let generated = generate().unwrap();
        let sk = parse_secret_key(&generated.secret_key_file, "test").unwrap();
        let pk = parse_public_key(&generated.public_key_file, "test").unwrap();
        (sk, pk, generated)
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let (sk, pk, generated) = keys();
        assert!(generated.public_key_file.contains(&generated.key_id));
        let signature = sign(&sk, &pk, b"{\"x\":1}\n", &trusted_comment("0.2.0", "ab")).unwrap();
        assert!(signature.contains("trusted comment: boot-assets manifest v0.2.0 sha256:ab"));
        verify(&pk, b"{\"x\":1}\n", signature.as_bytes()).unwrap();
        assert!(verify(&pk, b"{\"x\":2}\n", signature.as_bytes()).is_err());
        // The base64 line alone is a key too.
        let line = generated.public_key_file.lines().nth(1).unwrap();
        assert_eq!(key_id(&parse_public_key(line, "line").unwrap()), generated.key_id);
    }

    #[test]
    fn a_foreign_secret_key_is_caught_before_upload() {
        let (sk, _, _) = keys();
        let (_, other_pk, other) = keys();
        let err = format!("{:#}", sign(&sk, &other_pk, b"m", "t").unwrap_err());
        assert!(
            err.contains(&format!("does not belong to the trusted public key {}", other.key_id)),
            "{err}"
        );
    }

    #[test]
    fn the_checked_in_public_key_parses() {
        let path = crate::util::project_root().join("manifests/minisign.pub");
        let (key, text) = read_public_key(&path).unwrap();
        assert!(text.contains(&key_id(&key)), "{text}");
    }

    #[test]
    fn bad_key_text_names_its_source_and_not_its_content() {
        let err = parse_secret_key("untrusted comment: x\nc2VjcmV0LXN0dWZm\n", "BOOT_ASSETS_SIGNING_KEY")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "BOOT_ASSETS_SIGNING_KEY: not a minisign secret key file");
        let err = parse_public_key("nope", "manifests/minisign.pub")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("manifests/minisign.pub: not a minisign public key"),
            "{err}"
        );
    }
}

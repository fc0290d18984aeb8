//! Manifest trust: minisign (Ed25519) signatures of `manifest.json`, checked against the
//! caller's trusted public keys before the manifest is used.
//!
//! Pure functions over bytes: the keys as text (a minisign `.pub` file or its base64 line), the
//! manifest bytes, and the `.minisig` text.

use minisign_verify::{PublicKey, Signature};

use super::error::AssetError;

/// Parses a trusted key: the whole minisign `.pub` file, or just its base64 key line.
pub(crate) fn parse_public_key(text: &str) -> Result<PublicKey, AssetError> {
    let trimmed = text.trim();
    let parsed = if trimmed.contains('\n') {
        PublicKey::decode(trimmed)
    } else {
        PublicKey::from_base64(trimmed)
    };
    parsed.map_err(|e| {
        AssetError::Config(format!(
            "public key {trimmed:?} is not a minisign public key (a .pub file or its base64 line): {e}"
        ))
    })
}

/// Accepts `manifest` only if `signature_text` is a valid minisign signature of it by one of
/// `keys`. Legacy (non-prehashed) signatures are refused: minisign has not made them by
/// default since 0.9, and refusing them closes a downgrade path.
pub(crate) fn verify(keys: &[PublicKey], manifest: &[u8], signature_text: &[u8], url: &str) -> Result<(), AssetError> {
    let refuse = |reason: String| AssetError::Signature {
        url: url.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(signature_text).map_err(|_| refuse("the .minisig file is not text".into()))?;
    let signature = Signature::decode(text).map_err(|e| refuse(format!("the .minisig file is malformed: {e}")))?;
    let mut reasons = Vec::new();
    for key in keys {
        match key.verify(manifest, &signature, false) {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(refuse(format!(
        "not signed by any of the {} trusted key(s) ({})",
        keys.len(),
        reasons.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_text_is_a_config_error() {
        let err = parse_public_key("not a key").unwrap_err().to_string();
        assert!(err.contains("is not a minisign public key"), "{err}");
    }

    #[test]
    fn garbage_signature_is_refused_naming_the_url() {
        let key = parse_public_key("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3").unwrap();
        let err = verify(&[key], b"{}", b"garbage", "http://127.0.0.1/m.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("signature of http://127.0.0.1/m.json: the .minisig file is malformed"),
            "{err}"
        );
    }
}

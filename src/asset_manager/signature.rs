//! Manifest trust: minisign (Ed25519) signatures of `manifest.json`, checked against the
//! caller's trusted public keys before the manifest is used.
//!
//! Pure functions over bytes: the keys as text (a minisign `.pub` file or its base64 line), the
//! manifest bytes, and the `.minisig` text.

use minisign_verify::{PublicKey, Signature};

use super::error::AssetError;

/// The base64 key line of a public key's text: the line after the untrusted comment of a whole
/// minisign `.pub` file, or the text itself when it is that line alone. This is the one rule for
/// reading key text; xtask builds its signing-side key from the same line.
pub fn public_key_base64(text: &str) -> &str {
    let trimmed = text.trim();
    match trimmed.split_once('\n') {
        Some((_untrusted_comment, rest)) => rest.lines().next().unwrap_or_default().trim(),
        None => trimmed,
    }
}

/// Parses a trusted key: the whole minisign `.pub` file, or just its base64 key line.
pub(crate) fn parse_public_key(text: &str) -> Result<PublicKey, AssetError> {
    let trimmed = text.trim();
    PublicKey::from_base64(public_key_base64(text)).map_err(|e| {
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
    fn the_key_line_is_the_line_after_the_comment() {
        let line = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        assert_eq!(public_key_base64(&format!("untrusted comment: k\n{line}\n")), line);
        assert_eq!(public_key_base64(&format!(" {line}\n")), line);
        assert!(parse_public_key(&format!("untrusted comment: k\n{line}\n")).is_ok());
        assert!(parse_public_key("untrusted comment: k\n").is_err());
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

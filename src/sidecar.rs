//! The `sha256sum` sidecar format: `{hex}  {file name}\n` (two spaces), as written next to every
//! release tarball and checked with `sha256sum -c`.
//!
//! Pure functions: [`format()`] renders one line, [`parse()`] reads one back.

use crate::manifest::is_sha256_hex;

/// An error in a sidecar's text; the message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sha256 sidecar: {0}")]
pub struct SidecarError(String);

/// One line in `sha256sum` text mode: digest, two spaces, file name, newline.
pub fn format(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

/// Reads a one-entry sidecar back into `(sha256, file name)`.
///
/// Accepts the text-mode (`  `) and binary-mode (` *`) separators that `sha256sum` writes.
pub fn parse(text: &str) -> Result<(String, String), SidecarError> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let line = lines
        .next()
        .ok_or_else(|| SidecarError("file is empty; expected `<64 hex>  <file name>`".into()))?;
    if lines.next().is_some() {
        return Err(SidecarError("expected exactly one line, found more".into()));
    }
    let (digest, rest) = line
        .split_once(' ')
        .ok_or_else(|| SidecarError(format!("no separator in {line:?}; expected `<64 hex>  <file name>`")))?;
    let name = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .ok_or_else(|| SidecarError(format!("expected two spaces after the digest in {line:?}")))?;
    if !is_sha256_hex(digest) {
        return Err(SidecarError(format!(
            "digest {digest:?} is not 64 lowercase hex digits"
        )));
    }
    if name.is_empty() || name.contains('/') {
        return Err(SidecarError(format!(
            "file name {name:?} must be a plain, non-empty file name"
        )));
    }
    Ok((digest.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trips() {
        let text = format(HEX, "boot-assets-arm64-v0.2.0.tar.gz");
        assert_eq!(text, format!("{HEX}  boot-assets-arm64-v0.2.0.tar.gz\n"));
        assert_eq!(
            parse(&text).unwrap(),
            (HEX.to_owned(), "boot-assets-arm64-v0.2.0.tar.gz".to_owned())
        );
    }

    #[test]
    fn accepts_binary_mode() {
        assert_eq!(parse(&format!("{HEX} *a.tgz\n")).unwrap().1, "a.tgz");
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse("").unwrap_err().to_string().contains("empty"));
        assert!(parse("abc  x\n")
            .unwrap_err()
            .to_string()
            .contains("\"abc\" is not 64 lowercase hex"));
        assert!(parse(&format!("{HEX} x"))
            .unwrap_err()
            .to_string()
            .contains("two spaces"));
        assert!(parse(&format!("{HEX}  a\n{HEX}  b\n"))
            .unwrap_err()
            .to_string()
            .contains("exactly one line"));
        assert!(parse(&format!("{HEX}  ../a\n"))
            .unwrap_err()
            .to_string()
            .contains("plain"));
    }
}

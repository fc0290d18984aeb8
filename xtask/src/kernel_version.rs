//! Reads the Linux version out of a kernel image, so `release` does not need to be told it.
//!
//! Pure functions over the image bytes: the x86 boot protocol's version string of a bzImage,
//! else the `Linux version …` banner that an uncompressed arm64 `Image` carries.

/// Offset of the boot protocol's `HdrS` magic in a bzImage.
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;

/// The boot protocol's magic.
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";

/// Offset of the 16-bit pointer to the kernel version string (boot protocol 2.00+).
const BZIMAGE_VERSION_POINTER_OFFSET: usize = 0x20e;

/// The version pointer counts from this offset (the start of the real-mode setup code).
const BZIMAGE_VERSION_POINTER_BASE: usize = 0x200;

/// The banner every kernel carries in its (uncompressed) data.
const LINUX_BANNER: &[u8] = b"Linux version ";

/// The Linux version of a kernel image, e.g. `6.1.158`, or `None` when the image does not say.
pub fn detect(image: &[u8]) -> Option<String> {
    bzimage_version(image).or_else(|| banner_version(image))
}

fn bzimage_version(image: &[u8]) -> Option<String> {
    if image.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4)? != BZIMAGE_MAGIC {
        return None;
    }
    let pointer = image.get(BZIMAGE_VERSION_POINTER_OFFSET..BZIMAGE_VERSION_POINTER_OFFSET + 2)?;
    let pointer = u16::from_le_bytes([pointer[0], pointer[1]]) as usize;
    if pointer == 0 {
        return None;
    }
    first_version_token(image.get(pointer + BZIMAGE_VERSION_POINTER_BASE..)?)
}

fn banner_version(image: &[u8]) -> Option<String> {
    image
        .windows(LINUX_BANNER.len())
        .enumerate()
        .filter(|(_, window)| *window == LINUX_BANNER)
        .find_map(|(start, _)| first_version_token(&image[start + LINUX_BANNER.len()..]))
}

/// The first whitespace-delimited token, if it looks like a kernel release (`6.1.158-x`).
fn first_version_token(text: &[u8]) -> Option<String> {
    let end = text
        .iter()
        .position(|&b| b == 0 || b.is_ascii_whitespace())
        .unwrap_or(text.len().min(64));
    let token = std::str::from_utf8(&text[..end]).ok()?;
    let looks_like_release = token.len() <= 64
        && token.starts_with(|c: char| c.is_ascii_digit())
        && token.contains('.')
        && token.chars().all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c));
    looks_like_release.then(|| token.to_owned())
}

/// A minimal bzImage header carrying `version_string`, for tests and fixtures.
#[cfg(test)]
pub fn fake_bzimage(version_string: &str) -> Vec<u8> {
    let mut image = vec![0u8; 0x400];
    let pointer = (image.len() - BZIMAGE_VERSION_POINTER_BASE) as u16;
    image[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4].copy_from_slice(BZIMAGE_MAGIC);
    image[BZIMAGE_VERSION_POINTER_OFFSET..BZIMAGE_VERSION_POINTER_OFFSET + 2].copy_from_slice(&pointer.to_le_bytes());
    image.extend_from_slice(version_string.as_bytes());
    image.push(0);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bzimage_boot_protocol_string() {
        let image = fake_bzimage("6.1.158 (builder@boot-assets) #1 SMP PREEMPT_DYNAMIC");
        assert_eq!(detect(&image).as_deref(), Some("6.1.158"));
    }

    #[test]
    fn reads_arm64_banner() {
        let mut image = vec![0u8; 4096];
        image.extend_from_slice(b"Linux version 6.12.8-arcbox (gcc 12) #1 SMP\n");
        assert_eq!(detect(&image).as_deref(), Some("6.12.8-arcbox"));
    }

    #[test]
    fn skips_a_banner_format_string() {
        let mut image = b"Linux version %s (%s)\0".to_vec();
        image.extend_from_slice(b"Linux version 6.1.0 (x)");
        assert_eq!(detect(&image).as_deref(), Some("6.1.0"));
    }

    #[test]
    fn nothing_found_in_arbitrary_bytes() {
        assert_eq!(detect(b"not a kernel"), None);
        assert_eq!(detect(&[0u8; 0x300]), None);
    }
}

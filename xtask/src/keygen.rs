//! `cargo xtask keygen`: generates the minisign key pair that signs published manifests.
//!
//! Writes `PREFIX.key` (secret, unencrypted so CI can sign unattended, mode 0600 from the
//! moment it exists) and `PREFIX.pub`; refuses to overwrite either. Prints the key id and where
//! the files went, never the secret key.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::flags;
use crate::signing;

/// Mode of the secret key file: readable by its owner only.
const SECRET_KEY_MODE: u32 = 0o600;

impl flags::Keygen {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let (secret_path, public_path) = key_paths(&self.output);
        for path in [&secret_path, &public_path] {
            if path.exists() {
                bail!(
                    "{} already exists: keygen never overwrites a key; choose another --output",
                    path.display()
                );
            }
        }
        if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        }
        let keys = signing::generate()?;
        boot_assets::fsutil::write_atomic_with(&secret_path, |file| {
            file.set_permissions(std::fs::Permissions::from_mode(SECRET_KEY_MODE))?;
            file.write_all(keys.secret_key_file.as_bytes())
        })
        .with_context(|| format!("writing {}", secret_path.display()))?;
        crate::util::write_atomic(&public_path, keys.public_key_file.as_bytes())?;
        eprintln!(
            "keygen: key id {}\n  secret key: {} (mode 0600; store it as the BOOT_ASSETS_SIGNING_KEY secret, never in the repository)\n  public key: {} (check it in as manifests/minisign.pub)",
            keys.key_id,
            secret_path.display(),
            public_path.display()
        );
        Ok(())
    }
}

/// `PREFIX.key` and `PREFIX.pub`.
fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with_suffix = |suffix: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    (with_suffix(".key"), with_suffix(".pub"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_append_suffixes() {
        let (secret, public) = key_paths(Path::new("keys/boot-assets.v1"));
        assert_eq!(secret, Path::new("keys/boot-assets.v1.key"));
        assert_eq!(public, Path::new("keys/boot-assets.v1.pub"));
    }
}

//! A locked source package unpacked into a directory, Debian's patches applied (`dpkg-source -x`,
//! which also checks every file against the `.dsc`), then ours from a folder of the repository.
//!
//! Reads the cached source files ([`super::fetch::fetch_source`]) and `*.patch` files of the
//! patches folder in name order; writes only below the destination directory given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::fetch::fetch_source;
use super::lock::LockedSource;

/// The host tools unpacking and patching need.
const REQUIRED_TOOLS: [&str; 2] = ["dpkg-source", "patch"];

/// The suffix of our patch files.
const PATCH_SUFFIX: &str = ".patch";

/// Our patches for one source package: the `*.patch` files of `dir`, sorted by name; an absent
/// folder means none.
pub fn patches_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut patches = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = item?.path();
        if path.to_string_lossy().ends_with(PATCH_SUFFIX) {
            patches.push(path);
        }
    }
    patches.sort();
    Ok(patches)
}

/// Unpacks `source` into `{dest}/{name}-{upstream version}` and applies `patches` there in order;
/// returns the tree. `dest` must not hold that tree yet. A patch that does not apply fails
/// naming it and the package.
pub fn unpack_source(
    sh: &Shell,
    source: &LockedSource,
    deb_arch: &str,
    patches: &[PathBuf],
    dest: &Path,
    update_hint: &str,
) -> Result<PathBuf> {
    crate::tools::require_all(&REQUIRED_TOOLS)?;
    let cached = fetch_source(sh, source, deb_arch, update_hint)?;
    // dpkg-source finds the tarballs beside the .dsc by their names; the .dsc itself is a copy
    // that lists only the locked files (see SIGNATURE_SUFFIX).
    let files = tempfile::tempdir().context("creating a directory for the source files")?;
    let dsc_text = std::fs::read_to_string(&cached[0]).with_context(|| format!("reading {}", cached[0].display()))?;
    let kept: Vec<&str> = source.files.iter().map(|file| file.filename.as_str()).collect();
    std::fs::write(
        files.path().join(&source.dsc().filename),
        dsc_listing_only(&dsc_text, &kept),
    )
    .context("writing the .dsc copy")?;
    for (file, path) in source.files.iter().zip(&cached).skip(1) {
        let link = files.path().join(&file.filename);
        std::fs::hard_link(path, &link)
            .or_else(|_| std::fs::copy(path, &link).map(|_| ()))
            .with_context(|| format!("placing {} beside the .dsc", file.filename))?;
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let tree = dest.join(format!("{}-{}", source.name, upstream_version(&source.version)));
    if tree.exists() {
        bail!("{} exists already: unpack into an empty directory", tree.display());
    }
    let dsc = files.path().join(&source.dsc().filename);
    let output = cmd!(sh, "dpkg-source --no-copy --require-strong-checksums -x {dsc} {tree}")
        .quiet()
        .ignore_status()
        .output()?;
    if !output.status.success() {
        bail!(
            "dpkg-source could not unpack {}:\n{}",
            source.describe(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    for patch in patches {
        apply_patch(sh, &tree, patch).with_context(|| format!("patching {}", source.describe()))?;
    }
    Ok(tree)
}

/// The `.dsc` text without its inline signature and without the checksum lines of files not in
/// `kept` (the upstream tarball signatures the archive does not serve). The other lines, the
/// digests dpkg-source checks among them, are unchanged.
pub fn dsc_listing_only(dsc: &str, kept: &[&str]) -> String {
    let body = match dsc.split_once("\n\n") {
        Some((armor, body)) if armor.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") => body,
        _ => dsc,
    };
    let body = body.split("\n-----BEGIN PGP SIGNATURE-----").next().unwrap_or(body);
    let mut text = String::new();
    for line in body.lines() {
        let names_a_file = line.starts_with(' ') && line.split_whitespace().count() == 3;
        let file = line.split_whitespace().last().unwrap_or("");
        if names_a_file && !kept.contains(&file) && line.contains('.') {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Applies one `-p1` patch to `tree`, refusing fuzz and already-applied hunks.
fn apply_patch(sh: &Shell, tree: &Path, patch: &Path) -> Result<()> {
    let output = cmd!(
        sh,
        "patch --directory={tree} --strip=1 --forward --batch --fuzz=0 --no-backup-if-mismatch --input={patch}"
    )
    .quiet()
    .ignore_status()
    .output()?;
    if !output.status.success() {
        bail!(
            "{} does not apply:\n{}",
            patch.display(),
            String::from_utf8_lossy(&output.stdout).trim_end()
        );
    }
    Ok(())
}

/// A Debian version without its epoch and Debian revision (`1:2.1.9-1` → `2.1.9`), how
/// `dpkg-source` names the upstream tree.
pub fn upstream_version(version: &str) -> &str {
    let without_epoch = version.split_once(':').map_or(version, |(_, rest)| rest);
    without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(upstream, _)| upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dsc_copy_drops_the_signature_and_unlocked_files_only() {
        let dsc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: x\n\
                   Checksums-Sha256:\n 0a 10 x_1.orig.tar.gz\n 0b 4 x_1.orig.tar.gz.asc\n 0c 5 x_1-1.debian.tar.xz\n\
                   Files:\n 1a 10 x_1.orig.tar.gz\n 1b 4 x_1.orig.tar.gz.asc\n 1c 5 x_1-1.debian.tar.xz\n\
                   \n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        let copy = dsc_listing_only(dsc, &["x_1-1.dsc", "x_1.orig.tar.gz", "x_1-1.debian.tar.xz"]);
        assert_eq!(
            copy,
            "Format: 3.0 (quilt)\nSource: x\nChecksums-Sha256:\n 0a 10 x_1.orig.tar.gz\n 0c 5 x_1-1.debian.tar.xz\n\
             Files:\n 1a 10 x_1.orig.tar.gz\n 1c 5 x_1-1.debian.tar.xz\n"
        );
    }

    #[test]
    fn the_upstream_version_drops_epoch_and_revision() {
        assert_eq!(upstream_version("1:2.1.9~ds1-1"), "2.1.9~ds1");
        assert_eq!(upstream_version("1.47.2-3"), "1.47.2");
        assert_eq!(upstream_version("1.0"), "1.0");
    }

    #[test]
    fn patches_are_taken_in_name_order_and_a_missing_folder_has_none() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0002-b.patch", "0001-a.patch", "README"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = patches_in(dir.path())
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0001-a.patch", "0002-b.patch"]);
        assert!(patches_in(&dir.path().join("absent")).unwrap().is_empty());
    }
}

//! The rules of publishing, as pure functions over values: what to do with one object given what
//! the bucket already holds (immutability), whether `latest.json` may move (only forward), and
//! which GitHub release assets are missing.
//!
//! Nothing here touches the network or the disk; `publish/mod.rs` gathers the facts and acts.

use std::cmp::Ordering;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::flags::AssetVersion;

/// What the bucket holds at an object's path, as far as its content is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// No object at that path.
    Absent,
    /// An object whose sha256 is known: from its `sha256` metadata, or by downloading and hashing it.
    Present {
        /// 64 lowercase hex digits.
        sha256: String,
    },
}

/// What publishing does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not in the bucket yet: upload it.
    Upload,
    /// Already in the bucket with the same content: leave it alone.
    Skip,
}

/// Decides what to do with one immutable object. Sizes never count: only the digest of the
/// content does, and an object with other content is an error, never overwritten.
pub fn object_action(path: &str, local_sha256: &str, remote: &Remote) -> Result<Action> {
    match remote {
        Remote::Absent => Ok(Action::Upload),
        Remote::Present { sha256 } if sha256 == local_sha256 => Ok(Action::Skip),
        Remote::Present { sha256 } => bail!(
            "{path} is already published with other content (sha256 {sha256}, this release has {local_sha256}): \
             published objects are immutable, so publish these bytes under a new version"
        ),
    }
}

/// What to do with `latest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatestAction {
    /// Point it at the new version (it was absent, or named an older one).
    Write,
    /// It already names this version.
    AlreadyCurrent,
    /// It names a newer version, which stays.
    KeepNewer(String),
    /// The new version is a pre-release: users following `latest` never get one.
    KeepForPrerelease,
}

/// Decides whether `latest.json` moves from `current` (its version, when it exists) to `new`:
/// only forward by semver precedence (build metadata ignored), never to a pre-release.
pub fn latest_action(current: Option<&str>, new: &AssetVersion) -> Result<LatestAction> {
    let new_version = new.semver();
    if new.is_prerelease() {
        return Ok(LatestAction::KeepForPrerelease);
    }
    let Some(current) = current else {
        return Ok(LatestAction::Write);
    };
    let current_version = semver::Version::parse(current).map_err(|e| {
        anyhow::anyhow!(
            "latest.json in the bucket names {current:?}, which is not a semantic version ({e}): fix it by hand before publishing"
        )
    })?;
    Ok(match new_version.cmp_precedence(&current_version) {
        Ordering::Greater => LatestAction::Write,
        Ordering::Equal => LatestAction::AlreadyCurrent,
        Ordering::Less => LatestAction::KeepNewer(current.to_owned()),
    })
}

/// One asset of the GitHub release as `gh release view --json assets` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GithubAsset {
    /// The asset's file name.
    pub name: String,
    /// `sha256:<hex>` when GitHub reports a digest (newer gh and GitHub versions do).
    #[serde(default)]
    pub digest: Option<String>,
}

/// One file the GitHub release should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseAsset {
    /// The asset's name on the release (the file name).
    pub name: String,
    /// Where the file is.
    pub path: PathBuf,
    /// Its sha256, compared with GitHub's digest when GitHub reports one.
    pub sha256: String,
}

/// The release assets still to upload, in the order given. An asset that is there under the
/// same name is skipped; if GitHub reports its digest and it differs, that is an error.
pub fn missing_github_assets<'a>(
    tag: &str,
    wanted: &'a [ReleaseAsset],
    existing: &[GithubAsset],
) -> Result<Vec<&'a ReleaseAsset>> {
    let mut missing = Vec::new();
    for entry @ ReleaseAsset { name, sha256, .. } in wanted {
        match existing.iter().find(|asset| &asset.name == name) {
            None => missing.push(entry),
            Some(asset) => {
                if let Some(digest) = asset.digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
                    if digest != sha256 {
                        bail!(
                            "GitHub release {tag} already has {name} with other content (sha256 {digest}, this release has {sha256}); \
                             release assets are never replaced"
                        );
                    }
                }
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn objects_are_uploaded_once_and_never_replaced() {
        let path = "asset/v0.2.0/arm64/kernel";
        assert_eq!(object_action(path, A, &Remote::Absent).unwrap(), Action::Upload);
        let same = Remote::Present { sha256: A.into() };
        assert_eq!(object_action(path, A, &same).unwrap(), Action::Skip);
        let other = Remote::Present { sha256: B.into() };
        let err = object_action(path, A, &other).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "asset/v0.2.0/arm64/kernel is already published with other content (sha256 {B}, this release has {A}): \
                 published objects are immutable, so publish these bytes under a new version"
            )
        );
    }

    fn version(text: &str) -> AssetVersion {
        AssetVersion::parse(text).unwrap()
    }

    #[test]
    fn latest_only_moves_forward() {
        // What latest.json in the bucket names, the version being published, what to do.
        let cases = [
            (None, "0.2.0", LatestAction::Write),
            (Some("0.1.9"), "0.2.0", LatestAction::Write),
            (Some("0.2.0"), "0.2.0", LatestAction::AlreadyCurrent),
            (Some("0.10.0"), "0.9.0", LatestAction::KeepNewer("0.10.0".into())),
            // Build metadata has no precedence.
            (Some("0.2.0+b1"), "0.2.0+b2", LatestAction::AlreadyCurrent),
            (Some("0.1.0"), "0.2.0-rc.1", LatestAction::KeepForPrerelease),
        ];
        for (in_bucket, publishing, expected) in cases {
            assert_eq!(
                latest_action(in_bucket, &version(publishing)).unwrap(),
                expected,
                "latest.json names {in_bucket:?}, publishing {publishing}"
            );
        }
        let err = latest_action(Some("junk"), &version("0.2.0")).unwrap_err().to_string();
        assert!(err.starts_with("latest.json in the bucket names \"junk\""), "{err}");
    }

    fn release_asset(name: &str, sha256: &str) -> ReleaseAsset {
        ReleaseAsset {
            name: name.into(),
            path: PathBuf::from("dist").join(name),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn github_assets_are_added_never_replaced() {
        let wanted = vec![release_asset("a.tar.gz", A), release_asset("manifest.json", B)];
        let existing = vec![GithubAsset {
            name: "a.tar.gz".into(),
            digest: Some(format!("sha256:{A}")),
        }];
        let missing = missing_github_assets("v1.0.0", &wanted, &existing).unwrap();
        assert_eq!(missing, vec![&wanted[1]]);
        let no_digest = vec![GithubAsset {
            name: "manifest.json".into(),
            digest: None,
        }];
        assert_eq!(
            missing_github_assets("v1.0.0", &wanted, &no_digest).unwrap(),
            vec![&wanted[0]]
        );
        let changed = vec![GithubAsset {
            name: "manifest.json".into(),
            digest: Some(format!("sha256:{A}")),
        }];
        let err = missing_github_assets("v1.0.0", &wanted, &changed)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("GitHub release v1.0.0 already has manifest.json with other content"),
            "{err}"
        );
    }
}

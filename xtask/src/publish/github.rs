//! The GitHub release of a version, through the `gh` CLI: created when missing (a pre-release when
//! the version has a pre-release part), then given the assets it does not have yet. Nothing is
//! ever replaced (`--clobber` is never passed) or deleted.
//!
//! Reads the release with `gh release view`; writes with `gh release create` and one
//! `gh release upload` of every missing file. gh takes its token from GH_TOKEN / GITHUB_TOKEN.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::plan::{self, GithubAsset, ReleaseAsset};

/// What `gh release view` prints on stderr when the tag has no release.
const GH_RELEASE_NOT_FOUND: &str = "release not found";

/// The fields publish reads from `gh release view --json`.
const GH_VIEW_FIELDS: &str = "tagName,isPrerelease,assets";

/// The release as `gh release view --json tagName,isPrerelease,assets` reports it.
#[derive(Debug, serde::Deserialize)]
struct ReleaseView {
    #[serde(default)]
    assets: Vec<GithubAsset>,
}

/// Where the release lives and how to create it.
pub struct Release<'a> {
    /// The tag, `v{version}`.
    pub tag: String,
    /// Mark a new release as a pre-release.
    pub prerelease: bool,
    /// `gh --repo OWNER/NAME`, when given.
    pub repo: Option<&'a str>,
    /// `gh release create --target`, when given.
    pub target: Option<&'a str>,
    /// The release notes of a new release.
    pub notes: String,
}

/// Creates the release when missing and uploads the assets it lacks; returns how many it uploaded.
pub fn publish(sh: &Shell, release: &Release<'_>, assets: &[ReleaseAsset]) -> Result<usize> {
    let repo_args: Vec<&str> = release.repo.map(|r| vec!["--repo", r]).unwrap_or_default();
    let repo = &repo_args;
    let tag = release.tag.as_str();
    crate::tools::require("gh").context("--github-release creates the release with the GitHub CLI")?;
    cmd!(sh, "gh --version")
        .quiet()
        .ignore_stdout()
        .run()
        .context("the GitHub CLI does not run")?;
    let output = cmd!(sh, "gh release view {tag} {repo...} --json {GH_VIEW_FIELDS}")
        .quiet()
        .ignore_status()
        .output()
        .context("running gh release view")?;
    let existing = if output.status.success() {
        let view: ReleaseView = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("gh release view {tag}: unexpected output"))?;
        view.assets
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.contains(GH_RELEASE_NOT_FOUND) {
            bail!("gh release view {tag} failed ({}): {}", output.status, stderr.trim());
        }
        let title = format!("boot-assets {tag}");
        let notes = release.notes.as_str();
        let mut flags: Vec<&str> = Vec::new();
        if release.prerelease {
            flags.push("--prerelease");
        }
        if let Some(target) = release.target {
            flags.extend(["--target", target]);
        }
        eprintln!("publish: creating GitHub release {tag}");
        cmd!(
            sh,
            "gh release create {tag} {repo...} --title {title} --notes {notes} {flags...}"
        )
        .quiet()
        .run()
        .with_context(|| format!("creating GitHub release {tag}"))?;
        Vec::new()
    };
    let missing = plan::missing_github_assets(tag, assets, &existing)?;
    for asset in assets {
        if !missing.iter().any(|m| m.name == asset.name) {
            eprintln!("publish: GitHub release {tag} already has {}", asset.name);
        }
    }
    if missing.is_empty() {
        return Ok(0);
    }
    let files: Vec<&std::path::Path> = missing.iter().map(|a| a.path.as_path()).collect();
    eprintln!(
        "publish: uploading to GitHub release {tag}: {}",
        missing.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let count = files.len();
    cmd!(sh, "gh release upload {tag} {repo_args...} {files...}")
        .quiet()
        .run()
        .with_context(|| format!("uploading assets to GitHub release {tag}"))?;
    Ok(count)
}

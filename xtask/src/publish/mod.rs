//! `cargo xtask publish`: puts a release on the CDN so that nothing published ever changes and
//! `latest.json` only ever points at a release that was downloaded and checked from the CDN.
//!
//! Reads `dist/` (tarballs, sidecars, the merged manifest, staged binaries), the signing key and
//! the public key; writes objects to the bucket (see [`rclone`]), `dist/manifest.json.minisig`,
//! and optionally the GitHub release. The steps, each safe to repeat after an interruption:
//!
//! 1. stage the CDN tree from `dist/` with [`cdn_tree::stage_cdn_tree`] (a temporary directory);
//! 2. compare every object with the bucket by sha256 — all of them before uploading any, so a
//!    refused release changes nothing; sign the manifest, or adopt the signature already
//!    published or in `dist/` when it verifies;
//! 3. upload the missing objects: kernels, rootfs images and binaries, then the manifest, then
//!    its signature;
//! 4. verify from the CDN URL with the AssetManager, every arch and binary (and boot with `--boot`);
//! 5. move `latest.json` forward only: sign it (`latest.json.minisig`, uploaded first), then
//!    replace it, so a client that trusts the key can refuse a replayed or moved-back pointer;
//! 6. with `--github-release`, create the release and add the assets it lacks.

pub mod github;
pub mod plan;
pub mod rclone;
pub mod signing;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Latest};
use xshell::Shell;

use crate::cdn_tree;
use crate::flags;
use crate::merge_manifest;
use crate::util;
use crate::verify_published::verify_published;
use plan::{Action, LatestAction};
use rclone::Bucket;

/// Cache-Control of immutable objects: a path never changes content, so caches may keep it.
const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Cache-Control of `latest.json`: caches must revalidate, so a new release is seen at once.
const LATEST_CACHE_CONTROL: &str = "no-cache";

/// The signature of `latest.json`, relative to the CDN root (mutable, like `latest.json`).
const LATEST_SIGNATURE_PATH: &str = "latest.json.minisig";

/// The manifest's signature path, relative to the CDN root.
fn signature_path(version: &str) -> String {
    format!("{}{}", cdn::manifest_path(version), cdn::SIGNATURE_SUFFIX)
}

/// One immutable object of the staged tree and what to do with it.
struct PlannedObject {
    path: String,
    local: PathBuf,
    sha256: String,
    action: Action,
}

impl flags::Publish {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dry = if self.dry_run { " (dry run)" } else { "" };
        semver::Version::parse(&self.version).with_context(|| {
            format!(
                "--version {:?} is not a semantic version like 0.2.0 (no leading v)",
                self.version
            )
        })?;
        let manifest_file = self.dist.join(cdn::MANIFEST_FILE);
        let manifest = merge_manifest::read_manifest(&manifest_file).with_context(|| {
            format!(
                "{} is the unified manifest (run merge-manifest first)",
                manifest_file.display()
            )
        })?;
        if manifest.asset_version != self.version {
            bail!(
                "--version {} does not match asset_version {} of {}",
                self.version,
                manifest.asset_version,
                manifest_file.display()
            );
        }
        // A CDN URL the AssetManager would refuse (plain http to a remote host, a typo) must
        // stop the run before anything is uploaded, not at the verification step.
        boot_assets::asset_manager::AssetManager::builder(&self.cdn)
            .cache_dir(std::env::temp_dir())
            .build()
            .with_context(|| format!("--cdn {}", self.cdn))?;
        let (public_key, _) = signing::read_public_key(&self.public_key)?;
        let secret_key = signing::load_secret_key(self.signing_key.as_deref())?;
        let bucket = Bucket::connect(sh, &self.remote)?;

        // 1. Stage.
        let staging = tempfile::tempdir().context("creating the staging directory")?;
        let tree = cdn_tree::stage_cdn_tree(&self.dist, staging.path())?;
        eprintln!(
            "publish{dry}: staged {} objects of v{} from {}",
            tree.objects.len(),
            tree.version,
            self.dist.display()
        );

        // 2. Compare every object with the bucket, all before uploading any.
        let signature_object = signature_path(&self.version);
        let manifest_object = cdn::manifest_path(&self.version);
        let mut ordered: Vec<&String> = tree
            .objects
            .iter()
            .filter(|p| p.as_str() != cdn::LATEST_PATH && **p != signature_object && **p != manifest_object)
            .collect();
        ordered.push(&manifest_object);
        let planned = compare_with_bucket(&bucket, staging.path(), &ordered)?;
        // Sign (or adopt a signature that already verifies); after the comparison, so that a
        // release with other bytes is refused by naming the object that differs.
        let manifest_bytes =
            std::fs::read(&manifest_file).with_context(|| format!("reading {}", manifest_file.display()))?;
        let manifest_sha256 = util::sha256_bytes(&manifest_bytes);
        let dist_signature = self
            .dist
            .join(format!("{}{}", cdn::MANIFEST_FILE, cdn::SIGNATURE_SUFFIX));
        let published_signature = bucket.read(&signature_object)?;
        let signature = choose_signature(
            &self,
            &public_key,
            secret_key.as_ref(),
            &manifest_bytes,
            &manifest_sha256,
            published_signature.as_deref(),
            &dist_signature,
        )?;
        let staged_signature = staging.path().join(&signature_object);
        if let Some(signature) = &signature {
            util::write_atomic(&staged_signature, signature.as_bytes())?;
            if !self.dry_run {
                util::write_atomic(&dist_signature, signature.as_bytes())?;
            }
        }

        // 3. Upload what is missing: data, then the manifest, then its signature.
        let upload_signature = published_signature.is_none();
        let uploads = planned.iter().filter(|o| o.action == Action::Upload).count() + usize::from(upload_signature);
        eprintln!(
            "publish{dry}: {uploads} object(s) to upload, {} already published with the same sha256",
            planned.len() + 1 - uploads
        );
        upload_missing(&bucket, &planned, self.dry_run)?;
        match (upload_signature, self.dry_run) {
            (false, _) => eprintln!("publish{dry}: skip {signature_object} (already published, verifies)"),
            (true, true) => eprintln!("publish{dry}: would upload {signature_object}"),
            (true, false) => {
                let sha256 = util::sha256_file(&staged_signature)?;
                eprintln!("publish: upload {signature_object} (sha256 {sha256})");
                bucket.upload(&staged_signature, &signature_object, &sha256, IMMUTABLE_CACHE_CONTROL)?;
            }
        }

        if self.dry_run {
            let latest = latest_action(&bucket, &self.version)?;
            eprintln!(
                "publish{dry}: would verify {} and then: {}",
                self.cdn,
                describe_latest(&latest, &self.version)
            );
            return Ok(());
        }

        // 4. Verify from the CDN as a user would.
        let verified =
            verify_published(sh, &self.cdn, &self.version, None, &public_key, self.boot).with_context(|| {
                format!(
                    "verifying v{} from {} (latest.json was not touched)",
                    self.version, self.cdn
                )
            })?;
        if verified.manifest_sha256 != manifest_sha256 {
            bail!(
                "{} serves a manifest with sha256 {}, but this release's is {manifest_sha256} (latest.json was not touched)",
                cdn::join_url(&self.cdn, &manifest_object),
                verified.manifest_sha256
            );
        }
        eprintln!(
            "publish: verified v{} from {}: {} arch(es), {} binary file(s)",
            self.version,
            self.cdn,
            verified.arches.len(),
            verified.binary_files
        );

        // 5. Move latest.json forward only, judged on what it names now, after the verification;
        // its signature goes up first, so latest.json is still the last object written.
        let latest = latest_action(&bucket, &self.version)?;
        match latest {
            LatestAction::Write => {
                let Some(secret_key) = &secret_key else {
                    bail!(
                        "latest.json must move to {} and be signed (latest.json.minisig), but there is no signing \
                         key: pass --signing-key FILE or put the key file's text in {} and run publish again",
                        self.version,
                        signing::SIGNING_KEY_ENV
                    );
                };
                let staged_latest = staging.path().join(cdn::LATEST_PATH);
                let latest_bytes =
                    std::fs::read(&staged_latest).with_context(|| format!("reading {}", staged_latest.display()))?;
                upload_latest_signature(
                    &bucket,
                    staging.path(),
                    secret_key,
                    &public_key,
                    &self.version,
                    &latest_bytes,
                )?;
                bucket.replace(&staged_latest, cdn::LATEST_PATH, LATEST_CACHE_CONTROL)?;
            }
            // A pointer published before latest.json was signed gets its signature now.
            LatestAction::AlreadyCurrent => {
                let current = bucket.read(cdn::LATEST_PATH)?.unwrap_or_default();
                let signed = bucket
                    .read(LATEST_SIGNATURE_PATH)?
                    .is_some_and(|signature| signing::verify(&public_key, &current, &signature).is_ok());
                match (&secret_key, signed) {
                    (_, true) => {}
                    (Some(secret_key), false) => upload_latest_signature(
                        &bucket,
                        staging.path(),
                        secret_key,
                        &public_key,
                        &self.version,
                        &current,
                    )?,
                    (None, false) => eprintln!(
                        "publish: warning: {LATEST_SIGNATURE_PATH} is missing or does not verify; run publish with the \
                         signing key to sign latest.json (clients that trust the key refuse it until then)"
                    ),
                }
            }
            LatestAction::KeepNewer(_) | LatestAction::KeepForPrerelease => {}
        }
        eprintln!("publish: {}", describe_latest(&latest, &self.version));

        // 6. The GitHub release.
        if self.github_release {
            let assets = github_assets(&self.dist, &manifest, &dist_signature)?;
            let release = github::Release {
                tag: format!("v{}", self.version),
                prerelease: !semver::Version::parse(&self.version)?.pre.is_empty(),
                repo: self.github_repo.as_deref(),
                target: self.github_target.as_deref(),
                notes: format!(
                    "Boot assets v{}. Unified manifest sha256 {manifest_sha256}, signed (minisign) by key {}.\nCDN: {}",
                    self.version,
                    signing::key_id(&public_key),
                    cdn::join_url(&self.cdn, &manifest_object)
                ),
            };
            let uploaded = github::publish(sh, &release, &assets)?;
            eprintln!("publish: GitHub release {}: {uploaded} asset(s) uploaded", release.tag);
        }
        Ok(())
    }
}

/// Step 2: the action for every staged object, in order; the first object that differs from
/// what the bucket holds is an error.
fn compare_with_bucket(bucket: &Bucket<'_>, staging: &Path, paths: &[&String]) -> Result<Vec<PlannedObject>> {
    let mut planned = Vec::new();
    for path in paths {
        let local = staging.join(path);
        let sha256 = util::sha256_file(&local)?;
        let remote = bucket.content(path)?;
        let action = plan::object_action(path, &sha256, &remote)?;
        planned.push(PlannedObject {
            path: path.to_string(),
            local,
            sha256,
            action,
        });
    }
    Ok(planned)
}

/// Step 3 for the immutable objects: uploads those the bucket lacks, in order (a dry run only
/// says which).
fn upload_missing(bucket: &Bucket<'_>, planned: &[PlannedObject], dry_run: bool) -> Result<()> {
    for object in planned {
        match object.action {
            Action::Skip => eprintln!("publish: skip {} (same sha256 {})", object.path, object.sha256),
            Action::Upload if dry_run => eprintln!("publish (dry run): would upload {}", object.path),
            Action::Upload => {
                eprintln!("publish: upload {} (sha256 {})", object.path, object.sha256);
                bucket.upload(&object.local, &object.path, &object.sha256, IMMUTABLE_CACHE_CONTROL)?;
            }
        }
    }
    Ok(())
}

/// Signs `latest` (the bytes of `latest.json` that are or will be published) and uploads the
/// signature as `latest.json.minisig`, before `latest.json` itself moves.
fn upload_latest_signature(
    bucket: &Bucket<'_>,
    staging: &Path,
    secret_key: &minisign::SecretKey,
    public_key: &minisign::PublicKey,
    version: &str,
    latest: &[u8],
) -> Result<()> {
    let signature = signing::sign(
        secret_key,
        public_key,
        latest,
        &signing::latest_trusted_comment(version),
    )?;
    let staged = staging.join(LATEST_SIGNATURE_PATH);
    util::write_atomic(&staged, signature.as_bytes())?;
    eprintln!("publish: sign latest.json (version {version}) into {LATEST_SIGNATURE_PATH}");
    bucket.replace(&staged, LATEST_SIGNATURE_PATH, LATEST_CACHE_CONTROL)
}

/// What to do with `latest.json`, given what the bucket's copy names right now.
fn latest_action(bucket: &Bucket<'_>, version: &str) -> Result<LatestAction> {
    let current = match bucket.read(cdn::LATEST_PATH)? {
        None => None,
        Some(bytes) => Some(
            Latest::from_json(&bytes)
                .with_context(|| {
                    format!(
                        "{} in the bucket is not valid: fix it by hand",
                        bucket.target(cdn::LATEST_PATH)
                    )
                })?
                .version,
        ),
    };
    plan::latest_action(current.as_deref(), version)
}

/// The signature to publish: the one already in the bucket (it must verify), else the one in
/// `dist/` when it verifies, else a new one. Ed25519 signing in minisign is randomized, so a
/// signature that verifies is adopted rather than made again and compared byte for byte.
fn choose_signature(
    publish: &flags::Publish,
    public_key: &minisign::PublicKey,
    secret_key: Option<&minisign::SecretKey>,
    manifest: &[u8],
    manifest_sha256: &str,
    published: Option<&[u8]>,
    dist_signature: &Path,
) -> Result<Option<String>> {
    let key_id = signing::key_id(public_key);
    if let Some(published) = published {
        signing::verify(public_key, manifest, published).with_context(|| {
            format!(
                "{} is already published but is not a signature of this manifest by key {key_id}: \
                 published objects are immutable, so publish under a new version",
                signature_path(&publish.version)
            )
        })?;
        eprintln!("publish: the published signature verifies with key {key_id}; keeping it");
        return Ok(Some(String::from_utf8_lossy(published).into_owned()));
    }
    if let Ok(existing) = std::fs::read(dist_signature) {
        if signing::verify(public_key, manifest, &existing).is_ok() {
            eprintln!(
                "publish: {} verifies with key {key_id}; keeping it",
                dist_signature.display()
            );
            return Ok(Some(String::from_utf8_lossy(&existing).into_owned()));
        }
    }
    match secret_key {
        Some(secret_key) => {
            let trusted = signing::trusted_comment(&publish.version, manifest_sha256);
            let signature = signing::sign(secret_key, public_key, manifest, &trusted)?;
            eprintln!("publish: signed the manifest with key {key_id}");
            Ok(Some(signature))
        }
        None if publish.dry_run => {
            eprintln!("publish (dry run): no signing key given; a real run needs one");
            Ok(None)
        }
        None => bail!(
            "no signing key: pass --signing-key FILE or put the key file's text in {} (make a key with `cargo xtask keygen`)",
            signing::SIGNING_KEY_ENV
        ),
    }
}

/// One line about what happens to latest.json.
fn describe_latest(action: &LatestAction, version: &str) -> String {
    match action {
        LatestAction::Write => format!("latest.json now names {version}"),
        LatestAction::AlreadyCurrent => format!("latest.json already names {version}"),
        LatestAction::KeepNewer(current) => {
            format!("latest.json stays at {current}: it never moves back to the older {version}")
        }
        LatestAction::KeepForPrerelease => format!("latest.json is left alone: {version} is a pre-release"),
    }
}

/// The files of the GitHub release: per arch the tarball and its sidecar, then the merged
/// manifest and its signature.
fn github_assets(dist: &Path, manifest: &boot_assets::Manifest, signature: &Path) -> Result<Vec<github::Asset>> {
    let mut files = Vec::new();
    for arch in manifest.targets.keys() {
        let tarball = cdn::tarball_name(&manifest.asset_version, *arch);
        let tarball_path = dist.join(arch.as_str()).join(&tarball);
        let sidecar_path = dist.join(arch.as_str()).join(format!("{tarball}.sha256"));
        check_sidecar(&tarball_path, &sidecar_path)?;
        files.push(tarball_path);
        files.push(sidecar_path);
    }
    files.push(dist.join(cdn::MANIFEST_FILE));
    files.push(signature.to_path_buf());
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("a release file has a name")?;
            let sha256 = util::sha256_file(&path)?;
            Ok(github::Asset { name, path, sha256 })
        })
        .collect()
}

/// A sidecar must name its tarball and hold its digest, or users who check it would reject
/// the release.
fn check_sidecar(tarball: &Path, sidecar: &Path) -> Result<()> {
    let text = std::fs::read_to_string(sidecar).with_context(|| format!("reading {}", sidecar.display()))?;
    let (sha256, name) = boot_assets::sidecar::parse(&text).with_context(|| format!("{}", sidecar.display()))?;
    let file_name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let actual = util::sha256_file(tarball)?;
    if name != file_name || sha256 != actual {
        bail!(
            "{} says {sha256}  {name}, but {} has sha256 {actual}: rebuild the release",
            sidecar.display(),
            tarball.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_sidecar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("t.tar.gz");
        let sidecar = dir.path().join("t.tar.gz.sha256");
        std::fs::write(&tarball, b"abc").unwrap();
        std::fs::write(
            &sidecar,
            boot_assets::sidecar::format(&util::sha256_bytes(b"abc"), "t.tar.gz"),
        )
        .unwrap();
        check_sidecar(&tarball, &sidecar).unwrap();
        std::fs::write(&tarball, b"abd").unwrap();
        let err = check_sidecar(&tarball, &sidecar).unwrap_err().to_string();
        assert!(err.contains("rebuild the release"), "{err}");
    }

    #[test]
    fn latest_lines_say_what_happened() {
        assert_eq!(
            describe_latest(&LatestAction::Write, "0.2.0"),
            "latest.json now names 0.2.0"
        );
        assert_eq!(
            describe_latest(&LatestAction::KeepNewer("0.3.0".into()), "0.2.0"),
            "latest.json stays at 0.3.0: it never moves back to the older 0.2.0"
        );
        assert_eq!(signature_path("0.2.0"), "asset/v0.2.0/manifest.json.minisig");
    }
}

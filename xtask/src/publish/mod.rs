//! `cargo xtask publish`: puts a release on the CDN so that nothing published ever changes and
//! `latest.json` only ever points at a release that was downloaded and checked from the CDN.
//!
//! Reads `dist/` (tarballs, sidecars, the merged manifest, staged binaries), the signing key and
//! the public key; writes objects to the bucket (see [`rclone`]), `dist/manifest.json.minisig`,
//! and optionally the GitHub release. The steps, each safe to repeat after an interruption:
//!
//! 0. check every file of `dist/` it will upload or reference ([`preflight`]): sidecars, the
//!    tarballs' manifests, kernel, rootfs and binaries against both manifests;
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
pub mod preflight;
pub mod rclone;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Latest, Manifest};
use tempfile::TempDir;
use xshell::Shell;

use crate::flags;
use crate::verify_published::verify_published;
use crate::{cdn_tree, layout, manifest_io, signing, util};
use plan::{Action, LatestAction};
use rclone::Bucket;

/// Cache-Control of immutable objects: a path never changes content, so caches may keep it.
const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Cache-Control of `latest.json`: caches must revalidate, so a new release is seen at once.
const LATEST_CACHE_CONTROL: &str = "no-cache";

/// One immutable object of the staged tree and what to do with it.
struct PlannedObject {
    path: String,
    local: PathBuf,
    sha256: String,
    action: Action,
}

impl flags::Publish {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let publisher = Publisher::prepare(sh, &self)?;
        // 1. Stage.
        let tree = publisher.stage()?;
        // 2. Compare every object with the bucket, all before uploading any; then sign.
        let planned = publisher.compare(&tree)?;
        let signature_published = publisher.sign()?;
        // 3. Upload what is missing: data, then the manifest, then its signature.
        publisher.upload(&planned, signature_published)?;
        if self.dry_run {
            return publisher.report_dry_run();
        }
        // 4. Verify from the CDN as a user would.
        publisher.verify()?;
        // 5. Move latest.json forward only.
        publisher.move_latest()?;
        // 6. The GitHub release.
        if self.github_release {
            publisher.github_release()?;
        }
        Ok(())
    }
}

/// One publish run: the flags, what was read and checked up front, and the staging tree.
struct Publisher<'a> {
    flags: &'a flags::Publish,
    sh: &'a Shell,
    bucket: Bucket<'a>,
    public_key: minisign::PublicKey,
    secret_key: Option<minisign::SecretKey>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    manifest_sha256: String,
    staging: TempDir,
    /// ` (dry run)` or nothing, for every line printed.
    dry: &'static str,
}

impl<'a> Publisher<'a> {
    /// Everything that can be checked before the bucket is touched: the manifest names this
    /// version, the CDN URL is one the AssetManager accepts, the keys load, rclone reaches the
    /// remote.
    fn prepare(sh: &'a Shell, flags: &'a flags::Publish) -> Result<Publisher<'a>> {
        let version = flags.version.as_str();
        let manifest_file = layout::unified_manifest(&flags.dist);
        let manifest = manifest_io::read_unified_manifest(&flags.dist)?;
        if manifest.asset_version != version {
            bail!(
                "--version {version} does not match asset_version {} of {}",
                manifest.asset_version,
                manifest_file.display()
            );
        }
        // A CDN URL the AssetManager would refuse (plain http to a remote host, a typo) must
        // stop the run before anything is uploaded, not at the verification step.
        boot_assets::asset_manager::AssetManager::builder(&flags.cdn)
            .cache_dir(std::env::temp_dir())
            .build()
            .with_context(|| format!("--cdn {}", flags.cdn))?;
        // Every file to upload or reference, against every record of it, before the bucket
        // (or GitHub) is touched.
        preflight::check_dist(&flags.dist, &manifest)?;
        let (public_key, _) = signing::read_public_key(&flags.public_key)?;
        let secret_key = signing::load_secret_key(flags.signing_key.as_deref())?;
        let bucket = Bucket::connect(sh, &flags.remote, flags.rclone_timeout())?;
        let manifest_bytes =
            std::fs::read(&manifest_file).with_context(|| format!("reading {}", manifest_file.display()))?;
        Ok(Publisher {
            flags,
            sh,
            bucket,
            public_key,
            secret_key,
            manifest,
            manifest_sha256: util::sha256_bytes(&manifest_bytes),
            manifest_bytes,
            staging: tempfile::tempdir().context("creating the staging directory")?,
            dry: if flags.dry_run { " (dry run)" } else { "" },
        })
    }

    fn version(&self) -> &str {
        self.flags.version.as_str()
    }

    /// Step 1: the CDN tree of `dist/`, in the staging directory.
    fn stage(&self) -> Result<cdn_tree::CdnTree> {
        let tree = cdn_tree::stage_cdn_tree(&self.flags.dist, self.staging.path())?;
        eprintln!(
            "publish{}: staged {} objects of v{} from {}",
            self.dry,
            tree.objects.len(),
            tree.version,
            self.flags.dist.display()
        );
        Ok(tree)
    }

    /// Step 2, first half: every immutable object of `tree` but the signature, in the order
    /// staged with the manifest last, compared with the bucket.
    fn compare(&self, tree: &cdn_tree::CdnTree) -> Result<Vec<PlannedObject>> {
        let signature_object = cdn::manifest_signature_path(self.version());
        let manifest_object = cdn::manifest_path(self.version());
        let mut ordered: Vec<&String> = tree
            .objects
            .iter()
            .filter(|p| p.as_str() != cdn::LATEST_PATH && **p != signature_object && **p != manifest_object)
            .collect();
        ordered.push(&manifest_object);
        compare_with_bucket(&self.bucket, self.staging.path(), &ordered)
    }

    /// Step 2, second half, after the comparison so that a release with other bytes is refused
    /// by naming the object that differs: sign the manifest, or adopt a signature that already
    /// verifies; stage it (and keep it in `dist/` unless this is a dry run). Returns whether the
    /// bucket already holds the signature.
    fn sign(&self) -> Result<bool> {
        let signature_object = cdn::manifest_signature_path(self.version());
        let dist_signature = layout::manifest_signature(&self.flags.dist);
        let published_signature = self.bucket.read(&signature_object)?;
        let signature = self.choose_signature(published_signature.as_deref(), &dist_signature)?;
        if let Some(signature) = &signature {
            util::write_atomic(&self.staging.path().join(&signature_object), signature.as_bytes())?;
            if !self.flags.dry_run {
                util::write_atomic(&dist_signature, signature.as_bytes())?;
            }
        }
        Ok(published_signature.is_some())
    }

    /// Step 3: the missing immutable objects in order, then the manifest's signature.
    fn upload(&self, planned: &[PlannedObject], signature_published: bool) -> Result<()> {
        let dry = self.dry;
        let signature_object = cdn::manifest_signature_path(self.version());
        let upload_signature = !signature_published;
        let uploads = planned.iter().filter(|o| o.action == Action::Upload).count() + usize::from(upload_signature);
        eprintln!(
            "publish{dry}: {uploads} object(s) to upload, {} already published with the same sha256",
            planned.len() + 1 - uploads
        );
        upload_missing(&self.bucket, planned, self.flags.dry_run)?;
        match (upload_signature, self.flags.dry_run) {
            (false, _) => eprintln!("publish{dry}: skip {signature_object} (already published, verifies)"),
            (true, true) => eprintln!("publish{dry}: would upload {signature_object}"),
            (true, false) => {
                let staged_signature = self.staging.path().join(&signature_object);
                let sha256 = util::sha256_file(&staged_signature)?;
                eprintln!("publish: upload {signature_object} (sha256 {sha256})");
                self.bucket
                    .upload(&staged_signature, &signature_object, &sha256, IMMUTABLE_CACHE_CONTROL)?;
            }
        }
        Ok(())
    }

    /// The end of a dry run: what the real run would do next.
    fn report_dry_run(&self) -> Result<()> {
        let latest = latest_action(&self.bucket, &self.flags.version)?;
        eprintln!(
            "publish{}: would verify {} and then: {}",
            self.dry,
            self.flags.cdn,
            describe_latest(&latest, self.version())
        );
        Ok(())
    }

    /// Step 4: install the release from the CDN with the AssetManager (and boot it with
    /// `--boot`); the manifest it served must be this release's.
    fn verify(&self) -> Result<()> {
        let (version, cdn_url) = (self.version(), &self.flags.cdn);
        let verified = verify_published(self.sh, cdn_url, version, None, &self.public_key, self.flags.boot)
            .with_context(|| format!("verifying v{version} from {cdn_url} (latest.json was not touched)"))?;
        if verified.manifest_sha256 != self.manifest_sha256 {
            bail!(
                "{} serves a manifest with sha256 {}, but this release's is {} (latest.json was not touched)",
                cdn::join_url(cdn_url, &cdn::manifest_path(version)),
                verified.manifest_sha256,
                self.manifest_sha256
            );
        }
        eprintln!(
            "publish: verified v{version} from {cdn_url}: {} arch(es), {} binary file(s)",
            verified.arches.len(),
            verified.binary_files
        );
        Ok(())
    }

    /// Step 5: move `latest.json` forward only, judged on what it names now, after the
    /// verification; its signature goes up first, so latest.json is still the last object
    /// written. A pointer published before latest.json was signed gets its signature now.
    fn move_latest(&self) -> Result<()> {
        let latest = latest_action(&self.bucket, &self.flags.version)?;
        match latest {
            LatestAction::Write => {
                let Some(secret_key) = &self.secret_key else {
                    bail!(
                        "latest.json must move to {} and be signed (latest.json.minisig), but there is no signing \
                         key: pass --signing-key FILE or put the key file's text in {} and run publish again",
                        self.version(),
                        signing::SIGNING_KEY_ENV
                    );
                };
                let staged_latest = self.staging.path().join(cdn::LATEST_PATH);
                let latest_bytes =
                    std::fs::read(&staged_latest).with_context(|| format!("reading {}", staged_latest.display()))?;
                self.upload_latest_signature(secret_key, &latest_bytes)?;
                self.bucket
                    .replace(&staged_latest, cdn::LATEST_PATH, LATEST_CACHE_CONTROL)?;
            }
            LatestAction::AlreadyCurrent => self.sign_current_latest()?,
            LatestAction::KeepNewer(_) | LatestAction::KeepForPrerelease => {}
        }
        eprintln!("publish: {}", describe_latest(&latest, self.version()));
        Ok(())
    }

    /// Signs the `latest.json` the bucket holds when its signature is missing or does not verify.
    fn sign_current_latest(&self) -> Result<()> {
        let latest_signature = cdn::signature_path(cdn::LATEST_PATH);
        let current = self.bucket.read(cdn::LATEST_PATH)?.unwrap_or_default();
        let signed = self
            .bucket
            .read(&latest_signature)?
            .is_some_and(|signature| signing::verify(&self.public_key, &current, &signature).is_ok());
        match (&self.secret_key, signed) {
            (_, true) => {}
            (Some(secret_key), false) => self.upload_latest_signature(secret_key, &current)?,
            (None, false) => eprintln!(
                "publish: warning: {latest_signature} is missing or does not verify; run publish with the \
                 signing key to sign latest.json (clients that trust the key refuse it until then)"
            ),
        }
        Ok(())
    }

    /// Signs `latest` (the bytes of `latest.json` that are or will be published) and uploads
    /// the signature as `latest.json.minisig`, before `latest.json` itself moves.
    fn upload_latest_signature(&self, secret_key: &minisign::SecretKey, latest: &[u8]) -> Result<()> {
        let version = self.version();
        let latest_signature = cdn::signature_path(cdn::LATEST_PATH);
        let trusted = signing::latest_trusted_comment(version);
        let signature = signing::sign(secret_key, &self.public_key, latest, &trusted)?;
        let staged = self.staging.path().join(&latest_signature);
        util::write_atomic(&staged, signature.as_bytes())?;
        eprintln!("publish: sign latest.json (version {version}) into {latest_signature}");
        self.bucket.replace(&staged, &latest_signature, LATEST_CACHE_CONTROL)
    }

    /// Step 6: create the GitHub release and add the assets it lacks.
    fn github_release(&self) -> Result<()> {
        let version = self.version();
        let assets = github_assets(&self.flags.dist, &self.manifest)?;
        let release = github::Release {
            tag: format!("v{version}"),
            prerelease: self.flags.version.is_prerelease(),
            repo: self.flags.github_repo.as_deref(),
            target: self.flags.github_target.as_deref(),
            notes: format!(
                "Boot assets v{version}. Unified manifest sha256 {}, signed (minisign) by key {}.\nCDN: {}",
                self.manifest_sha256,
                signing::key_id(&self.public_key),
                cdn::join_url(&self.flags.cdn, &cdn::manifest_path(version))
            ),
        };
        let uploaded = github::publish(self.sh, &release, &assets)?;
        eprintln!("publish: GitHub release {}: {uploaded} asset(s) uploaded", release.tag);
        Ok(())
    }

    /// The signature to publish: the one already in the bucket (it must verify), else the one
    /// in `dist/` when it verifies, else a new one. Ed25519 signing in minisign is randomized,
    /// so a signature that verifies is adopted rather than made again and compared byte for
    /// byte.
    fn choose_signature(&self, published: Option<&[u8]>, dist_signature: &Path) -> Result<Option<String>> {
        let (public_key, manifest) = (&self.public_key, self.manifest_bytes.as_slice());
        let key_id = signing::key_id(public_key);
        if let Some(published) = published {
            signing::verify(public_key, manifest, published).with_context(|| {
                format!(
                    "{} is already published but is not a signature of this manifest by key {key_id}: \
                     published objects are immutable, so publish under a new version",
                    cdn::manifest_signature_path(self.version())
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
        match &self.secret_key {
            Some(secret_key) => {
                let trusted = signing::trusted_comment(self.version(), &self.manifest_sha256);
                let signature = signing::sign(secret_key, public_key, manifest, &trusted)?;
                eprintln!("publish: signed the manifest with key {key_id}");
                Ok(Some(signature))
            }
            None if self.flags.dry_run => {
                eprintln!("publish (dry run): no signing key given; a real run needs one");
                Ok(None)
            }
            None => bail!(
                "no signing key: pass --signing-key FILE or put the key file's text in {} (make a key with `cargo xtask keygen`)",
                signing::SIGNING_KEY_ENV
            ),
        }
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
/// says which). A failed upload stops the run with what was and was not uploaded.
fn upload_missing(bucket: &Bucket<'_>, planned: &[PlannedObject], dry_run: bool) -> Result<()> {
    let mut uploaded: Vec<&str> = Vec::new();
    for (index, object) in planned.iter().enumerate() {
        match object.action {
            Action::Skip => eprintln!("publish: skip {} (same sha256 {})", object.path, object.sha256),
            Action::Upload if dry_run => eprintln!("publish (dry run): would upload {}", object.path),
            Action::Upload => {
                eprintln!("publish: upload {} (sha256 {})", object.path, object.sha256);
                let result = bucket.upload(&object.local, &object.path, &object.sha256, IMMUTABLE_CACHE_CONTROL);
                if let Err(error) = result {
                    let missing: Vec<&str> = planned[index..]
                        .iter()
                        .filter(|o| o.action == Action::Upload)
                        .map(|o| o.path.as_str())
                        .collect();
                    return Err(error.context(upload_report(&uploaded, &missing)));
                }
                uploaded.push(&object.path);
            }
        }
    }
    Ok(())
}

/// What a stopped upload leaves: the objects uploaded in this run and those still missing (the
/// manifest's signature and latest.json come after them).
fn upload_report(uploaded: &[&str], missing: &[&str]) -> String {
    let list = |paths: &[&str]| {
        if paths.is_empty() {
            "none".to_owned()
        } else {
            paths.join(", ")
        }
    };
    format!(
        "publish stopped; uploaded in this run: {}; not uploaded: {} (then the manifest's signature; \
         latest.json was not touched): run publish again to finish",
        list(uploaded),
        list(missing)
    )
}

/// What to do with `latest.json`, given what the bucket's copy names right now.
fn latest_action(bucket: &Bucket<'_>, version: &flags::AssetVersion) -> Result<LatestAction> {
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
fn github_assets(dist: &Path, manifest: &Manifest) -> Result<Vec<plan::ReleaseAsset>> {
    let mut files = Vec::new();
    for arch in manifest.targets.keys() {
        let tarball_path = layout::tarball(dist, &manifest.asset_version, *arch);
        let sidecar_path = layout::sidecar(dist, &manifest.asset_version, *arch);
        preflight::check_sidecar(&tarball_path, &sidecar_path)?;
        files.push(tarball_path);
        files.push(sidecar_path);
    }
    files.push(layout::unified_manifest(dist));
    files.push(layout::manifest_signature(dist));
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("a release file has a name")?;
            let sha256 = util::sha256_file(&path)?;
            Ok(plan::ReleaseAsset { name, path, sha256 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

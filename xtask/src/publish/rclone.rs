//! The bucket, through rclone's S3 backend (Cloudflare R2, Backblaze B2, AWS S3, MinIO, `rclone
//! serve s3`, …): look at one object, learn its sha256, upload one object, read one small object.
//!
//! Reads the environment for the S3 endpoint and keys (see [`Bucket::connect`]); writes an rclone
//! config without secrets into a temporary directory when it defines the remote itself. Every
//! upload is a per-object `copyto` that stores the content's sha256 as object metadata; there is
//! no `sync` and no delete anywhere in this module. Every rclone call runs under coreutils'
//! `timeout` with the call limit (`--rclone-timeout-secs`, default [`DEFAULT_CALL_TIMEOUT_SECS`])
//! and rclone's own connect and idle timeouts, so a dead endpoint fails the run instead of
//! holding it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::plan::Remote;

/// Set to an S3 endpoint URL to have publish define the remote itself (keys from AWS_* variables).
pub const ENDPOINT_ENV: &str = "BOOT_ASSETS_S3_ENDPOINT";

/// rclone's name for the S3 flavour (`Cloudflare`, `AWS`, `Other`, …); default [`DEFAULT_PROVIDER`].
pub const PROVIDER_ENV: &str = "BOOT_ASSETS_S3_PROVIDER";

/// The bucket's region; default [`DEFAULT_REGION`] (what R2 expects; other S3 servers ignore it).
pub const REGION_ENV: &str = "BOOT_ASSETS_S3_REGION";

/// The access keys, read by rclone itself (`env_auth`), so they are never written to a file.
const KEY_ENVS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// rclone's generic S3 provider: plain S3 semantics, path-style requests.
const DEFAULT_PROVIDER: &str = "Other";

/// Region used when none is given.
const DEFAULT_REGION: &str = "auto";

/// The metadata key that carries an object's sha256 (`x-amz-meta-sha256` on S3).
pub const SHA256_METADATA_KEY: &str = "sha256";

/// The default time limit of one rclone call, in seconds: an upload of the largest object of a
/// release (a rootfs of tens of MB) at 1 MB/s with room to spare, and far more than any lookup.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 300;

/// Grace after the call limit before `timeout` sends SIGKILL.
const KILL_AFTER: &str = "10s";

/// Exit status of coreutils `timeout` when the limit passed (124), or when it had to kill (137).
const TIMED_OUT_CODES: [i32; 2] = [124, 137];

/// rclone's own bounds on each connection: connect, idle, and its retries, so that a dead
/// endpoint is given up on well inside the call limit.
const RCLONE_BOUNDS: [&str; 8] = [
    "--contimeout",
    "15s",
    "--timeout",
    "60s",
    "--retries",
    "2",
    "--low-level-retries",
    "3",
];

/// rclone's exit codes for "directory not found" and "file not found".
const RCLONE_NOT_FOUND_CODES: [i32; 2] = [3, 4];

/// One bucket (and optional prefix) reached through an rclone remote.
pub struct Bucket<'a> {
    sh: &'a Shell,
    /// `NAME:BUCKET[/prefix]`, without a trailing `/`.
    root: String,
    /// The time limit of one rclone call.
    call_timeout: Duration,
    /// The rclone config publish wrote, when it defined the remote itself.
    config: Option<PathBuf>,
    _config_dir: Option<tempfile::TempDir>,
}

/// `NAME:BUCKET[/prefix]` split into the remote name and the path, or an error saying what a
/// valid value looks like.
///
/// The name is checked only for what would make it something else than a remote name: empty, a
/// leading `-` or space (an rclone flag, or a name rclone trims), `/` or `\` (rclone would read
/// a local path), brackets or control characters (they cannot be a config section). Whether a
/// remote of that name exists is rclone's answer, asked by [`Bucket::connect`]: rclone accepts
/// letters of any script, digits, `_ - . + @` and inner spaces, and finds a remote defined only by
/// `RCLONE_CONFIG_{NAME}_TYPE` under the upper-cased name whatever case `--remote` uses.
pub fn parse_remote(remote: &str) -> Result<(&str, &str)> {
    let problem =
        || anyhow::anyhow!("--remote {remote:?}: expected NAME:BUCKET or NAME:BUCKET/prefix, e.g. r2:boot-assets");
    let (name, path) = remote.split_once(':').ok_or_else(problem)?;
    let name_ok = !name.is_empty()
        && !name.starts_with(['-', ' '])
        && !name.ends_with(' ')
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '[' | ']'));
    let path = path.trim_end_matches('/');
    if !name_ok || path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(problem());
    }
    Ok((name, path))
}

/// The text of an rclone config that defines `name` as an S3 remote at `endpoint`; the keys
/// stay in the environment (`env_auth`).
pub fn s3_config(name: &str, endpoint: &str, provider: &str, region: &str) -> String {
    format!(
        "[{name}]\ntype = s3\nprovider = {provider}\nenv_auth = true\nendpoint = {endpoint}\nregion = {region}\n\
         force_path_style = true\nno_check_bucket = true\n"
    )
}

impl<'a> Bucket<'a> {
    /// Reaches the bucket of `--remote NAME:BUCKET[/prefix]`.
    ///
    /// With BOOT_ASSETS_S3_ENDPOINT set, NAME is defined here as an S3 remote at that endpoint,
    /// authenticated by AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; otherwise NAME must be a remote
    /// of the user's own rclone config (RCLONE_CONFIG or rclone's default file).
    pub fn connect(sh: &'a Shell, remote: &str, call_timeout: Duration) -> Result<Bucket<'a>> {
        let (name, path) = parse_remote(remote)?;
        crate::tools::require("rclone").context("publishing uploads with rclone")?;
        cmd!(sh, "rclone version")
            .quiet()
            .ignore_stdout()
            .run()
            .context("rclone does not run")?;
        let root = format!("{name}:{path}");
        match std::env::var(ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                for key in KEY_ENVS {
                    if std::env::var(key).map(|v| v.is_empty()).unwrap_or(true) {
                        bail!(
                            "{ENDPOINT_ENV} is set, so the bucket's keys must be in {key} (and {}), which is not set",
                            KEY_ENVS.join(" / ")
                        );
                    }
                }
                let provider = std::env::var(PROVIDER_ENV).unwrap_or_else(|_| DEFAULT_PROVIDER.to_owned());
                let region = std::env::var(REGION_ENV).unwrap_or_else(|_| DEFAULT_REGION.to_owned());
                let dir = tempfile::tempdir().context("creating a directory for the rclone config")?;
                let config = dir.path().join("rclone.conf");
                crate::util::write_atomic(&config, s3_config(name, endpoint.trim(), &provider, &region).as_bytes())?;
                Ok(Bucket {
                    sh,
                    root,
                    call_timeout,
                    config: Some(config),
                    _config_dir: Some(dir),
                })
            }
            _ => {
                // rclone itself resolves the name (config file sections, then RCLONE_CONFIG_{NAME}_*
                // variables, with its own case mapping): `backend features NAME:` builds the remote's
                // backend without touching the bucket, and fails exactly when copyto would.
                let remote_root = format!("{name}:");
                let output = cmd!(sh, "rclone backend features {remote_root}")
                    .quiet()
                    .ignore_status()
                    .output()
                    .context("running rclone backend features")?;
                if !output.status.success() {
                    bail!(
                        "--remote {remote}: rclone does not know a remote named {name:?} ({}); set {ENDPOINT_ENV} \
                         (with {}) to define it, add it to your rclone config (`rclone config`), or define it with \
                         RCLONE_CONFIG_{}_TYPE and its other RCLONE_CONFIG_{}_* variables",
                        rclone_complaint(&output.stderr),
                        KEY_ENVS.join(" and "),
                        name.to_uppercase(),
                        name.to_uppercase(),
                    );
                }
                Ok(Bucket {
                    sh,
                    root,
                    call_timeout,
                    config: None,
                    _config_dir: None,
                })
            }
        }
    }

    /// `NAME:BUCKET[/prefix]/relative`.
    pub fn target(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root)
    }

    /// An rclone command with this bucket's config, under the call limit.
    fn rclone<'s>(&'s self, args: &[&str]) -> xshell::Cmd<'s> {
        let limit = format!("{}s", self.call_timeout.as_secs().max(1));
        let mut command = cmd!(
            self.sh,
            "timeout --kill-after={KILL_AFTER} {limit} rclone {RCLONE_BOUNDS...} {args...}"
        )
        .quiet();
        if let Some(config) = &self.config {
            command = command.env("RCLONE_CONFIG", config);
        }
        command
    }

    /// Whether an object exists at `relative`, and the sha256 its metadata records (if any).
    pub fn stat(&self, relative: &str) -> Result<Option<Option<String>>> {
        let target = self.target(relative);
        let output = self
            .rclone(&["lsjson", "--stat", "--metadata", "--no-mimetype", &target])
            .ignore_status()
            .output()
            .with_context(|| format!("running rclone lsjson on {target}"))?;
        if !output.status.success() {
            if output
                .status
                .code()
                .is_some_and(|c| RCLONE_NOT_FOUND_CODES.contains(&c))
            {
                return Ok(None);
            }
            self.refuse_timeout(&output.status, &format!("looking up {target}"))?;
            bail!(
                "rclone lsjson {target} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let entry: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("rclone lsjson {target}: unexpected output"))?;
        // Bucket stores answer a missing key with an empty "directory" of that name.
        if entry["IsDir"].as_bool() != Some(false) {
            return Ok(None);
        }
        let sha256 = entry["Metadata"][SHA256_METADATA_KEY]
            .as_str()
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        Ok(Some(sha256))
    }

    /// What the bucket holds at `relative`: absent, or present with the sha256 of its content,
    /// from metadata when recorded, else by downloading and hashing the object.
    pub fn content(&self, relative: &str) -> Result<Remote> {
        match self.stat(relative)? {
            None => Ok(Remote::Absent),
            Some(Some(sha256)) => Ok(Remote::Present { sha256 }),
            Some(None) => {
                let target = self.target(relative);
                let text = self
                    .rclone(&["hashsum", "sha256", "--download", &target])
                    .read()
                    .with_context(|| format!("downloading {target} to hash it (it has no sha256 metadata)"))?;
                let sha256 = text
                    .split_whitespace()
                    .next()
                    .filter(|h| h.len() == 64)
                    .with_context(|| format!("rclone hashsum {target}: unexpected output {text:?}"))?;
                eprintln!("publish: {relative} has no sha256 metadata: downloaded it to hash it ({sha256})");
                Ok(Remote::Present {
                    sha256: sha256.to_ascii_lowercase(),
                })
            }
        }
    }

    /// Uploads one object with its sha256 as metadata and the given Cache-Control header.
    /// `--immutable` makes rclone itself refuse to replace an object that appeared meanwhile.
    pub fn upload(&self, local: &Path, relative: &str, sha256: &str, cache_control: &str) -> Result<()> {
        let metadata = format!("{SHA256_METADATA_KEY}={sha256}");
        self.copy_to(
            local,
            relative,
            cache_control,
            &["--immutable", "--metadata", "--metadata-set", &metadata],
        )
    }

    /// Replaces a small mutable object (only `latest.json` is one).
    pub fn replace(&self, local: &Path, relative: &str, cache_control: &str) -> Result<()> {
        self.copy_to(local, relative, cache_control, &["--ignore-times"])
    }

    /// `rclone copyto` of one file to `relative`, with the Cache-Control header and `options`.
    fn copy_to(&self, local: &Path, relative: &str, cache_control: &str, options: &[&str]) -> Result<()> {
        let target = self.target(relative);
        let local_text = local.to_string_lossy().into_owned();
        let header = format!("Cache-Control: {cache_control}");
        let mut args = vec!["copyto"];
        args.extend_from_slice(options);
        args.extend(["--header-upload", &header, &local_text, &target]);
        let output = self
            .rclone(&args)
            .ignore_status()
            .output()
            .with_context(|| format!("running rclone copyto for {target}"))?;
        self.refuse_timeout(&output.status, &format!("uploading {} to {target}", local.display()))?;
        if !output.status.success() {
            bail!(
                "uploading {} to {target}: rclone failed ({}): {}",
                local.display(),
                output.status,
                rclone_complaint(&output.stderr)
            );
        }
        Ok(())
    }

    /// An error naming the call limit when `status` says the call was stopped by it.
    fn refuse_timeout(&self, status: &std::process::ExitStatus, what: &str) -> Result<()> {
        if status.code().is_some_and(|code| TIMED_OUT_CODES.contains(&code)) {
            bail!(
                "{what}: rclone did not finish within {} s (--rclone-timeout-secs) and was stopped",
                self.call_timeout.as_secs()
            );
        }
        Ok(())
    }

    /// The bytes of a small object, `None` when it does not exist.
    pub fn read(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        if self.stat(relative)?.is_none() {
            return Ok(None);
        }
        let target = self.target(relative);
        let output = self
            .rclone(&["cat", &target])
            .output()
            .with_context(|| format!("reading {target}"))?;
        Ok(Some(output.stdout))
    }
}

/// The last line rclone printed, without its timestamp and level, for an error message.
fn rclone_complaint(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    let line = line
        .split_once(": ")
        .filter(|(head, _)| head.contains('/'))
        .map_or(line, |(_, rest)| rest);
    line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_a_bucket() {
        assert_eq!(parse_remote("r2:boot-assets").unwrap(), ("r2", "boot-assets"));
        assert_eq!(parse_remote("s3:bucket/pre/fix/").unwrap(), ("s3", "bucket/pre/fix"));
        // Every name rclone itself accepts goes through to rclone.
        for name in ["R2", "MixedCase", "r2-prod", "r2.eu", "r2+x@y", "my remote", "été_1"] {
            assert_eq!(parse_remote(&format!("{name}:b")).unwrap(), (name, "b"));
        }
        for bad in [
            "bucket",
            ":bucket",
            "r2:",
            "r2:/abs",
            "r2:a//b",
            "r2:a/../b",
            "-r2:b",
            " r2:b",
            "r2 :b",
            "a/b:c",
            "a[b]:c",
            "a\nb:c",
        ] {
            let err = parse_remote(bad).unwrap_err().to_string();
            assert!(err.contains("expected NAME:BUCKET"), "{bad}: {err}");
        }
    }

    #[test]
    fn publishing_never_syncs_moves_or_deletes() {
        // Upstream lost releases to `sync --delete` and size-only syncs: only per-object
        // commands that cannot remove anything may appear here.
        let source = include_str!("rclone.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        for forbidden in [
            "\"sync\"",
            "\"move\"",
            "\"moveto\"",
            "\"delete\"",
            "\"deletefile\"",
            "\"purge\"",
            "--size-only",
        ] {
            assert!(!code.contains(forbidden), "publish must never use rclone {forbidden}");
        }
        assert!(code.contains("\"copyto\""));
    }

    #[test]
    fn rclone_complaint_is_the_message_without_the_log_prefix() {
        let stderr = b"2026/12/01 09:58:58 NOTICE: Failed to backend: didn't find section in config file (\"nope\")\n";
        assert_eq!(
            rclone_complaint(stderr),
            "Failed to backend: didn't find section in config file (\"nope\")"
        );
        assert_eq!(rclone_complaint(b""), "no message");
    }

    #[test]
    fn generated_config_holds_no_secret() {
        let config = s3_config("r2", "https://acct.r2.example", "Cloudflare", "auto");
        assert!(config.starts_with("[r2]\ntype = s3\nprovider = Cloudflare\nenv_auth = true\n"));
        assert!(!config.to_lowercase().contains("secret"));
    }
}

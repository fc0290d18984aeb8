//! The Debian suites the pipeline fetches from, and the private sources list of each.
//!
//! Reads the host's apt configuration once (`apt-get indextargets`) to learn which archive and
//! which security archive the host reaches for Debian; never writes them anywhere but the
//! private apt state in the cache. Pure functions render the `sources.list` of a suite from
//! those two addresses, so the same state works on any Debian host whatever mirror it uses.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The suites a lock may name, oldest first. A stable suite also gets its `-updates` and
/// `-security` pockets; `sid` has neither.
pub const SUITES: [&str; 3] = ["bookworm", "trixie", "sid"];

/// The suite the host itself runs, whose archive entry tells which archive to use.
const HOST_SUITE: &str = "bookworm";

/// The pocket suffix of the security archive.
const SECURITY_SUFFIX: &str = "-security";

/// The pocket suffix of stable updates.
const UPDATES_SUFFIX: &str = "-updates";

/// The one archive component the pipeline uses.
const COMPONENT: &str = "main";

/// A Debian suite by codename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Suite(&'static str);

impl Suite {
    /// The suite named `name`; anything not in [`SUITES`] is refused naming the known ones.
    pub fn parse(name: &str) -> Result<Suite> {
        match SUITES.iter().find(|known| **known == name) {
            Some(known) => Ok(Suite(known)),
            None => bail!("unknown Debian suite {name:?}: use one of {}", SUITES.join(", ")),
        }
    }

    /// The codename (`trixie`).
    pub fn name(self) -> &'static str {
        self.0
    }

    /// True for the rolling suite, which has no updates or security pockets.
    fn is_unstable(self) -> bool {
        self.0 == "sid"
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Where the host reaches Debian: the archive and the security archive (each with a trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archives {
    pub main: String,
    pub security: Option<String>,
}

/// The archives of the host's configured Debian sources, from `apt-get indextargets`.
pub fn host_archives(sh: &Shell) -> Result<Archives> {
    let format = "$(TARGET_OF)\t$(REPO_URI)\t$(RELEASE)";
    let listing = cmd!(sh, "apt-get indextargets --no-release-info --format {format}")
        .quiet()
        .read()
        .context("asking apt for the host's configured sources (apt-get indextargets)")?;
    archives_from_indextargets(&listing)
}

/// Picks the Debian archive (the repository that serves the host's own suite) and its security
/// archive out of `TARGET_OF<TAB>REPO_URI<TAB>RELEASE` lines.
pub fn archives_from_indextargets(listing: &str) -> Result<Archives> {
    let mut main = None;
    let mut security = None;
    for line in listing.lines() {
        let mut fields = line.split('\t');
        let (Some(target_of), Some(uri), Some(release)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if target_of != "deb" {
            continue;
        }
        let uri = if uri.ends_with('/') {
            uri.to_owned()
        } else {
            format!("{uri}/")
        };
        if release == HOST_SUITE && main.is_none() {
            main = Some(uri);
        } else if release == format!("{HOST_SUITE}{SECURITY_SUFFIX}") && security.is_none() {
            security = Some(uri);
        }
    }
    let Some(main) = main else {
        bail!(
            "the host's apt sources have no `deb` entry for Debian {HOST_SUITE}: the pipeline takes the Debian \
             archive address from it (see /etc/apt/sources.list.d/)"
        );
    };
    Ok(Archives { main, security })
}

/// The private `sources.list` of `suite` for one architecture: binary and source entries for
/// the suite and, on a stable suite, its updates and security pockets.
/// Where Debian's pool keeps a file of source package `source` below an archive's address:
/// `pool/main/{prefix}/{source}/{file}`, the prefix being the first letter (`lib` and the
/// fourth for `lib*` packages). Used when a locked source version has left the suite's index
/// but its files are still served.
pub fn pool_uri(archive: &str, source: &str, filename: &str) -> String {
    let prefix = match source.strip_prefix("lib") {
        Some(rest) if !rest.is_empty() => &source[..4],
        _ => &source[..1],
    };
    format!("{archive}pool/{COMPONENT}/{prefix}/{source}/{filename}")
}

pub fn render_sources(suite: Suite, archives: &Archives, deb_arch: &str) -> String {
    let mut pockets = vec![(archives.main.as_str(), suite.name().to_owned())];
    if !suite.is_unstable() {
        pockets.push((archives.main.as_str(), format!("{suite}{UPDATES_SUFFIX}")));
        if let Some(security) = &archives.security {
            pockets.push((security.as_str(), format!("{suite}{SECURITY_SUFFIX}")));
        }
    }
    let mut text = format!("# Generated by xtask (crate::debian) for {suite} on {deb_arch}: do not edit.\n");
    for (uri, pocket) in pockets {
        text.push_str(&format!("deb [arch={deb_arch}] {uri} {pocket} {COMPONENT}\n"));
        text.push_str(&format!("deb-src {uri} {pocket} {COMPONENT}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_follow_debian_prefixes() {
        let base = "http://mirror.invalid/debian/";
        assert_eq!(
            pool_uri(base, "containerd", "containerd_2.1.9+ds1-1.dsc"),
            "http://mirror.invalid/debian/pool/main/c/containerd/containerd_2.1.9+ds1-1.dsc"
        );
        assert_eq!(
            pool_uri(base, "libseccomp", "x.dsc"),
            "http://mirror.invalid/debian/pool/main/libs/libseccomp/x.dsc"
        );
    }

    const LISTING: &str = "deb\thttp://mirror.invalid/debian-security/\tbookworm-security\n\
                           deb\thttp://mirror.invalid/debian/\tbookworm\n\
                           deb\thttp://mirror.invalid/debian/\tbookworm-updates\n\
                           deb\thttps://other.invalid/apt\tnodistro\n";

    #[test]
    fn the_host_archives_are_the_ones_serving_its_own_suite() {
        let archives = archives_from_indextargets(LISTING).unwrap();
        assert_eq!(archives.main, "http://mirror.invalid/debian/");
        assert_eq!(
            archives.security.as_deref(),
            Some("http://mirror.invalid/debian-security/")
        );
        let err = archives_from_indextargets("deb\thttps://other.invalid/apt\tnodistro\n").unwrap_err();
        assert!(err.to_string().contains("no `deb` entry for Debian bookworm"), "{err}");
    }

    #[test]
    fn a_stable_suite_gets_its_pockets_and_sid_does_not() {
        let archives = archives_from_indextargets(LISTING).unwrap();
        let trixie = render_sources(Suite::parse("trixie").unwrap(), &archives, "arm64");
        assert!(trixie.contains("deb [arch=arm64] http://mirror.invalid/debian/ trixie main\n"));
        assert!(trixie.contains("deb-src http://mirror.invalid/debian/ trixie-updates main\n"));
        assert!(trixie.contains("deb [arch=arm64] http://mirror.invalid/debian-security/ trixie-security main\n"));
        let sid = render_sources(Suite::parse("sid").unwrap(), &archives, "amd64");
        assert_eq!(sid.lines().filter(|line| line.starts_with("deb")).count(), 2, "{sid}");
    }

    #[test]
    fn an_unknown_suite_is_refused_naming_the_known_ones() {
        assert_eq!(
            Suite::parse("buster").unwrap_err().to_string(),
            "unknown Debian suite \"buster\": use one of bookworm, trixie, sid"
        );
    }
}

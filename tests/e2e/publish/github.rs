//! `publish --github-release`: the exact `gh` calls (through the stand-in), re-runs that skip
//! existing assets, and pre-releases.

use crate::publish_support::{build_release, publish_setup, stderr_of, GhStandin};
use crate::support::{run_ok, sha256_file};

#[test]
fn github_release_goes_through_gh_with_exact_calls_and_reruns_skip_existing_assets() {
    let (work, cdn, keys, dist) = publish_setup("0.2.0");
    let gh = GhStandin::new();
    let repo = "example-owner/boot-assets";
    let run = |gh: &GhStandin| {
        let mut command = cdn.publish(&dist, "0.2.0", &keys);
        command.args(["--github-release", "--github-repo", repo, "--github-target", "0123abc"]);
        gh.apply(&mut command);
        run_ok(&mut command)
    };
    run(&gh);
    let d = |p: &str| dist.join(p).display().to_string();
    let notes_sha = sha256_file(&dist.join("manifest.json"));
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[0], ["--version"]);
    assert_eq!(
        calls[1],
        [
            "release",
            "view",
            "v0.2.0",
            "--repo",
            repo,
            "--json",
            "tagName,isPrerelease,assets"
        ]
    );
    assert_eq!(
        &calls[2][..7],
        [
            "release",
            "create",
            "v0.2.0",
            "--repo",
            repo,
            "--title",
            "boot-assets v0.2.0"
        ]
    );
    assert_eq!(calls[2][7], "--notes");
    assert!(calls[2][8].contains(&notes_sha), "{}", calls[2][8]);
    assert_eq!(&calls[2][9..], ["--target", "0123abc"], "no --prerelease for 0.2.0");
    assert_eq!(
        calls[3],
        [
            "release".to_owned(),
            "upload".into(),
            "v0.2.0".into(),
            "--repo".into(),
            repo.into(),
            d("arm64/boot-assets-arm64-v0.2.0.tar.gz"),
            d("arm64/boot-assets-arm64-v0.2.0.tar.gz.sha256"),
            d("x86_64/boot-assets-x86_64-v0.2.0.tar.gz"),
            d("x86_64/boot-assets-x86_64-v0.2.0.tar.gz.sha256"),
            d("manifest.json"),
            d("manifest.json.minisig"),
        ]
    );
    let assets = gh.assets_dir(repo, "v0.2.0");
    assert_eq!(std::fs::read_dir(&assets).unwrap().count(), 6);
    assert_eq!(
        std::fs::read(assets.join("manifest.json.minisig")).unwrap(),
        cdn.object("asset/v0.2.0/manifest.json.minisig").unwrap()
    );

    // A re-run looks, finds every asset, and uploads none.
    run(&gh);
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1][1], "view");

    // An interrupted upload left one asset out: only that one goes up.
    std::fs::remove_file(assets.join("manifest.json")).unwrap();
    run(&gh);
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[2],
        ["release", "upload", "v0.2.0", "--repo", repo, &d("manifest.json")]
    );

    // A pre-release becomes a GitHub pre-release, and users following latest.json never get it.
    let rc = build_release(&work.path().join("rc"), "0.3.0-rc.1", 0, None);
    let mut command = cdn.publish(&rc, "0.3.0-rc.1", &keys);
    command.args(["--github-release", "--github-repo", repo]);
    gh.apply(&mut command);
    let log = stderr_of(&run_ok(&mut command));
    assert!(
        log.contains("latest.json is left alone: 0.3.0-rc.1 is a pre-release"),
        "{log}"
    );
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
    let calls = gh.take_calls();
    assert_eq!(calls[2][..3], ["release", "create", "v0.3.0-rc.1"]);
    assert_eq!(calls[2].last().unwrap(), "--prerelease", "{calls:?}");
}

//! One library, one feature set: the library the tests and `cargo xtask fetch` run is built
//! with exactly the features the runtime's build gets, so they send exactly the headers the
//! runtime sends. (Cargo unifies features across the workspace: a `ureq` with default features
//! in xtask/Cargo.toml once made every workspace build send `Accept-Encoding: gzip` and decode
//! gzip, which the runtime's build never does.)

use std::process::Command;

use crate::cdn_fixture::Fixture;
use crate::fault_server::Request;
use crate::support::{project_root, run_ok};

/// The only request headers the runtime's build of the library sends.
const RUNTIME_HEADERS: [&str; 4] = ["host", "user-agent", "accept", "range"];

/// Every header name of `requests` that the runtime's build would not send, with the request.
fn foreign_headers(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|request| {
            request
                .headers
                .iter()
                .filter(|(name, _)| !RUNTIME_HEADERS.contains(&name.as_str()))
                .map(move |(name, value)| format!("{}: {name}: {value}", request.path))
        })
        .collect()
}

#[test]
fn the_library_in_the_tests_sends_only_the_runtimes_headers() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = fixture.server.requests();
    assert!(!requests.is_empty());
    assert_eq!(foreign_headers(&requests), Vec::<String>::new());
}

#[test]
fn cargo_xtask_fetch_sends_only_the_runtimes_headers() {
    let fixture = Fixture::new();
    let dest = tempfile::tempdir().unwrap();
    run_ok(&mut fixture.fetch_command(dest.path()));
    let requests = fixture.server.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert_eq!(
        foreign_headers(&requests),
        Vec::<String>::new(),
        "a workspace build of the library sends headers the runtime's build does not: \
         features of a workspace member leak into it (see `cargo tree -e features -i ureq --workspace`)"
    );
}

/// The features cargo resolves for `package` (`ureq`, …) when building `scope` along `edges`.
fn features_of(package: &str, edges: &str, scope: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = run_ok(
        Command::new(cargo)
            .args([
                "tree",
                "--offline",
                "--prefix",
                "none",
                "--edges",
                edges,
                "--invert",
                package,
            ])
            .args(scope.split(' '))
            .current_dir(project_root()),
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut features: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{package} feature \"")))
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    features.sort();
    features.dedup();
    features
}

#[test]
fn the_workspace_builds_the_download_path_with_the_runtimes_features() {
    for package in ["ureq", "ureq-proto", "rustls"] {
        // The runtime links the library alone; the workspace adds xtask and every test's
        // dev-dependencies (the upstream client among them).
        let runtime = features_of(package, "normal,features", "--package boot-assets");
        let workspace = features_of(package, "all", "--workspace");
        assert!(!runtime.is_empty(), "{package}: cargo tree found no features");
        assert_eq!(
            workspace, runtime,
            "{package}: the workspace (xtask, the tests) builds it with other features than the runtime's build"
        );
    }
}

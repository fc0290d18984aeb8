//! Error messages that name what a user needs: a refused redirect, an unusable install dir.

use boot_assets::asset_manager::AssetError;

use super::rootfs_requests;
use crate::cdn_fixture::{rootfs_path, Fixture};
use crate::fault_server::Fault;

#[test]
fn a_refused_redirect_names_both_urls_and_why() {
    let fixture = Fixture::new();
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo("http://mirror.example/rootfs".into()));
    let error = fixture.manager().prepare().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "GET {}: refusing the redirect to http://mirror.example/rootfs: the target is plain http to a host \
             that is not loopback (insecure http is not allowed)",
            fixture.rootfs_url()
        )
    );
    assert_eq!(rootfs_requests(&fixture).len(), 1, "a refused redirect is not retried");
}

#[test]
fn an_unusable_install_dir_is_named_as_the_local_directory() {
    let mut fixture = Fixture::new();
    fixture.add_binaries(&[("docker-init", Some("libexec/docker"), b"init")]);
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("runtime");
    let bin_dir = runtime.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    // A regular file of the user's where the install dir's first component belongs.
    std::fs::write(runtime.join("libexec"), b"not a directory").unwrap();
    let error = fixture.manager().prepare_binaries(&bin_dir).unwrap_err();
    assert!(matches!(error, AssetError::InstallDir { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "binary docker-init: cannot use the local directory {} (install_dir \"libexec/docker\", relative to the \
             parent of the runtime bin dir): opening directory {}: a regular file is in the way where a directory \
             belongs; remove it",
            runtime.join("libexec/docker").display(),
            runtime.join("libexec").display()
        )
    );
    assert_eq!(std::fs::read(runtime.join("libexec")).unwrap(), b"not a directory");
}

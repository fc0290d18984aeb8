//! The install's crash contract on Linux: a verified file is renamed into place without waiting
//! for the disk, and its `.verified` record names the boot it was written in. Within that boot
//! the record is trusted (and the first warm start makes the install durable); a record of
//! another boot (a reboot or crash, simulated by rewriting the record's boot) is not, so the
//! digest decides: data that never reached the disk is fetched again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use boot_assets::asset_manager::Phase;
use boot_assets::cdn;

use crate::cdn_fixture::{rootfs_path, Fixture};

/// A boot id that is not this machine's.
const OTHER_BOOT: &str = "00000000-0000-4000-8000-000000000000";

fn this_boot() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("reading /proc/sys/kernel/random/boot_id")
        .trim()
        .to_owned()
}

fn record_path(fixture: &Fixture) -> PathBuf {
    fixture.version_dir().join(format!(".{}.verified", cdn::ROOTFS_FILE))
}

fn read_record(fixture: &Fixture) -> String {
    std::fs::read_to_string(record_path(fixture)).unwrap()
}

fn rootfs_downloads(fixture: &Fixture) -> usize {
    fixture.server.requests_for(&rootfs_path()).len()
}

/// The phases reported for the rootfs by one `prepare()`.
fn prepare_phases(fixture: &Fixture) -> Vec<Phase> {
    let phases = Arc::new(Mutex::new(Vec::new()));
    let seen = phases.clone();
    let manager = fixture
        .builder()
        .progress(move |p| {
            if p.name == "rootfs" {
                seen.lock().unwrap().push(p.phase);
            }
        })
        .build()
        .unwrap();
    manager.prepare().unwrap();
    let phases = phases.lock().unwrap().clone();
    phases
}

/// A record exactly as the library writes it, for the file as it is now, naming `boot`:
/// what a crash can leave behind (the metadata on disk, the data not).
fn forge_record(path: &Path, sha256: &str, boot: &str) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    format!(
        "sha256={sha256} size={} mtime_ns={} ctime_ns={} inode={} device={} boot={boot}\n",
        m.size(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        m.ino(),
        m.dev()
    )
}

#[test]
fn an_install_names_its_boot_and_the_first_warm_start_makes_it_durable() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let record = read_record(&fixture);
    assert!(record.contains(&format!(" boot={}", this_boot())), "{record}");

    let phases = prepare_phases(&fixture);
    assert!(phases.contains(&Phase::Cached), "{phases:?}");
    assert!(
        !phases.contains(&Phase::Verifying),
        "re-hashed within the same boot: {phases:?}"
    );
    assert_eq!(rootfs_downloads(&fixture), 1);
    let record = read_record(&fixture);
    assert!(
        !record.contains("boot="),
        "still not durable after a warm start: {record}"
    );
}

#[test]
fn after_a_reboot_an_install_not_known_durable_is_rehashed_once() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let record = read_record(&fixture);
    std::fs::write(record_path(&fixture), record.replace(&this_boot(), OTHER_BOOT)).unwrap();

    let phases = prepare_phases(&fixture);
    assert!(
        phases.contains(&Phase::Verifying),
        "trusted a record of another boot: {phases:?}"
    );
    assert_eq!(rootfs_downloads(&fixture), 1, "intact data was fetched again");
    assert!(!read_record(&fixture).contains("boot="));

    let phases = prepare_phases(&fixture);
    assert!(!phases.contains(&Phase::Verifying), "re-hashed twice: {phases:?}");
}

#[test]
fn after_a_reboot_data_that_never_reached_the_disk_is_fetched_again() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let rootfs = fixture.version_dir().join(cdn::ROOTFS_FILE);
    let sha256 = crate::support::sha256_hex(&fixture.rootfs);
    // The metadata survived the crash, the data did not: zeros where the image was.
    std::fs::write(&rootfs, vec![0u8; fixture.rootfs.len()]).unwrap();

    // In the boot that wrote it, such a record is trusted: the page cache is the file.
    std::fs::write(record_path(&fixture), forge_record(&rootfs, &sha256, &this_boot())).unwrap();
    prepare_phases(&fixture);
    assert_eq!(rootfs_downloads(&fixture), 1);
    assert_eq!(std::fs::read(&rootfs).unwrap(), vec![0u8; fixture.rootfs.len()]);

    // Named by another boot, the digest decides, and the image is fetched again.
    std::fs::write(&rootfs, vec![0u8; fixture.rootfs.len()]).unwrap();
    std::fs::write(record_path(&fixture), forge_record(&rootfs, &sha256, OTHER_BOOT)).unwrap();
    prepare_phases(&fixture);
    assert_eq!(rootfs_downloads(&fixture), 2, "served data a crash may have lost");
    fixture.assert_installed();
}

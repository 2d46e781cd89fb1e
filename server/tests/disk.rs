//! A full data directory and a read-only blob directory (small tmpfs mounts made by the
//! tests, which need root, as CI runs them): reads keep working (cache writes are best effort), uploads fail with
//! a JSON error (507 when full), DELETE frees space on a full disk and keeps the record
//! when it cannot remove the blob, /healthz fails while /readyz passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the disk tests mount a small tmpfs and need root (CI runs them as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed");
        Mount(dir.to_path_buf())
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o remount,{opt} failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir`; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = Mount::tmpfs(&tmp.path().join("data"), "24m");
    let c = config(&mnt.0);
    let server = start(c.clone());
    let base = server.url();
    let a = upload(&base, &profile_bytes(60, 1), "?name=a");
    // Big enough that removing its blob leaves SQLite room for its journal.
    let b = upload(&base, &profile_bytes(20_000, 2), "?name=b");
    assert_eq!(get(&format!("{base}/api/v1/profiles/{a}")).status, 200);
    server.stop();
    // Forget the tier totals: the next preparation wants to write them again.
    rusqlite::Connection::open(mnt.0.join("prof.db"))
        .unwrap()
        .execute("UPDATE profiles SET tiers = NULL", [])
        .unwrap();

    // Full.
    let filler = fill(&mnt.0);
    let server = start(c.clone());
    let base = server.url();
    let h = get(&format!("{base}/healthz"));
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.error().contains("blob store"), "{}", h.error());
    assert_eq!(get(&format!("{base}/readyz")).status, 200);
    for suffix in ["", "/tree", "/timeline", "/functions", "/download"] {
        let r = get(&format!("{base}/api/v1/profiles/{a}{suffix}"));
        assert_eq!(r.status, 200, "{suffix} on a full disk: {}", r.text());
    }
    assert_eq!(get(&format!("{base}/plain/p/{a}")).status, 200);
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles"),
        Some(&profile_bytes(60, 3)),
        None,
    );
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.error().contains("full"), "{}", r.error());
    // DELETE frees space (the blob goes first) and succeeds.
    let r = request("DELETE", &format!("{base}/api/v1/profiles/{b}"), None, None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(get(&format!("{base}/api/v1/profiles/{b}")).status, 404);
    std::fs::remove_file(filler).unwrap();
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    server.stop();
}

#[test]
fn a_read_only_blob_directory() {
    // The blobs on their own tmpfs, remounted read-only while the server runs (the
    // database's file system cannot be: SQLite keeps its files open for writing).
    let tmp = tempfile::tempdir().unwrap();
    let blobs = Mount::tmpfs(&tmp.path().join("blobs"), "16m");
    let mut c = config(&tmp.path().join("data"));
    c.store = Some(prof_server::store::StoreUrl::File(blobs.0.clone()));
    let server = start(c.clone());
    let base = server.url();
    let a = upload(&base, &profile_bytes(60, 1), "?name=a");
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    blobs.remount("ro");
    let h = get(&format!("{base}/healthz"));
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.error().contains("Read-only"), "{}", h.error());
    assert_eq!(get(&format!("{base}/readyz")).status, 200);
    assert_eq!(get(&format!("{base}/api/v1/profiles")).json()["total"], 1);
    assert_eq!(get(&format!("{base}/api/v1/profiles/{a}/tree")).status, 200);
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles"),
        Some(&profile_bytes(60, 4)),
        None,
    );
    assert_eq!(r.status, 500, "{}", r.text());
    r.error();
    // The blob cannot be removed: the record stays (no orphan), the DELETE can be retried.
    let r = request("DELETE", &format!("{base}/api/v1/profiles/{a}"), None, None);
    assert_eq!(r.status, 500, "{}", r.text());
    r.error();
    assert_eq!(get(&format!("{base}/api/v1/profiles/{a}")).status, 200);
    blobs.remount("rw");
    let r = request("DELETE", &format!("{base}/api/v1/profiles/{a}"), None, None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(stored_blobs(&c).is_empty());
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    server.stop();
}

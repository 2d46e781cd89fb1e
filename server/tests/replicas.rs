//! Several replicas on one storage (PostgreSQL + S3, and SQLite + files shared by two
//! servers): what one stores the other serves, symbol uploads and deletes through one
//! are seen by the other's cache, a replica killed mid-burst loses nothing it
//! acknowledged and leaves nothing half-written; retention and the orphan sweeper.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

backend_tests!(
    two_replicas_share_profiles_symbols_and_deletes,
    a_replica_killed_during_an_upload_burst_loses_nothing_acknowledged,
    retention_and_the_orphan_sweeper_run_in_the_background,
);

fn names(tree: &Value) -> Vec<String> {
    tree["functions"]["name"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn two_replicas_share_profiles_symbols_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // Neither replica may read this executable: names come from uploaded symbols only.
    c.debug_dirs.clear();
    let a = start(c.clone());
    let b = start(c);
    let (ua, ub) = (a.url(), b.url());

    let bytes = profile_bytes(50, 1);
    let id = upload(&ua, &bytes, "?name=shared&tag=fleet");
    let l = get(&format!("{ub}/api/v1/profiles?tag=fleet")).json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["items"][0]["id"], id.as_str());
    assert_eq!(
        get(&format!("{ub}/api/v1/profiles/{id}/download")).body,
        bytes
    );
    // Both replicas prepare it (and cache it) without symbols.
    for u in [&ua, &ub] {
        let t = get(&format!("{u}/api/v1/profiles/{id}/tree")).json();
        assert!(
            !names(&t).iter().any(|n| n == "prof_srv_leaf"),
            "{:?}",
            names(&t)
        );
    }
    // Symbols uploaded through B: A's cached preparation is stale and redone.
    let bid = prof_analysis::hex(&self_module().build_id);
    let me = std::fs::read("/proc/self/exe").unwrap();
    let r = request(
        "PUT",
        &format!("{ub}/api/v1/symbols/{bid}"),
        Some(&me),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let t = get(&format!("{ua}/api/v1/profiles/{id}/tree")).json();
    assert!(
        names(&t).iter().any(|n| n == "prof_srv_leaf"),
        "{:?}",
        names(&t)
    );
    assert_eq!(
        request("HEAD", &format!("{ua}/api/v1/symbols/{bid}"), None, None).status,
        200
    );
    // Deleted through B: gone from A too, cache or not.
    let r = request("DELETE", &format!("{ub}/api/v1/profiles/{id}"), None, None);
    assert_eq!(r.status, 204);
    for suffix in ["", "/tree", "/download", "/timeline"] {
        let r = get(&format!("{ua}/api/v1/profiles/{id}{suffix}"));
        assert_eq!(r.status, 404, "{suffix}: {}", r.text());
    }
    a.stop();
    b.stop();
}

fn a_replica_killed_during_an_upload_burst_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let victim = server_process(&c);
    let url = victim.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // (id, bytes) of every upload answered 201.
    type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let acked: Acked = Arc::default();
    let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (stop, acked, sent, url) = (stop.clone(), acked.clone(), sent.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(20))
                    .build();
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let bytes = profile_bytes(40 + (k % 7), t * 1000 + k);
                    k += 1;
                    sent.lock().unwrap().push(bytes.clone());
                    match agent
                        .post(&format!("{url}/api/v1/profiles"))
                        .send_bytes(&bytes)
                    {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.into_json().unwrap();
                            let id = v["id"].as_str().unwrap().to_string();
                            acked.lock().unwrap().push((id, bytes));
                        }
                        // Refused or cut off by the kill: not acknowledged.
                        _ => {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    // Let the burst run, then kill the replica in the middle of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "only {} uploads acknowledged",
        acked.len()
    );

    // Another replica on the same storage.
    let survivor = start(c.clone());
    let base = survivor.url();
    let l = get(&format!("{base}/api/v1/profiles?limit=1000")).json();
    let listed: Vec<String> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    // Nothing acknowledged is lost: every acknowledged profile is listed, byte for byte.
    for (id, bytes) in &acked {
        assert!(listed.contains(id), "acknowledged {id} is missing");
        assert_eq!(
            &get(&format!("{base}/api/v1/profiles/{id}/download")).body,
            bytes,
            "{id}"
        );
    }
    // Nothing half-written is served: whatever is listed (acknowledged or not) is whole.
    for id in &listed {
        let body = get(&format!("{base}/api/v1/profiles/{id}/download")).body;
        assert!(sent.contains(&body), "{id} is not one of the uploads");
    }
    // Blobs of uploads cut between blob and row are orphans: swept, and only they.
    let (db, store) = c.storage_urls();
    let storage = prof_server::Storage::open(&db, &store, &c.data_dir, c.s3.as_ref()).unwrap();
    storage.sweep_orphans(Duration::ZERO).unwrap();
    assert_eq!(stored_blobs(&c).len(), listed.len());
    for (id, bytes) in &acked {
        assert_eq!(
            &get(&format!("{base}/api/v1/profiles/{id}/download")).body,
            bytes
        );
    }
    survivor.stop();
}

fn retention_and_the_orphan_sweeper_run_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_profiles = Some(3);
    c.keep_days = Some(7);
    c.orphan_grace = Duration::ZERO;
    c.maintenance_every = Duration::from_millis(200);
    // A profile 30 days old (stored directly: the API stamps the current time) and an
    // orphan blob (an upload cut between its blob and its row).
    let (db, store) = c.storage_urls();
    let storage = prof_server::Storage::open(&db, &store, &c.data_dir, c.s3.as_ref()).unwrap();
    let old_bytes = profile_bytes(20, 99);
    let old = prof_server::store::ProfileRecord {
        id: "00000000000000aa".into(),
        name: "old".into(),
        tags: vec![],
        created_unix_ms: prof_server::store::now_ms() - 30 * 86_400_000,
        size: 0,
        blob: String::new(),
        command: "old".into(),
        processes: 1,
        threads: 1,
        samples: 1,
        weight: 1,
        duration_s: 1.0,
        start_unix_ns: 0,
        mode: "cpu".into(),
        truncated: false,
        build_ids: vec![],
        tiers: None,
    };
    storage.add_profile(old, &old_bytes).unwrap();
    let orphan = prof_server::store::blob_key(b"orphan");
    storage.blobs.put(&orphan, b"orphan").unwrap();
    drop(storage);

    let server = start(c.clone());
    let base = server.url();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(upload(&base, &profile_bytes(20, i), ""));
        // Distinct creation times order the list.
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let l = get(&format!("{base}/api/v1/profiles?limit=100")).json();
        let listed: Vec<&str> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        let blobs = stored_blobs(&c);
        if listed.len() == 3 && !blobs.contains(&orphan) {
            // The newest three remain; the 30-day-old one and the two oldest are gone.
            assert_eq!(listed, [&ids[4], &ids[3], &ids[2]]);
            assert_eq!(blobs.len(), 3);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention/sweeper did not run: {listed:?}, {} blobs",
            blobs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = get(&format!("{base}/metrics")).text();
    assert!(m.contains("prof_retention_deletes_total 3"), "{m}");
    assert!(m.contains("prof_orphan_blobs_swept_total 1"), "{m}");
    server.stop();
}

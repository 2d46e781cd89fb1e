//! No request can panic the server or make it fail: random bytes, mutated and cut
//! profiles, random query strings. Every answer is a 2xx or a 4xx with a JSON error, and
//! the server stays healthy with its stored profiles intact.

mod common;

use common::*;
use prof_e2e::rng::Rng;
use prof_format::{node_kind, LogWriter, Module, PendingSample};

/// A small valid profile whose module is not on disk (preparing it is quick).
fn base_profile() -> Vec<u8> {
    let mut w = LogWriter::new(Vec::new());
    w.process(&process_info(77));
    w.module(&Module {
        id: 1,
        path: "/nonexistent/fuzz-app".into(),
        build_id: vec![1, 2, 3, 4],
        bias: 0x1000_0000,
        ranges: vec![(0x1000_1000, 0x1000_9000)],
    });
    w.thread(77, "main");
    let mut samples = Vec::new();
    for i in 0..64u64 {
        let leaf = w.stacks.intern([
            (node_kind::NATIVE, 0x1000_1010),
            (node_kind::NATIVE, 0x1000_2000 + (i % 5) * 0x100),
            (node_kind::SYSCALL, 1 + i % 3),
        ]);
        samples.push(PendingSample {
            time_ns: i * PERIOD_NS,
            leaf,
            weight: 1 + (i % 2) as u32,
            flags: (i % 3) as u32,
        });
    }
    w.samples(77, &samples);
    w.lost(3);
    w.into_inner().unwrap()
}

fn assert_sane(r: &Resp, what: &str) {
    assert!(
        (200..300).contains(&r.status) || (400..500).contains(&r.status),
        "{what}: status {} {}",
        r.status,
        r.text()
    );
    if r.status >= 400 {
        // A JSON error, always.
        let _ = r.error();
    }
}

#[test]
fn garbage_mutations_and_random_queries_never_fail_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_upload_bytes = 64 << 10;
    let server = start(c);
    let base = server.url();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);

    let good = base_profile();
    let keep = upload(&base, &good, "?name=keeper");

    // Random bytes, some starting with the magic.
    for i in 0..150 {
        let len = rng.below(2048) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && b.len() >= 12 {
            b[..8].copy_from_slice(prof_format::MAGIC);
            b[8] = 1;
            b[9] = 0;
        }
        let r = request("POST", &format!("{base}/api/v1/profiles"), Some(&b), None);
        assert_sane(&r, "random upload");
    }

    // Mutated and cut copies of a valid profile: refused, or stored and then served.
    let (mut served, mut refused) = (0, 0);
    for _ in 0..150 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = 12 + rng.below(b.len() as u64 - 12) as usize;
            b[at] = rng.next_u64() as u8;
        }
        if rng.below(3) == 0 {
            b.truncate(12 + rng.below(b.len() as u64 - 12) as usize);
        }
        let r = request("POST", &format!("{base}/api/v1/profiles"), Some(&b), None);
        assert_sane(&r, "mutated upload");
        refused += usize::from(r.status == 400);
        if r.status == 201 && served < 25 {
            served += 1;
            let id = r.json()["id"].as_str().unwrap().to_string();
            for route in [
                "",
                "/tree",
                "/tree?invert=1",
                "/timeline",
                "/functions",
                "/download",
            ] {
                let r = get(&format!("{base}/api/v1/profiles/{id}{route}"));
                assert_eq!(
                    r.status,
                    200,
                    "{route} of a stored mutated profile: {}",
                    r.text()
                );
            }
        }
    }

    assert!(
        served > 5 && refused > 5,
        "served {served}, refused {refused}"
    );

    // Random query strings on the query routes.
    let keys = [
        "process",
        "thread",
        "tier",
        "from",
        "to",
        "axis",
        "focus",
        "invert",
        "max_nodes",
        "search",
        "buckets",
        "limit",
        "sort",
        "format",
        "bogus",
    ];
    let values = [
        "",
        "0",
        "1",
        "77",
        "-1",
        "1e309",
        "NaN",
        "0.01",
        "999999999999999999999",
        "jit",
        "native,gc",
        "cpu",
        "wall",
        "true",
        "maybe",
        "(",
        ".*",
        "%00",
        "%FF%FE",
        "a%20b",
        "[syscall write]",
        "fuzz-app+0x2010",
    ];
    for _ in 0..300 {
        let route = ["tree", "timeline", "functions"][rng.below(3) as usize];
        let mut q = Vec::new();
        for _ in 0..rng.below(4) {
            q.push(format!(
                "{}={}",
                keys[rng.below(keys.len() as u64) as usize],
                values[rng.below(values.len() as u64) as usize]
            ));
        }
        let url = format!("{base}/api/v1/profiles/{keep}/{route}?{}", q.join("&"));
        let r = get(&url);
        assert_sane(&r, &url);
    }

    // Still healthy; the first profile intact.
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    assert_eq!(
        get(&format!("{base}/api/v1/profiles/{keep}/download")).body,
        good
    );
    let metrics = get(&format!("{base}/metrics")).text();
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    server.stop();
}

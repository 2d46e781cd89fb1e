//! Bounds and policies: a gzip bomb is refused without being expanded (on both upload
//! routes, and by `prof report`), HTTP-layer errors are JSON, and symbolization of an
//! uploaded profile reads nothing outside the symbol store and the `--debug-dir`s.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

/// A gzip stream (several members, which gzip readers concatenate) that expands to
/// `mib` MiB of zeros while weighing about 1 MiB per 1000 MiB.
fn bomb(mib: usize) -> Vec<u8> {
    static MEMBER: OnceLock<Vec<u8>> = OnceLock::new();
    let member = MEMBER.get_or_init(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    });
    member.repeat(mib / 64)
}

#[test]
fn a_gzip_bomb_is_refused_without_being_expanded() {
    let body = &bomb(2048)[..];
    assert!(body.len() < 5 << 20, "{} bytes", body.len());
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_upload_bytes = 5 << 20;
    let server = server_process(&c);
    let base = server.url.clone();
    let before = server.peak_rss();
    // Three at once, on both upload routes.
    let rid = {
        let r = request(
            "POST",
            &format!("{base}/api/runtime/new"),
            Some(b"{}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["runtime_id"].as_str().unwrap().to_string()
    };
    let urls = [
        format!("{base}/api/v1/profiles"),
        format!("{base}/api/v1/profiles"),
        format!("{base}/api/runtime/upload/cpu/{rid}/add"),
    ];
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = urls
            .iter()
            .map(|u| s.spawn(move || request("POST", u, Some(body), None)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &answers {
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.error().contains("expands to more than"), "{}", r.error());
        assert!(r.error().contains("--max-upload-mb"), "{}", r.error());
    }
    let grown = server.peak_rss().saturating_sub(before);
    // Each decompression stops at 5 MiB (+ the 2 MiB bodies): far from 3 x 2 GiB.
    assert!(grown < 150 << 20, "peak RSS grew by {} MiB", grown >> 20);
    assert_eq!(get(&format!("{base}/api/v1/profiles")).json()["total"], 0);
    server.kill();
}

#[test]
fn prof_report_bounds_decompression_and_a_flag_raises_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.gz");
    // 64 MiB of zeros against a 16 MiB bound (the default, 256 MiB, works the same way;
    // a debug build's inflater is slow, so the test stays small).
    std::fs::write(&path, bomb(64)).unwrap();
    // Its peak memory, measured by a small python3 parent (this test process's own
    // high-water mark would leak into a child it forks itself).
    let o = Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n\
             sys.stderr.buffer.write(p.stderr)\n\
             print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        ])
        .arg(&prof_e2e::bins().prof)
        .args(["report", "--max-gunzip-mb", "16"])
        .arg(&path)
        .output()
        .expect("python3 is needed (apt-get install python3)");
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    let mut f = out.split_whitespace().map(|w| w.parse::<u64>().unwrap());
    let (code, peak) = (f.next().unwrap(), f.next().unwrap() * 1024);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expands to more than 16 MiB"), "{err}");
    assert!(err.contains("--max-gunzip-mb"), "{err}");
    // Decompression stops at the bound (the output buffer may double past it once).
    assert!(peak < 100 << 20, "prof report peaked at {} MiB", peak >> 20);
    // Raised past the expansion: decompressed, then refused as what it is (zeros).
    let o = Command::new(&prof_e2e::bins().prof)
        .args(["report", "--max-gunzip-mb", "100"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(!err.contains("expands to more than"), "{err}");
}

#[test]
fn http_layer_errors_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let addr = server.addr();
    // A percent-encoding the path extractor refuses, and a query string that is no
    // query: actix answers these before any handler.
    for raw in [
        "GET /api/v1/profiles/%FF%FE/tree HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /api/v1/symbols/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let out = raw_http(addr, raw.as_bytes());
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((400..500).contains(&status), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: Value =
            serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        assert!(v["error"].is_string(), "{out}");
    }
    // Every answer carries a request id (also in the access log).
    let r = get(&format!("{}/api/v1/profiles", server.url()));
    assert!(r.header("x-request-id").is_some_and(|v| v.contains('-')));
    server.stop();
}

#[test]
fn uploaded_profiles_are_symbolized_only_from_trusted_files() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = profile_bytes(30, 0);
    // Untrusted: the profile names this executable, outside every --debug-dir.
    let mut c = config(dir.path());
    c.debug_dirs = vec![dir.path().join("nothing-here")];
    let server = start(c);
    let id = upload(&server.url(), &bytes, "");
    let t = get(&format!("{}/api/v1/profiles/{id}/tree", server.url())).json();
    let names: Vec<String> = tree_paths(&t).into_iter().map(|(p, _)| p).collect();
    assert!(
        !names.iter().any(|p| p.contains("prof_srv_leaf")),
        "read an untrusted file: {names:?}"
    );
    let s = get(&format!("{}/api/v1/profiles/{id}", server.url())).json();
    let warnings = s["summary"].to_string();
    assert!(
        warnings.contains("not among the files this symbolizer may read"),
        "{warnings}"
    );
    server.stop();
    // Trusted: its directory is a --debug-dir.
    let dir2 = tempfile::tempdir().unwrap();
    let server = start(config(dir2.path()));
    let id = upload(&server.url(), &bytes, "");
    let t = get(&format!("{}/api/v1/profiles/{id}/tree", server.url())).json();
    assert!(tree_paths(&t)
        .iter()
        .any(|(p, _)| p.contains("prof_srv_leaf")));
    server.stop();
}

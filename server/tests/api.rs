//! The HTTP API over real HTTP on an ephemeral loopback port, each test on SQLite + files
//! and on PostgreSQL + S3 (see common/backends.rs).

mod common;

use common::*;

backend_tests!(
    upload_list_summary_tree_timeline_download_delete,
    bad_uploads_and_requests_get_clear_4xx,
    tokens_guard_uploads_and_deletes_and_private_reads,
    fifty_concurrent_uploads_are_all_stored_intact,
    a_restarted_server_still_has_everything,
    symbols_uploaded_by_build_id_name_a_binary_the_server_never_saw,
    health_metrics_and_pages,
);

const N: u64 = 400;

fn upload_list_summary_tree_timeline_download_delete() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let server = start(c.clone());
    let base = server.url();
    let bytes = profile_bytes(N, 0);
    let weight = profile_weight(N, 0);

    // Upload.
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles?name=warmup%20run&tag=ci&tag=nightly"),
        Some(&bytes),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert_eq!(v["url"], format!("{base}/p/{id}"));
    assert_eq!(
        r.header("location"),
        Some(&*format!("/api/v1/profiles/{id}"))
    );

    // List.
    let l = get(&format!("{base}/api/v1/profiles")).json();
    assert_eq!(l["total"], 1);
    let item = &l["items"][0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["name"], "warmup run");
    assert_eq!(item["tags"], serde_json::json!(["ci", "nightly"]));
    assert_eq!(item["command"], "srv-test --work");
    assert_eq!(item["samples"], 2 * N + N / 4);
    assert_eq!(item["weight"], weight);
    assert_eq!(item["processes"], 1);
    assert_eq!(item["threads"], 2);
    assert_eq!(item["size"], bytes.len());
    assert_eq!(item["mode"], "cpu");
    assert!(item["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        get(&format!("{base}/api/v1/profiles?tag=ci")).json()["total"],
        1
    );
    assert_eq!(
        get(&format!("{base}/api/v1/profiles?tag=other")).json()["total"],
        0
    );
    assert_eq!(
        get(&format!("{base}/api/v1/profiles?name=WARMUP")).json()["total"],
        1
    );

    // Summary: the same JSON as `prof report --format json`, plus metadata and tiers.
    let s = get(&format!("{base}/api/v1/profiles/{id}"));
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert_eq!(s["name"], "warmup run");
    assert_eq!(s["summary"]["weight"], weight);
    assert_eq!(s["summary"]["processes"][0]["pid"], PID);
    let funcs = s["summary"]["functions"].as_array().unwrap();
    let leaf = funcs.iter().find(|f| f["name"] == "prof_srv_leaf").unwrap();
    assert_eq!(leaf["self"], 2 * N);
    assert!(
        leaf["file"].as_str().unwrap().ends_with("common/mod.rs"),
        "{leaf}"
    );
    assert_eq!(s["tiers"]["interpreter"], N);
    assert_eq!(s["tiers"]["native"], N);
    assert_eq!(s["tiers"]["gc"], N / 4);
    assert_eq!(s["summary"]["notices"], serde_json::json!(["seed 0"]));

    // The list now has the tier totals (computed when the profile was first analyzed).
    let l = get(&format!("{base}/api/v1/profiles")).json();
    assert_eq!(l["items"][0]["tiers"]["gc"], N / 4);

    // Tree.
    let t = get(&format!("{base}/api/v1/profiles/{id}/tree"));
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(t["total"], weight);
    assert_eq!(t["axis"], "cpu");
    assert_eq!(
        t["tiers"],
        serde_json::json!(["interpreter", "warmup", "jit", "native", "gc", "kernel"])
    );
    let paths = tree_paths(&t);
    let find = |p: &str| paths.iter().find(|(q, _)| q == p).map(|(_, w)| *w);
    assert_eq!(find("all"), Some(weight));
    assert_eq!(find("all;prof_srv_outer"), Some(weight));
    assert_eq!(
        find("all;prof_srv_outer;prof_srv_middle;prof_srv_leaf"),
        Some(N)
    );
    assert_eq!(
        find("all;prof_srv_outer;_PyEval_EvalFrameDefault;prof_srv_leaf"),
        Some(N)
    );
    assert_eq!(find("all;prof_srv_outer;gc_collect_main"), Some(N / 4));
    let n = paths.len();
    for key in ["parent", "func", "self", "total"] {
        assert_eq!(t["nodes"][key].as_array().unwrap().len(), n, "{key}");
    }
    let tiers = t["nodes"]["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), n * 6);
    // The root's tier split, and every node's adds up to its total.
    let row = |i: usize| -> Vec<u64> {
        tiers[6 * i..6 * i + 6]
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    assert_eq!(row(0), [N, 0, 0, N, N / 4, 0]);
    for i in 0..n {
        assert_eq!(
            row(i).iter().sum::<u64>(),
            t["nodes"]["total"][i].as_u64().unwrap()
        );
    }
    assert_eq!(t["matched"], Value::Null);

    // Conditional requests: the same query answers 304 to its ETag.
    let r = get(&format!("{base}/api/v1/profiles/{id}/tree"));
    let tag = r.header("etag").unwrap().to_string();
    assert!(tag.starts_with("W/\""), "{tag}");
    let mut again = ureq::get(&format!("{base}/api/v1/profiles/{id}/tree"))
        .set("If-None-Match", &tag)
        .call()
        .unwrap();
    assert_eq!(again.status(), 304);
    again = ureq::get(&format!("{base}/api/v1/profiles/{id}/tree?tier=gc"))
        .set("If-None-Match", &tag)
        .call()
        .unwrap();
    assert_eq!(again.status(), 200);

    // Tree filters.
    let tq = |q: &str| {
        let r = get(&format!("{base}/api/v1/profiles/{id}/tree?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()
    };
    assert_eq!(tq("tier=interpreter")["total"], N);
    assert_eq!(tq("tier=gc,native")["total"], N + N / 4);
    assert_eq!(tq("thread=2")["total"], N / 4);
    assert_eq!(tq(&format!("process={PID}"))["total"], weight);
    // The first N ms of CPU time hold the interpreter phase (and the gc samples taken in
    // that time); the end of the run none of it.
    let first = tq(&format!("to={}", N as f64 * 1e-3));
    let first_paths = tree_paths(&first);
    assert!(
        first_paths
            .iter()
            .all(|(p, _)| !p.contains("prof_srv_middle")),
        "{first_paths:?}"
    );
    let last = tq(&format!("from={}&axis=wall", (N + 10) as f64 * 1e-3));
    assert!(tree_paths(&last)
        .iter()
        .all(|(p, _)| !p.contains("_PyEval")));
    let focus = tq("focus=prof_srv_leaf");
    assert_eq!(focus["total"], 2 * N);
    assert_eq!(tree_paths(&focus)[1].0, "all;prof_srv_leaf");
    let callers = tq("focus=prof_srv_leaf&invert=1");
    let cp = tree_paths(&callers);
    assert!(
        cp.iter()
            .any(|(p, w)| p == "all;prof_srv_leaf;prof_srv_middle;prof_srv_outer" && *w == N),
        "{cp:?}"
    );
    let folded = tq("max_nodes=3");
    assert!(folded["nodes"]["parent"].as_array().unwrap().len() <= 3);
    assert_eq!(folded["total"], weight);
    assert!(folded["folded_nodes"].as_u64().unwrap() > 0);
    assert!(folded["functions"]["name"]
        .as_array()
        .unwrap()
        .contains(&Value::from("[other]")));
    assert_eq!(tq("search=^gc_")["matched"], N / 4);
    assert_eq!(tq("search=middle|_PyEval")["matched"], 2 * N);

    // Timeline: 10 buckets over the CPU axis; the interpreter share falls, native rises.
    let tl = get(&format!("{base}/api/v1/profiles/{id}/timeline?buckets=10"));
    assert_eq!(tl.status, 200, "{}", tl.text());
    let tl = tl.json();
    assert_eq!(tl["buckets"], 10);
    let counts: Vec<u64> = tl["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 60);
    assert_eq!(counts.iter().sum::<u64>(), weight);
    let (interp, native) = (0, 3);
    assert!(counts[interp] > 0 && counts[native] == 0, "{counts:?}");
    assert!(
        counts[9 * 6 + interp] == 0 && counts[9 * 6 + native] > 0,
        "{counts:?}"
    );
    let end = tl["end_s"].as_f64().unwrap();
    assert!((end - weight as f64 * 1e-3).abs() < 1e-9, "{end}");
    let tl2 = get(&format!(
        "{base}/api/v1/profiles/{id}/timeline?tier=gc&buckets=1"
    ))
    .json();
    assert_eq!(tl2["counts"][4], N / 4);

    // Functions.
    let f = get(&format!("{base}/api/v1/profiles/{id}/functions?limit=2"));
    assert_eq!(f.status, 200, "{}", f.text());
    let f = f.json();
    assert_eq!(f["count"], 5);
    assert_eq!(f["functions"]["name"][0], "prof_srv_leaf");
    assert_eq!(f["self"][0], 2 * N);
    assert_eq!(f["functions"]["name"].as_array().unwrap().len(), 2);
    let f = get(&format!("{base}/api/v1/profiles/{id}/functions?sort=total")).json();
    assert_eq!(f["functions"]["name"][0], "prof_srv_outer");
    assert_eq!(f["total_weight"][0], weight);
    assert_eq!(f["self_tiers"].as_array().unwrap().len(), 5 * 6);
    assert_eq!(
        f["total_tiers"].as_array().unwrap()[..6],
        [N, 0, 0, N, N / 4, 0].map(Value::from)
    );

    // Download: the same bytes.
    let d = get(&format!("{base}/api/v1/profiles/{id}/download"));
    assert_eq!(d.status, 200);
    assert_eq!(d.body, bytes);
    assert_eq!(d.header("content-type"), Some("application/octet-stream"));

    // Delete.
    let del = request(
        "DELETE",
        &format!("{base}/api/v1/profiles/{id}"),
        None,
        None,
    );
    assert_eq!(del.status, 204, "{}", del.text());
    for suffix in ["", "/tree", "/timeline", "/functions", "/download"] {
        let r = get(&format!("{base}/api/v1/profiles/{id}{suffix}"));
        assert_eq!(r.status, 404, "{suffix}");
        assert!(r.error().contains(&id), "{}", r.error());
    }
    assert_eq!(get(&format!("{base}/api/v1/profiles")).json()["total"], 0);
    let del = request(
        "DELETE",
        &format!("{base}/api/v1/profiles/{id}"),
        None,
        None,
    );
    assert_eq!(del.status, 404);
    // Its blob is gone from the store.
    let blobs = stored_blobs(&c);
    assert!(blobs.is_empty(), "{blobs:?}");
    server.stop();
}

fn bad_uploads_and_requests_get_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_upload_bytes = 1 << 20;
    let server = start(c);
    let base = server.url();
    let post = |body: &[u8]| request("POST", &format!("{base}/api/v1/profiles"), Some(body), None);

    let r = post(b"this is not a profile at all, just some text");
    assert_eq!(r.status, 400);
    // Bytes that are no profile in any format the server reads (prof logs, and the
    // vmprof, `perf script` and folded-stack formats it imports): the reader's message.
    assert!(
        r.error().starts_with(
            "not a prof profile, nor a vmprof log, `perf script` output or folded stacks"
        ),
        "{}",
        r.error()
    );
    let r = post(b"");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("the input is empty"), "{}", r.error());
    let header_only = prof_format::LogWriter::new(Vec::new())
        .into_inner()
        .unwrap();
    let r = post(&header_only);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no process"), "{}", r.error());
    let good = profile_bytes(50, 1);
    let r = post(&good[..7]);
    assert_eq!(r.status, 400);
    let mut future = good.clone();
    future[8] = 9;
    let r = post(&future);
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("unsupported prof log version 9"),
        "{}",
        r.error()
    );
    // A record whose payload does not decode: corrupt, refused with the reader's message.
    let mut corrupt = good[..prof_format::HEADER_LEN].to_vec();
    corrupt.extend_from_slice(&[prof_format::kind::PROCESS, 12]);
    corrupt.extend_from_slice(&[0xff; 12]);
    let r = post(&corrupt);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error(), "corrupt record at byte 12: bad process record");

    // A profile cut mid-record (a killed process) is a profile: stored, marked truncated,
    // and every whole record before the cut is served.
    let cut = &good[..good.len() - 3];
    let r = post(cut);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["truncated"], true);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let t = get(&format!("{base}/api/v1/profiles/{id}/tree")).json();
    assert!(t["total"].as_u64().unwrap() > 0);
    assert_eq!(
        get(&format!("{base}/api/v1/profiles/{id}/download")).body,
        cut
    );

    // Over the size limit: 413, as JSON, and nothing stored.
    let big = vec![0u8; 3 << 20];
    let r = post(&big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.error().contains("larger than this server accepts"),
        "{}",
        r.error()
    );
    // Declared far over the limit: refused from the header alone.
    let resp = raw_http(
        server.addr(),
        format!(
            "POST /api/v1/profiles HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nPROFLOG\0",
            1u64 << 40
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("{\"error\":"), "{resp}");
    // A body cut short by the client (the connection closes before Content-Length bytes
    // arrived): nothing is stored.
    let mut partial = format!(
        "POST /api/v1/profiles HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        good.len()
    )
    .into_bytes();
    partial.extend_from_slice(&good[..good.len() / 2]);
    let _ = raw_http(server.addr(), &partial);
    assert_eq!(get(&format!("{base}/api/v1/profiles")).json()["total"], 1);

    // Unknown ids, routes, methods, parameters, bad values.
    let r = get(&format!("{base}/api/v1/profiles/0123456789abcdef"));
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "no profile with id \"0123456789abcdef\"");
    assert_eq!(
        get(&format!("{base}/api/v1/profiles/..%2F..%2Fetc")).status,
        404
    );
    assert_eq!(
        get(&format!("{base}/api/v1/profiles/nope/tree")).status,
        404
    );
    let r = get(&format!("{base}/api/v2/whatever"));
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no route GET /api/v2/whatever"));
    let r = request("PATCH", &format!("{base}/api/v1/profiles"), None, None);
    assert_eq!(r.status, 405);
    assert!(r.error().contains("not allowed"));
    let bad = |q: &str, want: &str| {
        let r = get(&format!("{base}/api/v1/profiles/{id}/tree?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.error().contains(want), "{q}: {}", r.error());
    };
    bad("procss=1", "unknown parameter \"procss\"");
    bad("process=abc", "must be an integer");
    bad("process=999", "no process with pid 999");
    bad("thread=999", "no thread with tid 999");
    bad("tier=turbo", "unknown tier \"turbo\"");
    bad("from=5&to=1", "before it starts");
    bad("from=-1", ">= 0");
    bad("max_nodes=1", "from 2 to");
    bad(
        "focus=no_such_function",
        "no function named \"no_such_function\"",
    );
    bad("search=(unclosed", "not a valid regular expression");
    bad("invert=maybe", "true or false");
    let r = get(&format!("{base}/api/v1/profiles/{id}/timeline?buckets=0"));
    assert_eq!(r.status, 400);
    let r = get(&format!("{base}/api/v1/profiles?limit=100000"));
    assert_eq!(r.status, 400);
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles?name={}", "x".repeat(300)),
        Some(&good),
        None,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("longer than 200"));

    // Still healthy, and still exactly one profile.
    assert_eq!(get(&format!("{base}/healthz")).json()["status"], "ok");
    assert_eq!(get(&format!("{base}/api/v1/profiles")).json()["total"], 1);
    server.stop();
}

fn tokens_guard_uploads_and_deletes_and_private_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tokens = vec!["s3cret".into(), "other-token".into()];
    let server = start(c);
    let base = server.url();
    let bytes = profile_bytes(20, 2);
    let url = format!("{base}/api/v1/profiles");

    let r = request("POST", &url, Some(&bytes), None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.error().contains("Authorization: Bearer"), "{}", r.error());
    let r = request("POST", &url, Some(&bytes), Some("wrong"));
    assert_eq!(r.status, 403);
    assert_eq!(r.error(), "the token is not valid for this server");
    let r = request("POST", &url, Some(&bytes), Some("other-token"));
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();

    // Reads are open.
    assert_eq!(get(&url).json()["total"], 1);
    assert_eq!(get(&format!("{url}/{id}/tree")).status, 200);

    // Deletes need the token too.
    let one = format!("{url}/{id}");
    assert_eq!(request("DELETE", &one, None, None).status, 401);
    assert_eq!(request("DELETE", &one, None, Some("nope")).status, 403);
    assert_eq!(get(&one).status, 200);
    // Symbols as well.
    let me = std::fs::read("/proc/self/exe").unwrap();
    let bid = prof_analysis::hex(&self_module().build_id);
    let sym = format!("{base}/api/v1/symbols/{bid}");
    assert_eq!(request("PUT", &sym, Some(&me), None).status, 401);
    assert_eq!(request("DELETE", &one, None, Some("s3cret")).status, 204);
    assert_eq!(get(&one).status, 404);
    server.stop();

    // --private: reading needs a token as well.
    let mut c = config(dir.path());
    c.tokens = vec!["s3cret".into()];
    c.private = true;
    let server = start(c);
    let base = server.url();
    let url = format!("{base}/api/v1/profiles");
    let r = request("POST", &url, Some(&bytes), Some("s3cret"));
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(get(&url).status, 401);
    assert_eq!(request("GET", &url, None, Some("bad")).status, 403);
    assert_eq!(
        request("GET", &url, None, Some("s3cret")).json()["total"],
        1
    );
    assert_eq!(get(&format!("{url}/{id}/tree")).status, 401);
    assert_eq!(get(&format!("{base}/plain/p/{id}")).status, 401);
    // The viewer's page holds no data (its script asks the API, with a token): served.
    assert_eq!(get(&format!("{base}/p/{id}")).status, 200);
    assert_eq!(
        request("GET", &format!("{url}/{id}/tree"), None, Some("s3cret")).status,
        200
    );
    // Health checks stay open.
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    server.stop();
}

fn fifty_concurrent_uploads_are_all_stored_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let handles: Vec<_> = (0..50u64)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                // Distinct bytes per upload (seed and size), plus a few identical pairs
                // (i and i + 25 share bytes) to exercise content addressing.
                let seed = i % 25;
                let bytes = profile_bytes(40 + seed * 3, seed);
                let id = upload(&base, &bytes, &format!("?name=run-{i}&tag=batch"));
                (id, bytes)
            })
        })
        .collect();
    let uploaded: Vec<(String, Vec<u8>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let l = get(&format!("{base}/api/v1/profiles?limit=100&tag=batch")).json();
    assert_eq!(l["total"], 50);
    let listed: std::collections::HashSet<&str> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 50);
    for (id, bytes) in &uploaded {
        assert!(listed.contains(id.as_str()));
        let d = get(&format!("{base}/api/v1/profiles/{id}/download"));
        assert_eq!(&d.body, bytes, "{id}");
    }
    // Deleting one of an identical pair keeps the other's bytes.
    let (a, bytes_a) = &uploaded[3];
    let (b, bytes_b) = &uploaded[28];
    assert_eq!(bytes_a, bytes_b);
    assert_eq!(
        request("DELETE", &format!("{base}/api/v1/profiles/{a}"), None, None).status,
        204
    );
    assert_eq!(
        &get(&format!("{base}/api/v1/profiles/{b}/download")).body,
        bytes_b
    );
    // Paging walks the list newest first without repeats.
    let mut seen = Vec::new();
    for page in 0..5 {
        let l = get(&format!(
            "{base}/api/v1/profiles?limit=10&offset={}",
            page * 10
        ))
        .json();
        seen.extend(
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_string()),
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 49);
    server.stop();
}

fn a_restarted_server_still_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let server = start(c.clone());
    let base = server.url();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let bytes = profile_bytes(30 + i, i);
        ids.push((
            upload(&base, &bytes, &format!("?name=keep-{i}&tag=t{i}")),
            bytes,
        ));
    }
    let me = std::fs::read("/proc/self/exe").unwrap();
    let bid = prof_analysis::hex(&self_module().build_id);
    let r = request(
        "PUT",
        &format!("{base}/api/v1/symbols/{bid}"),
        Some(&me),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let tree_before = get(&format!("{base}/api/v1/profiles/{}/tree", ids[0].0)).json();
    server.stop();

    let server = start(c);
    let base = server.url();
    let l = get(&format!("{base}/api/v1/profiles")).json();
    assert_eq!(l["total"], 3);
    for (i, (id, bytes)) in ids.iter().enumerate() {
        assert_eq!(
            &get(&format!("{base}/api/v1/profiles/{id}/download")).body,
            bytes
        );
        let s = get(&format!("{base}/api/v1/profiles/{id}")).json();
        assert_eq!(s["name"], format!("keep-{i}"));
        assert_eq!(s["tags"], serde_json::json!([format!("t{i}")]));
    }
    assert_eq!(
        request("HEAD", &format!("{base}/api/v1/symbols/{bid}"), None, None).status,
        200
    );
    let tree_after = get(&format!("{base}/api/v1/profiles/{}/tree", ids[0].0)).json();
    assert_eq!(tree_before, tree_after);
    server.stop();
}

/// A C program the server has never seen: its module path does not exist on the server.
const NEVER_SEEN_C: &str = r#"
#include <stdio.h>
__attribute__((noinline)) long ns_hash(long n) { long h = 1469598103; for (long i = 0; i < n; i++) h = (h ^ i) * 1099511628211L; return h; }
__attribute__((noinline)) long ns_compute(long n) { return ns_hash(n) + ns_hash(n / 2); }
int main(int argc, char **argv) { (void)argv; printf("%ld\n", ns_compute(argc * 1000)); return 0; }
"#;

fn symbols_uploaded_by_build_id_name_a_binary_the_server_never_saw() {
    use object::{Object, ObjectSection, ObjectSymbol};
    let dir = tempfile::tempdir().unwrap();
    let bin = gcc(dir.path(), "never_seen", NEVER_SEEN_C);
    let elf = std::fs::read(&bin).unwrap();
    let obj = object::File::parse(&*elf).unwrap();
    let build_id = obj.build_id().unwrap().unwrap().to_vec();
    let addr = |name: &str| {
        obj.symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap()
            .address()
    };
    let text = obj.section_by_name(".text").unwrap();
    let bias = 0x5555_0000_0000u64;
    let module = prof_format::Module {
        id: 1,
        path: "/opt/elsewhere/never-seen".into(),
        build_id: build_id.clone(),
        bias,
        ranges: vec![(text.address() + bias, text.address() + text.size() + bias)],
    };
    let mut w = prof_format::LogWriter::new(Vec::new());
    w.process(&process_info(7));
    w.module(&module);
    let f = |name: &str| (prof_format::node_kind::NATIVE, addr(name) + bias + 4);
    let leaf = w.stacks.intern([f("main"), f("ns_compute"), f("ns_hash")]);
    let samples: Vec<prof_format::PendingSample> = (0..25)
        .map(|i| prof_format::PendingSample {
            time_ns: i * PERIOD_NS,
            leaf,
            weight: 1,
            flags: 0,
        })
        .collect();
    w.samples(7, &samples);
    let bytes = w.into_inner().unwrap();
    let hash_addr = addr("ns_hash");

    let data = tempfile::tempdir().unwrap();
    let server = start(config(data.path()));
    let base = server.url();
    let id = upload(&base, &bytes, "");
    let names = |base: &str| -> Vec<String> {
        tree_paths(&get(&format!("{base}/api/v1/profiles/{id}/tree")).json())
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    // Unknown code: module+offset, never a wrong name.
    let before = names(&base);
    let expect_offset = format!("never-seen+{:#x}", hash_addr + 4);
    assert!(
        before.iter().any(|p| p.ends_with(&expect_offset)),
        "{before:?}"
    );
    assert!(!before.iter().any(|p| p.contains("ns_compute")));
    let s = get(&format!("{base}/api/v1/profiles/{id}")).json();
    assert!(
        s["summary"]["symbol_warnings"]
            .to_string()
            .contains("/opt/elsewhere/never-seen"),
        "{}",
        s["summary"]["symbol_warnings"]
    );

    let hex = prof_analysis::hex(&build_id);
    let sym = format!("{base}/api/v1/symbols/{hex}");
    assert_eq!(request("HEAD", &sym, None, None).status, 404);
    // Wrong files are refused.
    let r = request("PUT", &sym, Some(b"not an elf file"), None);
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("not an ELF file"), "{}", r.error());
    let me = std::fs::read("/proc/self/exe").unwrap();
    let r = request("PUT", &sym, Some(&me), None);
    assert_eq!(r.status, 400);
    assert!(r.error().contains(&format!("not {hex}")), "{}", r.error());
    let r = request(
        "PUT",
        &format!("{base}/api/v1/symbols/xyz"),
        Some(&elf),
        None,
    );
    assert_eq!(r.status, 400);
    // The right one is stored, and the names appear.
    let r = request("PUT", &sym, Some(&elf), None);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(request("HEAD", &sym, None, None).status, 200);
    let after = names(&base);
    assert!(
        after.contains(&"all;main;ns_compute;ns_hash".to_string()),
        "{after:?}"
    );
    // Uploading it again replaces it (200), idempotently.
    assert_eq!(request("PUT", &sym, Some(&elf), None).status, 200);
    let s = get(&format!("{base}/api/v1/profiles/{id}")).json();
    assert_eq!(s["symbols_uploaded"], serde_json::json!([hex]));
    let f = s["summary"]["functions"].as_array().unwrap();
    let h = f.iter().find(|f| f["name"] == "ns_hash").unwrap();
    assert!(h["file"].as_str().unwrap().ends_with("never_seen.c"), "{h}");
    server.stop();
}

fn health_metrics_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let h = get(&format!("{base}/healthz"));
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");

    let evil = "<img src=x onerror=alert(1)>";
    let q: String = form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let id = upload(&base, &profile_bytes(30, 0), &format!("?name={q}"));
    let _ = get(&format!("{base}/api/v1/profiles/{id}/tree"));

    let m = get(&format!("{base}/metrics"));
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for want in [
        "# TYPE prof_http_requests_total counter",
        "prof_http_requests_total{route=\"/api/v1/profiles\",method=\"POST\",status=\"201\"} 1",
        "prof_http_requests_total{route=\"/api/v1/profiles/{id}/tree\",method=\"GET\",status=\"200\"} 1",
        "prof_http_request_duration_seconds_bucket{route=\"/api/v1/profiles/{id}/tree\",le=\"+Inf\"} 1",
        "prof_profiles 1",
        "prof_uploads_total 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(text.contains("prof_analyses_total 1"), "{text}");

    // Pages: names are text, never markup.
    let p = get(&format!("{base}/plain/p/{id}"));
    assert_eq!(p.status, 200);
    assert!(p
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    let html = p.text();
    assert!(!html.contains(evil));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("prof_srv_leaf"));
    let index = get(&format!("{base}/plain"));
    assert_eq!(index.status, 200);
    assert!(index.text().contains(&format!("href=\"/p/{id}\"")));
    assert!(!index.text().contains(evil));
    assert_eq!(get(&format!("{base}/p/0000000000000000")).status, 404);
    server.stop();
}

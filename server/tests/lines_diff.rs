//! [issue 13] `native=hide`, `/lines` and `/diff` on synthetic profiles of this test
//! executable's own functions (real symbols and DWARF lines).

mod common;

use common::*;

const N: u64 = 400;

#[test]
fn native_hide_lines_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let a = upload(&base, &profile_bytes(N, 0), "?name=a");
    let b = upload(&base, &profile_bytes(N / 2, 1), "?name=b");
    let api = |id: &str, rest: &str| format!("{base}/api/v1/profiles/{id}{rest}");

    // A native program has no program frames: code-only is the plain view, and the
    // profile does not open in it.
    let meta = get(&api(&a, "")).json();
    assert_eq!(meta["mostly_program_code"], serde_json::json!(false));
    let plain = get(&api(&a, "/tree")).json();
    let hide = get(&api(&a, "/tree?native=hide")).json();
    assert_eq!(tree_paths(&plain), tree_paths(&hide));
    let f1 = get(&api(&a, "/functions?native=hide")).json();
    let f2 = get(&api(&a, "/functions")).json();
    assert_eq!(f1, f2);
    assert_eq!(get(&api(&a, "/timeline?native=show")).status, 200);
    let r = get(&api(&a, "/tree?native=no"));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("show or hide"), "{}", r.error());

    // Lines: the DWARF file of prof_srv_leaf, its lines' costs; no stored source.
    let fns = get(&api(&a, "/functions")).json();
    let names = fns["functions"]["name"].as_array().unwrap();
    let k = names.iter().position(|n| n == "prof_srv_leaf").unwrap();
    let file = fns["functions"]["file"][k]
        .as_str()
        .expect("the test executable has DWARF lines")
        .to_string();
    let enc: String = file
        .bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect();
    let l = get(&api(&a, &format!("/lines?file={enc}"))).json();
    assert_eq!(l["file"], file.as_str());
    assert_eq!(l["source"], serde_json::Value::Null);
    let lines = l["lines"].as_object().unwrap();
    let self_sum: u64 = lines.values().map(|c| c["self"].as_u64().unwrap()).sum();
    // Every sample's leaf is in this file (leaf, middle, outer, gc_collect_main all live
    // in tests/common/mod.rs): self adds up to all samples.
    assert_eq!(self_sum, profile_weight(N, 0), "{l}");
    assert_eq!(l["total"], profile_weight(N, 0));
    for c in lines.values() {
        assert!(c["self"].as_u64() <= c["total"].as_u64(), "{c}");
    }
    assert_eq!(get(&api(&a, "/lines")).status, 400);
    assert_eq!(get(&api(&a, "/lines?file=%2Fnope.c")).status, 404);
    assert_eq!(get(&api(&a, "/lines?file=x&bogus=1")).status, 400);

    // Diff: the same shape, scaled; shares agree, weights differ.
    let d = get(&api(&a, &format!("/diff?base={b}"))).json();
    assert_eq!(d["total"], profile_weight(N, 0));
    assert_eq!(d["base_total"], profile_weight(N / 2, 1));
    let n = &d["nodes"];
    assert_eq!(n["share"][0], 1.0);
    assert_eq!(n["base_share"][0], 1.0);
    let paths = tree_paths(&d);
    let gc = paths
        .iter()
        .position(|(p, _)| p.ends_with(";gc_collect_main"))
        .unwrap();
    let (s, bs) = (
        n["share"][gc].as_f64().unwrap(),
        n["base_share"][gc].as_f64().unwrap(),
    );
    assert!((s - bs).abs() < 0.01, "gc share {s} vs base {bs}");
    let changes = d["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["name"] == "gc_collect_main"));
    // The filter's process applies to the profile only; a focus the base lacks is empty.
    let f = get(&api(&a, &format!("/diff?base={b}&process={PID}&tier=gc"))).json();
    assert_eq!(f["total"], N / 4);
    assert_eq!(f["base_total"], N / 8);
    assert_eq!(get(&api(&a, "/diff")).status, 400);
    assert_eq!(get(&api(&a, "/diff?base=0123456789abcdef")).status, 404);
    assert_eq!(get(&api(&a, "/diff?base=..%2Fx")).status, 404);

    // The compare page is the viewer's shell; malformed ids are a 404 page.
    let page = get(&format!("{base}/compare/{b}/{a}"));
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some());
    assert_eq!(get(&format!("{base}/compare/x/{a}")).status, 404);
    // The palette the viewer, exports and plain pages share.
    let p = get(&format!("{base}/static/palette.json"));
    assert_eq!(p.status, 200);
    assert_eq!(p.header("content-type"), Some("application/json"));
    assert_eq!(p.json()["colours"]["jit"], "#0072b2");
}

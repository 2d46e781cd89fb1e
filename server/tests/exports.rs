//! Exports and imports over HTTP: `?format=` on the download endpoint, uploads of other
//! tools' profiles, and vmprof's upload API — with hand-made requests and with vmprof's
//! own client (`python -m vmprof --web --web-url URL`).

mod common;

use std::io::Read;
use std::process::Command;

use common::*;
use prof_e2e::vmprof::{cpu_script, vmprof_venv};

const N: u64 = 200;

#[test]
fn download_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let bytes = profile_bytes(N, 0);
    let id = upload(&base, &bytes, "?name=warm");
    let dl = |q: &str| get(&format!("{base}/api/v1/profiles/{id}/download{q}"));

    // No format: the stored bytes.
    assert_eq!(dl("").body, bytes);

    let r = dl("?format=speedscope");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .contains(&format!("prof-{id}.speedscope.json")));
    let v = r.json();
    assert_eq!(
        v["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert_eq!(v["name"], "warm");
    assert_eq!(v["profiles"].as_array().unwrap().len(), 2);

    let r = dl("?format=pprof");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body.starts_with(&[0x1f, 0x8b]), "pprof is gzipped");

    let v = dl("?format=firefox").json();
    assert!(v["meta"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "interpreter"));

    let folded = dl("?format=collapsed").text();
    let total: u64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, profile_weight(N, 0));

    let html = dl("?format=html");
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(html.text().contains("id=\"prof-data\""));
    let svg = dl("?format=svg");
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().starts_with("<?xml"));

    let r = dl("?format=png");
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("unknown format \"png\""),
        "{}",
        r.error()
    );
    server.stop();
}

#[test]
fn uploads_of_folded_stacks_and_perf_script_are_imported() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let id = upload(&base, b"main;parse 3\nmain;run;hot 7\n", "");
    let v = get(&format!("{base}/api/v1/profiles/{id}")).json();
    let text = v.to_string();
    assert!(text.contains("\"hot\""), "{text}");
    let perf = "app 7/7 1.000000: 1000000 cpu-clock:\n\t400500 work+0x1 (/opt/app)\n\t400400 main+0x2 (/opt/app)\n";
    let id = upload(&base, perf.as_bytes(), "");
    let text = get(&format!("{base}/api/v1/profiles/{id}"))
        .json()
        .to_string();
    assert!(text.contains("\"work\""), "{text}");
    // What is stored (and downloaded) is the imported prof log.
    let stored = get(&format!("{base}/api/v1/profiles/{id}/download")).body;
    assert!(stored.starts_with(b"PROFLOG\0"));
    // Neither a profile nor another tool's: 400 naming what was expected.
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles"),
        Some(b"hello"),
        None,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("not a prof profile, nor a vmprof log"),
        "{}",
        r.error()
    );
    server.stop();
}

/// A small CPython-style vmprof log (format version 7, 64-bit).
fn vmprof_log() -> Vec<u8> {
    let mut b = Vec::new();
    let word = |b: &mut Vec<u8>, w: u64| b.extend_from_slice(&w.to_le_bytes());
    for w in [0u64, 3, 0, 1000, 0] {
        word(&mut b, w);
    }
    b.push(0x05);
    b.extend_from_slice(&7u16.to_be_bytes());
    b.push(0);
    b.push(7);
    b.extend_from_slice(b"cpython");
    for (id, name) in [
        (0x10u64, "py:main:1:/app/x.py"),
        (0x20, "py:crunch:5:/app/x.py"),
    ] {
        b.push(0x02);
        word(&mut b, id);
        word(&mut b, name.len() as u64);
        b.extend_from_slice(name.as_bytes());
    }
    for i in 0..20u64 {
        b.push(0x01);
        word(&mut b, 1);
        word(&mut b, 2);
        word(&mut b, 0x20);
        word(&mut b, 0x10);
        word(&mut b, 0x7f00_0000_1000);
        word(&mut b, 1_000_000 * (i + 1));
    }
    b
}

fn post_json(url: &str, body: &str, auth: Option<&str>) -> Resp {
    let agent = ureq::AgentBuilder::new().build();
    let mut r = agent.post(url).set("Content-Type", "application/json");
    if let Some(a) = auth {
        r = r.set("AUTHORIZATION", a);
    }
    let resp = match r.send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).unwrap();
    Resp {
        status,
        body: out,
        headers: Vec::new(),
    }
}

fn post_bytes(url: &str, body: &[u8], auth: Option<&str>) -> Resp {
    let agent = ureq::AgentBuilder::new().build();
    let mut r = agent.post(url);
    if let Some(a) = auth {
        r = r.set("AUTHORIZATION", a);
    }
    let resp = match r.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).unwrap();
    Resp {
        status,
        body: out,
        headers: Vec::new(),
    }
}

#[test]
fn vmprof_upload_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tokens = vec!["sekrit".into()];
    let server = start(c);
    let base = server.url();

    // Tokens: vmprof's `Token KEY` scheme.
    let r = post_json(&format!("{base}/api/runtime/new"), "{}", None);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_json(
        &format!("{base}/api/runtime/new"),
        "{}",
        Some("Token wrong"),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    let auth = Some("Token sekrit");
    let r = post_json(
        &format!("{base}/api/runtime/new"),
        r#"{"argv": "vmprof --web x.py", "VM": "CPython"}"#,
        auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "ok");
    let rid = v["runtime_id"].as_str().unwrap().to_string();

    let r = post_bytes(
        &format!("{base}/api/runtime/upload/cpu/{rid}/add"),
        &vmprof_log(),
        auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A JIT log is accepted and not kept.
    let r = post_bytes(
        &format!("{base}/api/runtime/upload/jit/{rid}/add"),
        b"jitlog",
        auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_bytes(&format!("{base}/api/runtime/{rid}/freeze/"), b"", auth);
    assert_eq!(r.status, 200, "{}", r.text());

    // The runtime id is the profile's id.
    let v = get(&format!("{base}/api/v1/profiles/{rid}")).json();
    assert_eq!(v["name"], "vmprof --web x.py");
    assert!(v.to_string().contains("\"crunch\""), "{v}");
    assert_eq!(get(&format!("{base}/p/{rid}")).status, 200);

    // Unknown runtimes and bad logs are clear errors.
    let r = post_bytes(
        &format!("{base}/api/runtime/upload/cpu/0123456789abcdef/add"),
        &vmprof_log(),
        auth,
    );
    assert_eq!(r.status, 404);
    let rid2 = post_json(&format!("{base}/api/runtime/new"), "{}", auth).json()["runtime_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_bytes(
        &format!("{base}/api/runtime/upload/cpu/{rid2}/add"),
        b"garbage",
        auth,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("not a prof profile"), "{}", r.error());
    server.stop();
}

#[test]
fn vmprofs_own_client_uploads_here() {
    let python = vmprof_venv(
        "python3",
        "install Python 3 (apt-get install -y python3 python3-venv)",
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let o = prof_e2e::run_captured(
        Command::new(&python)
            .args(["-m", "vmprof", "--web", "--web-url", &base])
            .arg(cpu_script())
            .arg("40")
            .current_dir(dir.path()),
        prof_e2e::TIMEOUT,
    );
    assert!(
        o.status.success(),
        "python -m vmprof --web failed: {}{}",
        o.stdout,
        o.stderr
    );
    // The client prints the link it was given: BASE/#/RID.
    let link = o
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{base}/#/")))
        .unwrap_or_else(|| panic!("no link in the client's output: {}", o.stderr));
    let rid = link.rsplit('/').next().unwrap();
    let v = get(&format!("{base}/api/v1/profiles/{rid}")).json();
    let text = v.to_string();
    for f in ["vm_fib", "vm_sieve", "vm_main"] {
        assert!(text.contains(&format!("\"{f}\"")), "{f} missing: {text}");
    }
    assert!(v["tags"].to_string().contains("vmprof"), "{v}");
    assert_eq!(get(&format!("{base}/p/{rid}")).status, 200);
    server.stop();
}

#[test]
fn prof_upload_imports_other_formats() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let base = server.url();
    let folded = dir.path().join("stacks.folded");
    std::fs::write(&folded, "main;parse 3\nmain;run;crunch_numbers 7\n").unwrap();
    let o = prof_e2e::run_captured(
        prof_e2e::prof()
            .args(["upload"])
            .arg(&folded)
            .args(["--server", &base]),
        prof_e2e::TIMEOUT,
    );
    assert!(o.status.success(), "prof upload: {}", o.stderr);
    let url = o.stdout.trim();
    let id = url.rsplit('/').next().unwrap();
    let text = get(&format!("{base}/api/v1/profiles/{id}"))
        .json()
        .to_string();
    assert!(text.contains("\"crunch_numbers\""), "{text}");
    server.stop();
}

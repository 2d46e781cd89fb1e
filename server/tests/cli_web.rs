//! `prof run --web`, `prof upload` and `prof serve` end to end: the real `prof` binary and
//! agent (built by prof-e2e's helpers), a C fixture compiled with gcc, a real server on
//! an ephemeral loopback port.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use object::Object;
use prof_e2e::{prof, run_captured, TIMEOUT};

/// Burns ~0.3 s of CPU in a function with a name no library has.
const BURN_C: &str = r#"
#include <stdio.h>
#include <time.h>
__attribute__((noinline)) unsigned long web_burn_inner(unsigned long x) {
    for (int i = 0; i < 1000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}
__attribute__((noinline)) unsigned long web_burn(double secs) {
    struct timespec a, b;
    unsigned long x = 1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    do {
        x = web_burn_inner(x);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    } while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < secs);
    return x;
}
int main(void) { printf("%lu\n", web_burn(0.3)); return 0; }
"#;

fn fixture(dir: &Path) -> PathBuf {
    gcc(dir, "web_burn", BURN_C)
}

fn build_id_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    prof_analysis::hex(obj.build_id().unwrap().unwrap())
}

/// The `http://…/p/ID` link in prof's stderr.
fn link(stderr: &str, marker: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in prof's stderr:\n{stderr}"));
    line[line.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn metric(base: &str, name: &str) -> u64 {
    let text = get(&format!("{base}/metrics")).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn prof_run_web_url_uploads_the_profile_and_missing_symbols_then_upload_sends_none() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fixture(tmp.path());
    let data = tempfile::tempdir().unwrap();
    let mut c = config(data.path());
    c.tokens = vec!["tok-1".into()];
    let server = start(c);
    let base = server.url();
    let out = tmp.path().join("run.data");

    let o = run_captured(
        prof()
            .args(["run", &format!("--web={base}"), "-o"])
            .arg(&out)
            .arg("--")
            .arg(&bin)
            .env("PROF_TOKEN", "tok-1")
            .env_remove("PROF_SERVER"),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    let url = link(&o.stderr, "prof: profile uploaded:");
    assert!(url.starts_with(&format!("{base}/p/")), "{url}");
    let id = url.rsplit('/').next().unwrap().to_string();

    // The link answers (the viewer's page), and the tree has the fixture's functions with
    // real names.
    let page = get(&url);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let tree = get(&format!("{base}/api/v1/profiles/{id}/tree")).json();
    let paths = tree_paths(&tree);
    assert!(
        paths
            .iter()
            .any(|(p, w)| p.ends_with("main;web_burn;web_burn_inner") && *w > 50),
        "{paths:?}"
    );
    // The stored bytes are the file prof wrote.
    let d = get(&format!("{base}/api/v1/profiles/{id}/download"));
    assert_eq!(d.body, std::fs::read(&out).unwrap());
    // The fixture's symbols were sent (the server had none), once.
    let fixture_id = build_id_hex(&bin);
    assert_eq!(
        request(
            "HEAD",
            &format!("{base}/api/v1/symbols/{fixture_id}"),
            None,
            None
        )
        .status,
        200
    );
    let sent = metric(&base, "prof_symbol_uploads_total");
    assert!(sent >= 1);

    // `prof upload` of the same file: the server has every symbol file now; none is sent.
    let o = run_captured(
        prof()
            .arg("upload")
            .arg(&out)
            .args([
                "--server", &base, "--token", "tok-1", "--name", "again", "--tag", "e2e",
            ])
            .env_remove("PROF_TOKEN"),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    let url2 = o.stdout.trim();
    assert!(
        url2.starts_with(&format!("{base}/p/")) && url2 != url,
        "{url2}"
    );
    assert_eq!(metric(&base, "prof_symbol_uploads_total"), sent);
    let l = get(&format!("{base}/api/v1/profiles?tag=e2e")).json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["items"][0]["name"], "again");

    // Without the token: refused, with the server's reason, and the profile kept.
    let o = run_captured(
        prof()
            .arg("upload")
            .arg(&out)
            .args(["--server", &base])
            .env_remove("PROF_TOKEN"),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1));
    assert!(o.stderr.contains("401"), "{}", o.stderr);
    assert!(o.stderr.contains("Authorization: Bearer"), "{}", o.stderr);
    let o = run_captured(
        prof()
            .args(["run", &format!("--web={base}"), "-q", "-o"])
            .arg(tmp.path().join("denied.data"))
            .arg("--")
            .arg(&bin)
            .env_remove("PROF_TOKEN"),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("the profile is saved in"), "{}", o.stderr);
    assert!(tmp.path().join("denied.data").is_file());
    server.stop();
}

#[test]
fn prof_run_web_without_url_serves_locally_until_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fixture(tmp.path());
    let xdg = tempfile::tempdir().unwrap();
    let mut child = prof()
        .args(["run", "--web", "-q", "-o"])
        .arg(tmp.path().join("local.data"))
        .arg("--")
        .arg(&bin)
        .env("XDG_DATA_HOME", xdg.path())
        .env_remove("PROF_SERVER")
        .env_remove("PROF_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = String::new();
    let data_dir: Option<std::path::PathBuf>;
    let url = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("prof: serving the profile at") {
                    data_dir = line
                        .split_once("(data in ")
                        .and_then(|(_, rest)| rest.split_once(", removed when you stop"))
                        .map(|(d, _)| std::path::PathBuf::from(d));
                    break link(&line, "serving the profile at");
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no link within {TIMEOUT:?}; stderr:\n{seen}");
            }
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let page = get(&url);
    assert_eq!(page.status, 200, "{}", page.text());
    let (base, id) = url.split_once("/p/").unwrap();
    let tree = get(&format!("{base}/api/v1/profiles/{id}/tree")).json();
    assert!(
        tree_paths(&tree)
            .iter()
            .any(|(p, _)| p.ends_with("web_burn;web_burn_inner")),
        "{tree}"
    );
    // Data went to a temporary directory that the message names (nothing permanent in
    // $XDG_DATA_HOME behind the user's back).
    let data_dir = data_dir.unwrap_or_else(|| panic!("the message names no data dir:\n{seen}"));
    assert!(data_dir.join("prof.db").is_file(), "{}", data_dir.display());
    assert!(!xdg.path().join("prof").exists());

    // SIGINT (as Ctrl-C would send) stops the server; prof exits with the command's status.
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("prof did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        !data_dir.exists(),
        "the temporary data dir is removed on exit"
    );
}

#[test]
fn prof_serve_runs_the_server_with_tokens_and_limits() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(&prof_e2e::bins().prof)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--token",
            "abc",
            "--max-upload-mb",
            "1",
            "--data",
        ])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = link(&line, "prof: serving on");
    let base = base
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_string();
    assert_eq!(get(&format!("{base}/healthz")).status, 200);
    let bytes = profile_bytes(30, 0);
    let url = format!("{base}/api/v1/profiles");
    assert_eq!(request("POST", &url, Some(&bytes), None).status, 401);
    assert_eq!(request("POST", &url, Some(&bytes), Some("abc")).status, 201);
    assert_eq!(
        request("POST", &url, Some(&vec![0u8; 2 << 20]), Some("abc")).status,
        413
    );
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // Bad options are refused clearly.
    let o = run_captured(prof().args(["serve", "--private"]), TIMEOUT);
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains("--private needs at least one --token"),
        "{}",
        o.stderr
    );
    let o = run_captured(
        prof()
            .args(["serve", "--addr", "256.0.0.1:1"])
            .env("XDG_DATA_HOME", data.path()),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains("cannot listen on 256.0.0.1:1"),
        "{}",
        o.stderr
    );
    let o = run_captured(
        prof().args(["upload", "/nonexistent/prof.data", "--server", &base]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains("/nonexistent/prof.data: cannot read"),
        "{}",
        o.stderr
    );
    let o = run_captured(
        prof()
            .args(["upload", "/nonexistent/prof.data"])
            .env_remove("PROF_SERVER"),
        TIMEOUT,
    );
    assert!(
        o.stderr.contains("pass --server URL or set PROF_SERVER"),
        "{}",
        o.stderr
    );
}

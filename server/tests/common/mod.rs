//! Shared helpers: a real server on an ephemeral loopback port, a small HTTP client, and
//! real profiles whose modules are real ELF files (this test executable, found through
//! /proc/self/exe, with its real build id), so symbolization is real.

#![allow(dead_code)]

pub mod backends;

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};
use prof_format::{
    node_kind, LogWriter, Mode, Module, PendingSample, ProcessEnd, ProcessInfo, TimerSource,
};
pub use prof_server::{Config, RunningServer};
pub use serde_json::Value;

// Functions of this executable that the synthetic stacks point into. Two carry names the
// built-in tier rules know (CPython's eval loop: interpreter; CPython's GC: gc), so the
// tier split is exercised through real symbolization.

#[no_mangle]
#[inline(never)]
pub extern "C" fn prof_srv_outer(n: u64) -> u64 {
    let mut s = 0u64;
    for i in 0..n {
        s = black_box(s.wrapping_mul(31) ^ i);
    }
    s
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn prof_srv_middle(n: u64) -> u64 {
    let mut s = 1u64;
    for i in 0..n {
        s = black_box(s.wrapping_add(i * 7));
    }
    s
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn prof_srv_leaf(n: u64) -> u64 {
    let mut s = 2u64;
    for i in 0..n {
        s = black_box(s.rotate_left(3) ^ i);
    }
    s
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn _PyEval_EvalFrameDefault(n: u64) -> u64 {
    let mut s = 3u64;
    for i in 0..n {
        s = black_box(s.wrapping_sub(i));
    }
    s
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn gc_collect_main(n: u64) -> u64 {
    let mut s = 4u64;
    for i in 0..n {
        s = black_box(s | i);
    }
    s
}

/// This executable as a profile module: real path, real build id, real load bias (read
/// once: the test executable is large).
pub fn self_module() -> Module {
    static M: std::sync::OnceLock<Module> = std::sync::OnceLock::new();
    M.get_or_init(read_self_module).clone()
}

fn read_self_module() -> Module {
    let path = std::fs::read_link("/proc/self/exe").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let build_id = obj
        .build_id()
        .unwrap()
        .expect("the test executable has a build id")
        .to_vec();
    let sym = obj
        .symbols()
        .find(|s| s.name() == Ok("prof_srv_leaf"))
        .expect("prof_srv_leaf in the symbol table");
    let bias = (prof_srv_leaf as *const () as u64).wrapping_sub(sym.address());
    let text = obj.section_by_name(".text").unwrap();
    Module {
        id: 1,
        path: path.to_string_lossy().into_owned(),
        build_id,
        bias,
        ranges: vec![(text.address() + bias, text.address() + text.size() + bias)],
    }
}

/// A runtime address 4 bytes into a function of this executable.
pub fn at(f: extern "C" fn(u64) -> u64) -> (u32, u64) {
    (node_kind::NATIVE, f as *const () as u64 + 4)
}

pub const PID: u32 = 4242;
pub const PERIOD_NS: u64 = 1_000_000;

pub fn process_info(pid: u32) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        start_unix_ns: 1_700_000_000_000_000_000,
        period_ns: PERIOD_NS,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 100_000,
        max_depth: 128,
        exe: "/usr/bin/srv-test".into(),
        argv: vec!["srv-test".into(), "--work".into()],
        agent_version: "test".into(),
    }
}

/// A warm-up shaped profile, 1 ms apart, weights 1:
/// - `n` samples outer;_PyEval_EvalFrameDefault;leaf (interpreter), tid 1, first;
/// - `n` samples outer;middle;leaf (native), tid 1, after them;
/// - `n / 4` samples outer;gc_collect_main (gc), tid 2, interleaved over the whole run.
///
/// `seed` varies one sample so different seeds give different bytes.
pub fn profile_bytes(n: u64, seed: u64) -> Vec<u8> {
    let mut w = LogWriter::new(Vec::new());
    w.process(&process_info(PID));
    w.module(&self_module());
    w.thread(1, "main");
    w.thread(2, "collector");
    let interp = w.stacks.intern([
        at(prof_srv_outer),
        at(_PyEval_EvalFrameDefault),
        at(prof_srv_leaf),
    ]);
    let native = w
        .stacks
        .intern([at(prof_srv_outer), at(prof_srv_middle), at(prof_srv_leaf)]);
    let gc = w.stacks.intern([at(prof_srv_outer), at(gc_collect_main)]);
    let mut main = Vec::new();
    for i in 0..2 * n {
        main.push(PendingSample {
            time_ns: i * PERIOD_NS,
            leaf: if i < n { interp } else { native },
            weight: if i == 0 { 1 + (seed % 3) as u32 } else { 1 },
            flags: 0,
        });
    }
    let collector: Vec<PendingSample> = (0..n / 4)
        .map(|i| PendingSample {
            time_ns: i * 8 * PERIOD_NS + PERIOD_NS / 2,
            leaf: gc,
            weight: 1,
            flags: 0,
        })
        .collect();
    w.samples(1, &main);
    w.samples(2, &collector);
    w.end(&ProcessEnd {
        duration_ns: 2 * n * PERIOD_NS,
        cpu_user_ns: (2 * n + n / 4) * PERIOD_NS,
        cpu_system_ns: 0,
        signals: 2 * n + n / 4,
    });
    w.notice(&format!("seed {seed}"));
    w.into_inner().unwrap()
}

/// Total weight of [`profile_bytes`].
pub fn profile_weight(n: u64, seed: u64) -> u64 {
    2 * n + n / 4 + seed % 3
}

// ---------------------------------------------------------------------------------------
// Servers

pub fn config(dir: &Path) -> Config {
    let mut c = Config::local(dir.to_path_buf());
    c.addr = "127.0.0.1:0".into();
    c.workers = 2;
    // The profiles name this test executable: the server may read binaries in its
    // directory (and nothing else outside its symbol store).
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    c.debug_dirs = vec![exe.parent().unwrap().to_path_buf()];
    // The backend the running test was asked for (see [`backends::backend_tests`]).
    let (db, store, s3) = backends::storage_for_test();
    c.db = db;
    c.store = store;
    c.s3 = s3;
    c
}

/// Blobs in the store `c` names (files or S3 objects).
pub fn stored_blobs(c: &Config) -> Vec<String> {
    let (db, store) = c.storage_urls();
    let s = prof_server::Storage::open(&db, &store, &c.data_dir, c.s3.as_ref()).unwrap();
    s.blobs.list().unwrap().into_iter().map(|b| b.key).collect()
}

pub fn start(c: Config) -> RunningServer {
    prof_server::spawn(c).expect("the server starts")
}

// ---------------------------------------------------------------------------------------
// HTTP

pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` message of a JSON error body (panics if it is not one).
    pub fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" in {v}"))
            .to_string()
    }
}

pub fn request(method: &str, url: &str, body: Option<&[u8]>, token: Option<&str>) -> Resp {
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(120))
        .build();
    let mut r = agent.request(method, url);
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => r
            .set("Content-Type", "application/octet-stream")
            .send_bytes(b),
        None => r.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    if method != "HEAD" {
        resp.into_reader().read_to_end(&mut body).unwrap();
    }
    Resp {
        status,
        body,
        headers,
    }
}

pub fn get(url: &str) -> Resp {
    request("GET", url, None, None)
}

/// Uploads and returns the new id (asserting 201).
pub fn upload(base: &str, bytes: &[u8], query: &str) -> String {
    let r = request(
        "POST",
        &format!("{base}/api/v1/profiles{query}"),
        Some(bytes),
        None,
    );
    assert_eq!(r.status, 201, "upload: {}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// Sends raw bytes on a fresh connection and returns what the server answered (for
/// requests no well-behaved client would make).
pub fn raw_http(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Names of a tree response's nodes, as `a;b;c` paths, with their totals.
pub fn tree_paths(tree: &Value) -> Vec<(String, u64)> {
    let names: Vec<&str> = tree["functions"]["name"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let parent = tree["nodes"]["parent"].as_array().unwrap();
    let func = tree["nodes"]["func"].as_array().unwrap();
    let total = tree["nodes"]["total"].as_array().unwrap();
    let mut paths: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for i in 0..parent.len() {
        let name = names[func[i].as_u64().unwrap() as usize];
        let p = parent[i].as_i64().unwrap();
        let path = if p < 0 {
            name.to_string()
        } else {
            format!("{};{}", paths[p as usize], name)
        };
        paths.push(path.clone());
        out.push((path, total[i].as_u64().unwrap()));
    }
    out
}

/// Compiles C source with gcc (-g, build id) into `dir/name`; panics with a clear message
/// when gcc is missing.
pub fn gcc(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = dir.join(name);
    let o = std::process::Command::new("gcc")
        .args([
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wl,--build-id=sha1",
            "-o",
        ])
        .arg(&out)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("gcc is needed for this test (apt-get install gcc): {e}"));
    assert!(
        o.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------
// Server processes (for SIGKILL and memory measurements)

/// A `prof-server` process.
pub struct Proc {
    pub child: std::process::Child,
    pub url: String,
}

impl Proc {
    pub fn kill(mut self) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// Peak resident memory so far (VmHWM), bytes.
    pub fn peak_rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    }
}

/// Runs the `prof-server` binary on the storage `c` names (`--data`, `--db`, `--store`,
/// AWS_* variables for S3), on a free loopback port.
pub fn server_process(c: &Config) -> Proc {
    use prof_server::store::{DbUrl, StoreUrl};
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_prof-server"));
    cmd.args(["--addr", "127.0.0.1:0", "--workers", "2", "--data"])
        .arg(&c.data_dir)
        .args([
            "--max-upload-mb",
            &(c.max_upload_bytes >> 20).max(1).to_string(),
        ]);
    for d in &c.debug_dirs {
        cmd.arg("--debug-dir").arg(d);
    }
    match &c.db {
        Some(DbUrl::Postgres(u)) => {
            cmd.args(["--db", u]);
        }
        Some(DbUrl::Sqlite(p)) => {
            cmd.arg("--db").arg(format!("sqlite:{}", p.display()));
        }
        None => {}
    }
    match &c.store {
        Some(StoreUrl::S3 { bucket, prefix }) => {
            cmd.args(["--store", &format!("s3://{bucket}/{prefix}")]);
        }
        Some(StoreUrl::File(p)) => {
            cmd.arg("--store").arg(format!("file:{}", p.display()));
        }
        None => {}
    }
    if let Some(s3) = &c.s3 {
        cmd.env("AWS_ENDPOINT_URL", s3.endpoint.as_deref().unwrap_or(""))
            .env("AWS_REGION", &s3.region)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
    }
    cmd.env("PROF_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting prof-server");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines
        .next()
        .and_then(|l| l.ok())
        .unwrap_or_else(|| panic!("prof-server printed nothing: {:?}", child.wait()));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    // Keep draining its stderr (a full pipe would block it).
    std::thread::spawn(move || for _ in lines {});
    Proc { child, url }
}

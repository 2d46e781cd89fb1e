//! Helpers for prof's end-to-end tests: find (and if needed build) the `prof` binary and
//! the agent library, compile the C fixtures in `tests/fixtures/` with gcc, run commands
//! under `prof run` with a timeout, and read reports back as JSON.
//!
//! `cargo test --workspace` does not build binaries or cdylibs that no test links, so the
//! first call to [`bins`] runs `cargo build -p prof-cli -p prof-agent` for the profile the
//! tests were built with (a no-op when they are fresh). Set `PROF_E2E_NO_BUILD=1` to use
//! whatever is already in the target directory.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use serde_json::Value;

pub mod pystacks;
pub mod rng;
pub mod venv;
pub mod vmprof;

pub mod browser;

/// `prof` and `libprof_agent.so` as built for these tests.
pub struct Bins {
    pub prof: PathBuf,
    pub agent: PathBuf,
    /// target/<profile>/
    pub dir: PathBuf,
}

/// target/<profile>/ of the running test executable (target/<profile>/deps/<test>).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent dir");
    let dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().unwrap()
    } else {
        deps
    };
    dir.to_path_buf()
}

pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = profile_dir();
        if std::env::var_os("PROF_E2E_NO_BUILD").is_none() {
            build_bins(&dir);
        }
        let prof = dir.join("prof");
        let agent = dir.join("libprof_agent.so");
        for p in [&prof, &agent] {
            assert!(
                p.is_file(),
                "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) so the agent and prof are built",
                p.display()
            );
        }
        Bins { prof, agent, dir }
    })
}

fn build_bins(dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "prof-cli", "-p", "prof-agent"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(
        status.success(),
        "`cargo build -p prof-cli -p prof-agent` failed ({status}): run `cargo test --workspace` so the agent is built"
    );
}

/// Compiles `tests/fixtures/<name>.c` (plus `extra` sources) with gcc and `flags` into a
/// cache under the target directory; returns the output's path. Output names carry a hash
/// of the sources and flags, so a changed fixture is rebuilt.
pub fn gcc(name: &str, extra: &[&str], flags: &[&str], out_name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut sources = vec![fixtures.join(format!("{name}.c"))];
    sources.extend(extra.iter().map(|e| fixtures.join(format!("{e}.c"))));
    let mut h = DefaultHasher::new();
    for s in &sources {
        std::fs::read(s)
            .unwrap_or_else(|e| panic!("reading {}: {e}", s.display()))
            .hash(&mut h);
    }
    flags.hash(&mut h);
    let cache = bins_dir().join("prof-e2e-fixtures");
    std::fs::create_dir_all(&cache).unwrap();
    let out = cache.join(format!("{out_name}-{:016x}", h.finish()));
    if out.is_file() {
        return out;
    }
    let tmp = cache.join(format!(".{out_name}.{}.tmp", std::process::id()));
    let result = Command::new("gcc")
        .args(&sources)
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("gcc not found: install gcc (apt-get install -y build-essential), or run scripts/test.sh which does")
        }
        Err(e) => panic!("running gcc: {e}"),
    };
    assert!(
        output.status.success(),
        "gcc {name}.c {flags:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn bins_dir() -> PathBuf {
    profile_dir()
}

/// A C fixture built as an ordinary dynamically linked program with frame pointers.
pub fn fixture(name: &str) -> PathBuf {
    gcc(
        name,
        &[],
        &["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-Wall"],
        name,
    )
}

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` with stdout and stderr captured (through files, so nothing can block), and
/// kills it after `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The directory of the `prof_markers` Python module (what `prof run` puts on PYTHONPATH).
pub fn python_markers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiler/cli/python")
}

/// `prof` with no arguments yet.
pub fn prof() -> Command {
    Command::new(&bins().prof)
}

/// `prof run [opts] -o <out> -- <cmd...>`.
pub fn prof_run(opts: &[&str], out: &Path, cmd: &[&OsStr]) -> Command {
    let mut c = prof();
    c.arg("run")
        .args(opts)
        .arg("-o")
        .arg(out)
        .arg("--")
        .args(cmd);
    c
}

/// `prof report --format json <path>`, parsed; panics with prof's stderr on failure.
pub fn report_json(path: &Path) -> Value {
    let o = run_captured(
        prof().args(["report", "--format", "json"]).arg(path),
        TIMEOUT,
    );
    assert!(
        o.status.success(),
        "prof report failed ({}): {}",
        o.status,
        o.stderr
    );
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("prof report --format json is not JSON ({e}):\n{}", o.stdout))
}

/// The weighted totals of `functions[]` by name (summed if a name appears in several modules).
pub fn function_totals(report: &Value) -> Vec<(String, f64, f64)> {
    let funcs = report["functions"]
        .as_array()
        .expect("functions is an array");
    funcs
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["self"].as_f64().unwrap_or(0.0),
                f["total"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

/// Total weight of the functions whose name is exactly `name`, or starts with `name(`
/// (demanglers may add parameter lists).
pub fn total_of(report: &Value, name: &str) -> f64 {
    function_totals(report)
        .iter()
        .filter(|(n, _, _)| n == name || n.starts_with(&format!("{name}(")))
        .map(|(_, _, t)| *t)
        .sum()
}

/// A number field of the report; panics with the report if it is missing.
pub fn num(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("report has no number `{field}`: {report:#}"))
}

/// The report's top functions, for assertion messages.
pub fn describe(report: &Value) -> String {
    let mut s = format!(
        "samples={} weight={} lost={} timer={} rate_hz={} samples_per_cpu_s={}\n",
        report["samples"],
        report["weight"],
        report["lost_samples"],
        report["timer"],
        report["rate_hz"],
        report["samples_per_cpu_s"]
    );
    for (n, sf, t) in function_totals(report).iter().take(15) {
        s.push_str(&format!("  {n}: self {sf} total {t}\n"));
    }
    s
}

//! [issue 17] Python stacks on PyPy (Debian's pypy3): PyPy's own stack of Python code read
//! in the handler, named through `_vmprof`, with interpreter / JIT tiers per frame; checked
//! against vmprof's own log of the same program.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use prof_e2e::pystacks::{assert_one_depth, caller_chains, folded};
use prof_e2e::vmprof::{require, vmprof_venv};
use prof_e2e::*;

fn pypy() -> PathBuf {
    require("pypy3", &["--version"], "apt-get install -y pypy3");
    PathBuf::from("pypy3")
}

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// One sample of a speedscope export: its thread's profile name, frames root first
/// (name, file), weight.
struct Stack {
    thread: String,
    frames: Vec<(String, String)>,
    weight: f64,
}

fn stacks(profile: &Path) -> Vec<Stack> {
    let o = run_captured(
        prof()
            .args(["report", "--format", "speedscope"])
            .arg(profile),
        TIMEOUT,
    );
    assert!(o.status.success(), "prof report failed: {}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).expect("speedscope JSON");
    let frames: Vec<(String, String)> = v["shared"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["file"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for p in v["profiles"].as_array().unwrap() {
        let thread = p["name"].as_str().unwrap_or("").to_string();
        let ws = p["weights"].as_array().unwrap();
        for (s, w) in p["samples"].as_array().unwrap().iter().zip(ws) {
            out.push(Stack {
                thread: thread.clone(),
                frames: s
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| frames[i.as_u64().unwrap() as usize].clone())
                    .collect(),
                weight: w.as_f64().unwrap(),
            });
        }
    }
    out
}

fn is_python(file: &str) -> bool {
    file.ends_with(".py") || file.starts_with("<frozen") || file.starts_with("frozen ")
}

/// Self weight by innermost Python frame of `file_suffix`'s functions, as shares of the
/// weight whose innermost Python frame is in that file.
fn self_shares(stacks: &[Stack], file_suffix: &str) -> HashMap<String, f64> {
    let mut m: HashMap<String, f64> = HashMap::new();
    for s in stacks {
        if let Some((name, _)) = s.frames.iter().rev().find(|(_, f)| is_python(f)) {
            if s.frames
                .iter()
                .rev()
                .find(|(_, f)| is_python(f))
                .unwrap()
                .1
                .ends_with(file_suffix)
            {
                *m.entry(name.clone()).or_default() += s.weight;
            }
        }
    }
    let total: f64 = m.values().sum();
    m.values_mut().for_each(|v| *v /= total.max(1e-9));
    m
}

fn overlap(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    a.iter()
        .map(|(k, v)| v.min(*b.get(k).unwrap_or(&0.0)))
        .sum()
}

fn profile_app(dir: &Path, scale: &str) -> PathBuf {
    let out = dir.join("pypy.data");
    let script = fixture_file("pypy_app.py");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[pypy().as_os_str(), script.as_os_str(), OsStr::new(scale)],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
    assert!(
        o.stdout.starts_with("pypy_app "),
        "output changed: {}",
        o.stdout
    );
    assert!(
        !o.stderr.contains("SIGPROF handler"),
        "PyPy's _vmprof, turned on by prof, is not the program's handler: {}",
        o.stderr
    );
    out
}

#[test]
fn pypy_python_stacks_callers_threads_and_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let out = profile_app(dir.path(), "3");
    let all = stacks(&out);
    let total: f64 = all.iter().map(|s| s.weight).sum();
    let with_py: f64 = all
        .iter()
        .filter(|s| s.frames.iter().any(|(_, f)| is_python(f)))
        .map(|s| s.weight)
        .sum();
    assert!(
        with_py >= 0.9 * total,
        "only {:.1}% of the weight carries a Python frame",
        100.0 * with_py / total
    );
    // Every fixture function, wherever it is sampled, sits under its whole Python caller
    // chain: <module> -> main (main thread) or the thread's bootstrap -> background.
    let app = |s: &Stack| -> Vec<String> {
        s.frames
            .iter()
            .filter(|(_, f)| f.ends_with("pypy_app.py"))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let r = report_json(&out);
    let main_tid = format!("tid {})", r["processes"][0]["pid"].as_u64().unwrap());
    let mut seen: HashMap<String, f64> = HashMap::new();
    for s in &all {
        let chain = app(s);
        let Some(leaf) = chain.last() else { continue };
        *seen.entry(leaf.clone()).or_default() += s.weight;
        let ok = match chain.first().map(String::as_str) {
            Some("<module>") => chain.get(1).is_none_or(|c| c == "main"),
            Some("background") => !s.thread.ends_with(&main_tid),
            _ => false,
        };
        assert!(ok, "a broken Python chain: {:?}", s.frames);
        let expect_parent = |f: &str, p: &[&str]| {
            if let Some(i) = chain.iter().position(|c| c == f) {
                assert!(
                    i > 0 && p.contains(&chain[i - 1].as_str()),
                    "{f} called from {:?} in {chain:?}",
                    chain.get(i.wrapping_sub(1))
                );
            }
        };
        expect_parent("f", &["megamorphic"]);
        expect_parent("megamorphic", &["main"]);
        expect_parent("crunch", &["compute", "walk"]);
        expect_parent("words", &["tally"]);
        expect_parent("numbers", &["background", "_regular_sum", "sum"]);
    }
    for f in [
        "megamorphic",
        "f",
        "compute",
        "crunch",
        "tally",
        "walk",
        "background",
    ] {
        assert!(
            seen.keys().any(|k| k == f) || all.iter().any(|s| app(s).iter().any(|c| c == f)),
            "{f} never sampled: {:?}",
            seen
        );
    }
    // The worker thread's samples are its own.
    assert!(
        all.iter()
            .any(|s| !s.thread.ends_with(&main_tid)
                && app(s).first().is_some_and(|c| c == "background")),
        "no samples of the worker thread's background()"
    );
    let t = &r["tiers"];
    let jit = t["jit"].as_f64().unwrap_or(0.0);
    let interp = t["interpreter"].as_f64().unwrap_or(0.0);
    assert!(jit > 0.0 && interp > 0.0, "tiers {t}");
    // Python functions carry their tiers: crunch's loop runs compiled.
    let crunch = r["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "crunch" && f["module"] == "pypy_app.py")
        .unwrap_or_else(|| panic!("no crunch (pypy_app.py): {}", describe(&r)));
    assert!(
        crunch["tiers"]["jit"].as_f64().unwrap_or(0.0)
            > 0.5 * crunch["self"].as_f64().unwrap_or(1.0),
        "crunch runs mostly JIT-compiled: {crunch}"
    );
    // The JIT share grows over the run.
    let tl = r["timeline"]["buckets"]
        .as_array()
        .expect("timeline.buckets");
    let n = tl.len();
    assert!(n >= 4, "timeline {tl:?}");
    let share = |b: &[Value]| {
        let (mut j, mut a) = (0.0, 0.0);
        for x in b {
            j += x["jit"].as_f64().unwrap_or(0.0);
            a += ["interpreter", "warmup", "jit", "native", "gc", "kernel"]
                .iter()
                .map(|k| x[*k].as_f64().unwrap_or(0.0))
                .sum::<f64>();
        }
        j / a.max(1.0)
    };
    let (j0, j1) = (share(&tl[..n / 4]), share(&tl[n - n / 4..]));
    assert!(
        j1 > j0,
        "JIT share first quarter {j0:.2}, last quarter {j1:.2}"
    );
}

/// Self time by innermost Python frame agrees with vmprof's own log of the same program.
#[test]
fn pypy_agrees_with_vmprof() {
    let py = vmprof_venv("pypy3", "apt-get install -y pypy3");
    let dir = tempfile::tempdir().unwrap();
    let ours = profile_app(dir.path(), "6");
    let theirs = dir.path().join("app.vmprof");
    let o = run_captured(
        Command::new(&py)
            .args(["-m", "vmprof", "-o"])
            .arg(&theirs)
            .arg(fixture_file("pypy_app.py"))
            .arg("6"),
        TIMEOUT,
    );
    assert!(o.status.success(), "vmprof failed: {}", o.stderr);
    let a = self_shares(&stacks(&ours), "pypy_app.py");
    let b = self_shares(&stacks(&theirs), "pypy_app.py");
    let ov = overlap(&a, &b);
    assert!(ov >= 0.70, "overlap {ov:.2}: prof {a:?} vmprof {b:?}");
}

/// A multiprocessing child: its own samples and end record (PyPy's os._exit), and names
/// for code made before the fork (the parent's) and in the child (flushed before _exit).
#[test]
fn pypy_fork_child_has_samples_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fork.data");
    let script = fixture_file("pypy_fork.py");
    let o = run_captured(
        &mut prof_run(
            &["--rate", "3999"],
            &out,
            &[pypy().as_os_str(), script.as_os_str()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
    assert!(o.stdout.contains("exit 0"), "{}", o.stdout);
    let r = report_json(&out);
    let procs = r["processes"].as_array().unwrap();
    let child = procs
        .iter()
        .find(|p| p["ppid"] == procs[0]["pid"])
        .unwrap_or_else(|| panic!("no child process: {}", describe(&r)));
    assert_eq!(
        child["ended"], true,
        "the child's log has its end record: {child}"
    );
    assert!(child["samples"].as_u64().unwrap_or(0) > 0, "{child}");
    let child_stacks: Vec<Stack> = stacks(&out)
        .into_iter()
        .filter(|s| s.thread.contains(&format!("pid {}", child["pid"])))
        .collect();
    for f in ["child_only", "made_in_child"] {
        assert!(
            child_stacks
                .iter()
                .any(|s| s.frames.iter().any(|(n, _)| n == f)),
            "{f} is not named in the child's stacks"
        );
    }
    assert!(
        !child_stacks
            .iter()
            .any(|s| s.frames.iter().any(|(n, _)| n.contains("unnamed"))
                && s.frames.iter().any(|(n, _)| n == "child_only")),
        "an unnamed frame under child_only"
    );
}

/// The seeds' workload: Django's ORM on PyPy (tests/fixtures/py_django.py, Django 4.2 in a
/// PyPy venv). Reads like vmprof's Python tree — one_request at one depth under
/// <module>;main, the ORM's functions (qualified as CPython names them) under it — and keeps
/// what vmprof lacks: sqlite3's C code as native time, GC time, the achieved rate.
#[test]
fn pypy_django_orm_reads_like_vmprof() {
    let python = prof_e2e::venv::pip_venv(
        pypy().as_os_str(),
        "django42-pypy3",
        "django>=4.2,<4.3",
        "django",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("django.data");
    let script = fixture_file("py_django.py");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[python.as_os_str(), script.as_os_str(), OsStr::new("5")],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("done "), "{}", o.stdout);
    let r = report_json(&out);
    let stacks = folded(&out);
    let total = assert_one_depth(&stacks, &r, "one_request", "pypy3 (Django venv)");
    for f in [
        "QuerySet.filter",
        "QuerySet.exclude",
        "SQLCompiler.execute_sql",
    ] {
        let (chains, w) = caller_chains(&stacks, f);
        let under: u64 = chains
            .iter()
            .filter(|(c, _)| c.contains(";<module>;main;one_request"))
            .map(|(_, w)| w)
            .sum();
        assert!(
            w > 0 && under as f64 >= 0.99 * w as f64,
            "{f} has {under} of {w} samples under one_request: {}",
            describe(&r)
        );
    }
    let all: u64 = stacks.iter().map(|(_, w)| w).sum();
    let with_py: u64 = stacks
        .iter()
        .filter(|(f, _)| f.iter().any(|x| x == "<module>"))
        .map(|(_, w)| w)
        .sum();
    assert!(
        with_py as f64 >= 0.9 * all as f64,
        "{with_py} of {all} samples carry Python frames"
    );
    // sqlite3's C code, called from Python through cffi: native.
    let vdbe = r["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "sqlite3VdbeExec")
        .unwrap_or_else(|| panic!("no sqlite3VdbeExec: {}", describe(&r)));
    // Native, or kernel for the system calls made under it (their CPU time is theirs).
    let native =
        vdbe["tiers"]["native"].as_f64().unwrap() + vdbe["tiers"]["kernel"].as_f64().unwrap();
    assert!(
        native >= 0.98 * vdbe["total"].as_f64().unwrap(),
        "sqlite3VdbeExec is native: {vdbe}"
    );
    assert!(total > 0);
    let t = &r["tiers"];
    for k in ["interpreter", "jit", "native", "gc"] {
        assert!(t[k].as_f64().unwrap_or(0.0) > 0.0, "no {k} time: {t}");
    }
    let rate = r["samples_per_cpu_s"].as_f64().unwrap();
    assert!(rate >= 800.0, "{rate} samples per CPU-second at 999 Hz");
}

/// Wall mode: a blocked PyPy thread's time lands on the Python function that sleeps, under
/// the syscall it waits in.
#[test]
fn pypy_wall_mode_blocked_thread_on_its_python_function() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wall.data");
    let script = fixture_file("pypy_wall.py");
    let o = run_captured(
        &mut prof_run(
            &["--mode", "wall"],
            &out,
            &[pypy().as_os_str(), script.as_os_str()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
    let stacks = folded(&out);
    let (chains, w) = caller_chains(&stacks, "sleeper");
    assert!(w > 0, "sleeper never sampled");
    let off: u64 = stacks
        .iter()
        .filter(|(f, _)| {
            f.iter().any(|x| x == "sleeper") && f.last().is_some_and(|l| l.starts_with("[syscall "))
        })
        .map(|(_, w)| w)
        .sum();
    assert!(
        off as f64 >= 0.8 * w as f64,
        "{off} of sleeper's {w} under a [syscall ...] leaf: {chains:?}"
    );
}

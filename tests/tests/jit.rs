//! JIT code and tiers (issue 5) on the real runtimes: node 20 (V8 perf maps), OpenJDK 17
//! (HotSpot's map at exit) and Debian's pypy3 (its JIT log and anonymous code), plus tier
//! rule files. A missing runtime fails the test, naming the package to install.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use prof_e2e::*;

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The runtime `exe` from PATH, or a failure naming the Debian package that provides it.
fn runtime(exe: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{exe} is not installed: the JIT tests need it (apt-get install {package}; scripts/test.sh does)")
        })
}

fn run_ok(cmd: &mut Command) -> Outcome {
    let o = run_captured(cmd, TIMEOUT);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}",
        o.status,
        o.stderr
    );
    o
}

const TIERS: [&str; 6] = ["interpreter", "warmup", "jit", "native", "gc", "kernel"];

fn tier(v: &Value, t: &str) -> f64 {
    v[t].as_f64().unwrap_or(0.0)
}

/// Share of tier `t` over timeline buckets.
fn share(buckets: &[Value], t: &str) -> f64 {
    let all: f64 = buckets
        .iter()
        .map(|b| TIERS.iter().map(|k| tier(b, k)).sum::<f64>())
        .sum();
    buckets.iter().map(|b| tier(b, t)).sum::<f64>() / all.max(1.0)
}

/// The first and the last fifth of the timeline's buckets.
fn ends(report: &Value) -> (Vec<Value>, Vec<Value>) {
    let b = report["timeline"]["buckets"]
        .as_array()
        .expect("timeline.buckets")
        .clone();
    assert!(b.len() >= 10, "too few timeline buckets: {report:#}");
    let n = b.len() / 5;
    (b[..n].to_vec(), b[b.len() - n..].to_vec())
}

/// (name, module, total, tiers) of every function whose name contains `part`.
fn functions_like<'a>(report: &'a Value, part: &str) -> Vec<&'a Value> {
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"].as_str().unwrap_or("").contains(part))
        .collect()
}

fn perf_map_exists(pid: u64) -> bool {
    Path::new(&format!("/tmp/perf-{pid}.map")).exists()
}

fn pids(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

/// Profiles the Node fixture; V8 tiers up within milliseconds, so the fixture raises its
/// tier-up budget to stretch the interpreted phase over many timeline buckets.
fn node_profile(dir: &Path, opts: &[&str]) -> (PathBuf, Value) {
    let node = runtime("node", "nodejs");
    let out = dir.join("node.data");
    let script = fixture_file("jit_warmup.js");
    let o = run_ok(
        prof_run(
            opts,
            &out,
            &[
                node.as_os_str(),
                OsStr::new("--interrupt-budget=300000000"),
                // Sparkplug's baseline tier-up is not governed by the budget and, on a
                // loaded machine, took over before Ignition got any samples: without it
                // the function stays interpreted until TurboFan, deterministically.
                OsStr::new("--no-sparkplug"),
                script.as_os_str(),
                OsStr::new("100000"),
            ],
        )
        .current_dir(dir),
    );
    assert!(o.stdout.contains("jit_warmup"), "{}", o.stdout);
    // node writes a V8 log next to itself when --perf-basic-prof is on: prof's doing,
    // removed by the agent at exit.
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("isolate-"))
        .collect();
    assert!(left.is_empty(), "V8 logs left behind: {left:?}");
    let r = report_json(&out);
    (out, r)
}

#[test]
fn node_functions_tiers_and_warmup_curve() {
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = node_profile(dir.path(), &[]);
    // JS function names from the perf map, in the [jit] pseudo module.
    let hot = functions_like(&r, "hotKernel");
    assert!(
        hot.iter()
            .any(|f| f["module"] == "[jit]" && f["name"] == "JS:*hotKernel"),
        "no optimized hotKernel:\n{}",
        describe(&r)
    );
    assert!(
        hot.iter().any(|f| f["name"] == "JS:~hotKernel"),
        "no interpreted hotKernel:\n{}",
        describe(&r)
    );
    let file = hot[0]["file"].as_str().unwrap_or("");
    assert!(file.ends_with("jit_warmup.js"), "{file}");
    // Tier totals and per-function tiers.
    let tiers = &r["tiers"];
    let total = num(&r, "weight");
    assert!(tier(tiers, "jit") > 0.3 * total, "{tiers}");
    assert!(tier(tiers, "interpreter") > 0.05 * total, "{tiers}");
    let opt = hot.iter().find(|f| f["name"] == "JS:*hotKernel").unwrap();
    assert!(tier(&opt["tiers"], "jit") >= 0.9 * opt["total"].as_f64().unwrap());
    // The warmup curve: interpreted first, JIT-compiled at the end.
    let (first, last) = ends(&r);
    let (i0, i1) = (share(&first, "interpreter"), share(&last, "interpreter"));
    assert!(
        i0 > i1 + 0.1,
        "interpreter share first {i0:.2} vs last {i1:.2}:\n{}",
        r["timeline"]
    );
    let j1 = share(&last, "jit");
    assert!(j1 > 0.6, "jit share of the last buckets {j1:.2}");
    // Stacks through JIT code reach the program's entry and the JS main function.
    let o = run_ok(prof().args(["report", "--format", "collapsed"]).arg(&out));
    let (mut all, mut whole) = (0u64, 0u64);
    for line in o.stdout.lines().filter(|l| l.contains("hotKernel")) {
        let (stack, w) = line.rsplit_once(' ').unwrap();
        let w: u64 = w.parse().unwrap();
        all += w;
        let js_main = stack
            .split(';')
            .any(|f| f.starts_with("JS:") && f.ends_with("main"));
        if stack.starts_with("_start;") && stack.contains("node::Start") && js_main {
            whole += w;
        }
    }
    assert!(
        whole as f64 >= 0.9 * all as f64,
        "{whole} of {all} hotKernel samples reach _start through JS main"
    );
    // prof asked for the map, so prof removed it (the profile holds it).
    for pid in pids(&r) {
        assert!(!perf_map_exists(pid), "/tmp/perf-{pid}.map was left behind");
    }
}

#[test]
fn node_without_jit_maps_and_with_the_users_own() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = node_profile(dir.path(), &["--no-jit-maps"]);
    assert!(
        functions_like(&r, "JS:").is_empty(),
        "--no-jit-maps still named JS code:\n{}",
        describe(&r)
    );
    // The user's own --perf-basic-prof: the map is theirs and stays.
    let node = runtime("node", "nodejs");
    let out = dir.path().join("own.data");
    let script = fixture_file("jit_warmup.js");
    run_ok(
        prof_run(
            &[],
            &out,
            &[
                node.as_os_str(),
                OsStr::new("--perf-basic-prof"),
                script.as_os_str(),
                OsStr::new("2000"),
            ],
        )
        .current_dir(dir.path()),
    );
    let r = report_json(&out);
    assert!(!functions_like(&r, "JS:").is_empty(), "{}", describe(&r));
    for pid in pids(&r) {
        assert!(
            perf_map_exists(pid),
            "the user's /tmp/perf-{pid}.map was removed"
        );
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
}

#[test]
fn java_method_by_name_with_tiers() {
    let java = runtime("java", "openjdk-17-jdk-headless");
    let javac = runtime("javac", "openjdk-17-jdk-headless");
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(javac)
            .arg("-d")
            .arg(dir.path())
            .arg(fixture_file("JitHot.java")),
    );
    let out = dir.path().join("java.data");
    let o = run_ok(&mut prof_run(
        &[],
        &out,
        &[
            java.as_os_str(),
            OsStr::new("-cp"),
            dir.path().as_os_str(),
            OsStr::new("JitHot"),
            OsStr::new("3000"),
        ],
    ));
    assert!(o.stdout.contains("jit_hot"), "{}", o.stdout);
    let r = report_json(&out);
    let hot = functions_like(&r, "JitHot.hotKernel");
    assert!(!hot.is_empty(), "no JitHot.hotKernel:\n{}", describe(&r));
    assert!(
        hot.iter()
            .all(|f| f["module"].as_str().unwrap_or("").starts_with("[jit")),
        "{hot:?}"
    );
    let total = num(&r, "weight");
    let hot_total: f64 = hot.iter().map(|f| f["self"].as_f64().unwrap()).sum();
    assert!(hot_total > 0.4 * total, "{hot_total} of {total}");
    let tiers = &r["tiers"];
    assert!(tier(tiers, "jit") > 0.3 * total, "{tiers}");
    assert!(tier(tiers, "warmup") > 0.0, "no compiler time: {tiers}");
    assert!(
        tier(tiers, "interpreter") > 0.0,
        "no interpreter time: {tiers}"
    );
    for pid in pids(&r) {
        assert!(!perf_map_exists(pid), "/tmp/perf-{pid}.map was left behind");
    }
}

#[test]
fn pypy_interpreter_warmup_and_jit() {
    let pypy = runtime("pypy3", "pypy3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pypy.data");
    let script = fixture_file("pypy_loop.py");
    let o = run_ok(&mut prof_run(
        &[],
        &out,
        &[pypy.as_os_str(), script.as_os_str(), OsStr::new("12000")],
    ));
    assert!(o.stdout.contains("pypy_loop"), "{}", o.stdout);
    let r = report_json(&out);
    let tiers = &r["tiers"];
    for t in ["interpreter", "warmup", "jit"] {
        assert!(tier(tiers, t) > 0.0, "no {t} samples: {tiers}");
    }
    // The JIT's loops are named after their Python function (PyPy's JIT log).
    let kernel = functions_like(&r, "kernel");
    assert!(
        kernel
            .iter()
            .any(|f| f["name"] == "kernel" && f["module"] == "[jit]"),
        "{}",
        describe(&r)
    );
    let (first, last) = ends(&r);
    let (j0, j1) = (share(&first, "jit"), share(&last, "jit"));
    assert!(j1 > j0, "jit share first {j0:.2}, last {j1:.2}");
    assert!(j1 > 0.5, "jit share of the last buckets {j1:.2}");
}

#[test]
fn rule_files_reclassify_and_bad_ones_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = node_profile(dir.path(), &[]);
    let before = functions_like(&r, "JS:*hotKernel")[0]["total"]
        .as_f64()
        .unwrap();
    let rules = dir.path().join("mine.rules");
    std::fs::write(&rules, "# my rules\ngc function ^JS:\\*hotKernel$\n").unwrap();
    let o = run_ok(
        prof()
            .args(["report", "--format", "json", "--tier-rules"])
            .arg(&rules)
            .arg(&out),
    );
    let r2: Value = serde_json::from_str(&o.stdout).unwrap();
    let hot = functions_like(&r2, "JS:*hotKernel")[0];
    assert_eq!(tier(&hot["tiers"], "gc"), before, "{hot}");
    assert!(tier(&r2["tiers"], "gc") >= before);
    assert!(tier(&r2["tiers"], "jit") < tier(&r["tiers"], "jit"));

    // Malformed: one line naming the file and line, non-zero exit, for report and run.
    std::fs::write(&rules, "jit function ^ok$\nfast function ^x\n").unwrap();
    let o = run_captured(
        prof()
            .args(["report", "--tier-rules"])
            .arg(&rules)
            .arg(&out),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1), "{}", o.stderr);
    let want = format!(
        "prof: bad tier rules: {}:2: unknown tier \"fast\"",
        rules.display()
    );
    assert!(o.stderr.starts_with(&want), "{}", o.stderr);
    let o = run_captured(
        &mut prof_run(
            &["--tier-rules", rules.to_str().unwrap()],
            &dir.path().join("x.data"),
            &[OsStr::new("true")],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.starts_with(&want), "{}", o.stderr);
    std::fs::write(&rules, "jit function (unclosed\n").unwrap();
    let o = run_captured(
        prof()
            .args(["report", "--tier-rules"])
            .arg(&rules)
            .arg(&out),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains(":1: bad regular expression"),
        "{}",
        o.stderr
    );
}

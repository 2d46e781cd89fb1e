//! Exports and imports on real data: a profile recorded by `prof run` on a C fixture,
//! exported to every format and checked by the tools that read them (the speedscope JSON
//! schema, `go tool pprof`, headless Chromium for the HTML flamegraph, an XML parser for
//! the SVG); and vmprof logs recorded by `python -m vmprof` on CPython and on PyPy,
//! imported by `prof report`.
//!
//! Needs, besides gcc: Go (`go tool pprof`), Chromium, pypy3, and network access to PyPI
//! for `pip install vmprof` into venvs under the target directory. scripts/test.sh
//! installs the Debian packages (golang-go, chromium, pypy3). A missing tool fails the
//! test with the package to install; nothing is skipped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prof_e2e::vmprof::{cpu_script, require, vmprof_venv};
use prof_e2e::*;

const SPEEDSCOPE_SCHEMA: &str = include_str!("../data/speedscope-file-format-schema.json");

const FLAGS: &[&str] = &["-O2", "-g", "-fno-omit-frame-pointer", "-pthread"];
/// About 0.6 CPU-seconds in all; work_d gets 40% of it.
const UNIT: &str = "5000000";

/// A real profile of the 4-thread C fixture, recorded once for all tests here.
fn c_profile() -> &'static (PathBuf, Value) {
    static P: OnceLock<(PathBuf, Value)> = OnceLock::new();
    P.get_or_init(|| {
        let exe = gcc("c_threads", &[], FLAGS, "c_threads");
        let dir = bins().dir.join("prof-e2e-exports");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("c_threads-{}.data", std::process::id()));
        let o = run_captured(
            &mut prof_run(&["-q"], &out, &[exe.as_os_str(), OsStr::new(UNIT)]),
            TIMEOUT,
        );
        assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
        let report = report_json(&out);
        assert!(total_of(&report, "work_d") > 0.0, "{}", describe(&report));
        (out, report)
    })
}

/// `prof report PROFILE --format FORMAT -o FILE`; returns FILE's bytes.
fn export(profile: &Path, format: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("out.{format}"));
    let o = run_captured(
        prof()
            .arg("report")
            .arg(profile)
            .args(["--format", format, "-o"])
            .arg(&out),
        TIMEOUT,
    );
    assert!(
        o.status.success(),
        "prof report --format {format} failed: {}",
        o.stderr
    );
    assert!(o.stdout.is_empty(), "-o writes nothing to stdout");
    std::fs::read(&out).unwrap()
}

#[test]
fn speedscope_export_validates_against_the_schema() {
    let (profile, report) = c_profile();
    let bytes = export(profile, "speedscope");
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let schema: Value = serde_json::from_str(SPEEDSCOPE_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .take(10)
        .collect();
    assert!(errors.is_empty(), "schema violations: {errors:#?}");
    // The validator does check: a profile of an unknown type is refused.
    let mut broken = doc.clone();
    broken["profiles"][0]["type"] = "stacked".into();
    assert!(!validator.is_valid(&broken));
    // One sampled profile per thread; weights add up to the profile's CPU time.
    let profiles = doc["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), report["threads"].as_array().unwrap().len());
    let period = 1e9 / num(report, "rate_hz");
    let weights: f64 = profiles
        .iter()
        .flat_map(|p| p["weights"].as_array().unwrap())
        .map(|w| w.as_f64().unwrap())
        .sum();
    let want = num(report, "weight") * period;
    assert!(
        (weights - want).abs() <= want * 0.01,
        "weights {weights} vs {want}"
    );
    let frames = doc["shared"]["frames"].as_array().unwrap();
    let work_d = frames.iter().find(|f| f["name"] == "work_d").unwrap();
    assert!(work_d["file"].as_str().unwrap().ends_with("c_threads.c"));
    assert!(work_d["line"].as_u64().unwrap() > 0);
}

#[test]
fn pprof_export_reads_in_go_tool_pprof() {
    require(
        "go",
        &["version"],
        "install Go (apt-get install -y golang-go)",
    );
    let (profile, report) = c_profile();
    let bytes = export(profile, "pprof");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("cpu.pb.gz");
    std::fs::write(&pb, &bytes).unwrap();
    let pprof = |args: &[&str]| {
        let o = run_captured(
            Command::new("go")
                .args(["tool", "pprof"])
                .args(args)
                .arg(&pb)
                .env("HOME", dir.path()),
            TIMEOUT,
        );
        assert!(o.status.success(), "go tool pprof {args:?}: {}", o.stderr);
        o.stdout
    };
    // -top: every work_X function by name, in the report's proportions.
    let top = pprof(&["-top", "-nodecount=50"]);
    for f in ["work_a", "work_b", "work_c", "work_d"] {
        assert!(top.contains(f), "{f} missing from pprof -top:\n{top}");
    }
    // -raw: sample types, tier labels, and the total count equal to the report's weight.
    let raw = pprof(&["-raw"]);
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("tier:[native]"), "{raw}");
    let mut in_samples = false;
    let mut count = 0u64;
    for line in raw.lines() {
        if line.starts_with("Samples:") {
            in_samples = true;
            continue;
        }
        if line.starts_with("Locations") {
            break;
        }
        if !in_samples || !line.contains(':') {
            continue;
        }
        if let Some(n) = line
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            count += n;
        }
    }
    assert_eq!(count as f64, num(report, "weight"), "{raw}");
    // -list shows source lines: the file and lines made it through.
    let list = pprof(&["-list", "^work_d$"]);
    assert!(list.contains("c_threads.c"), "{list}");
}

#[test]
fn firefox_export_is_a_processed_profile() {
    let (profile, report) = c_profile();
    let doc: Value = serde_json::from_slice(&export(profile, "firefox")).unwrap();
    let meta = &doc["meta"];
    assert!(meta["preprocessedProfileVersion"].as_u64().unwrap() >= 40);
    assert!(meta["interval"].as_f64().unwrap() > 0.0);
    let cats: Vec<&str> = meta["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for t in ["interpreter", "warmup", "jit", "native", "gc", "kernel"] {
        assert!(cats.contains(&t), "{cats:?}");
    }
    let native = cats.iter().position(|&c| c == "native").unwrap() as u64;
    let kernel = cats.iter().position(|&c| c == "kernel").unwrap() as u64;
    let threads = doc["threads"].as_array().unwrap();
    assert_eq!(threads.len(), report["threads"].as_array().unwrap().len());
    let mut weight = 0u64;
    let mut names = Vec::new();
    for t in threads {
        let s = &t["samples"];
        let n = s["length"].as_u64().unwrap() as usize;
        for col in ["stack", "timeDeltas"] {
            assert_eq!(s[col].as_array().unwrap().len(), n, "{col}");
        }
        weight += s["weight"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .sum::<u64>();
        let strings = t["stringArray"].as_array().unwrap();
        let ft = &t["funcTable"];
        for (i, name) in ft["name"].as_array().unwrap().iter().enumerate() {
            let name = strings[name.as_u64().unwrap() as usize].as_str().unwrap();
            names.push(name.to_string());
            if name == "work_d" {
                let file = ft["fileName"][i].as_u64().unwrap() as usize;
                assert!(strings[file].as_str().unwrap().ends_with("c_threads.c"));
            }
        }
        // A native program: every frame native, or kernel where its system calls' CPU time
        // lands (`[syscall NAME]`, `[kernel]`).
        let frame_func = t["frameTable"]["func"].as_array().unwrap();
        for (i, c) in t["frameTable"]["category"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let f = frame_func[i].as_u64().unwrap() as usize;
            let name = strings[ft["name"][f].as_u64().unwrap() as usize]
                .as_str()
                .unwrap();
            let c = c.as_u64().unwrap();
            if name.starts_with("[syscall ") || name == "[kernel]" {
                assert_eq!(c, kernel, "{name}");
            } else {
                // A frame takes the tier of the samples it was first seen in: kernel on
                // a stack that made a system call.
                assert!(c == native || c == kernel, "{name}: category {c}");
            }
        }
        // Stack prefixes point backwards, frames exist.
        let st = &t["stackTable"];
        let frames = t["frameTable"]["length"].as_u64().unwrap();
        for (i, (p, f)) in st["prefix"]
            .as_array()
            .unwrap()
            .iter()
            .zip(st["frame"].as_array().unwrap())
            .enumerate()
        {
            assert!(p.is_null() || (p.as_u64().unwrap() as usize) < i);
            assert!(f.as_u64().unwrap() < frames);
        }
    }
    assert_eq!(weight as f64, num(report, "weight"));
    assert!(names.iter().any(|n| n == "work_d"), "{names:?}");
}

#[test]
fn svg_export_is_xml_with_the_hot_function() {
    let (profile, _) = c_profile();
    let svg = String::from_utf8(export(profile, "svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    let work_d = titles
        .iter()
        .find(|t| t.starts_with("work_d"))
        .unwrap_or_else(|| panic!("no work_d frame: {titles:?}"));
    // Native, and kernel for the CPU time of the system calls made under it.
    assert!(work_d.contains("native "), "{work_d}");
    for t in ["interpreter", "warmup", "jit", "gc"] {
        assert!(!work_d.contains(t), "{work_d}");
    }
    assert!(work_d.contains("c_threads.c:"), "{work_d}");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(labels.contains(&"work_d"), "{labels:?}");
}

#[test]
fn html_export_draws_in_headless_chromium() {
    require(
        "chromium",
        &["--version"],
        "install Chromium (apt-get install -y chromium)",
    );
    let (profile, report) = c_profile();
    let html = String::from_utf8(export(profile, "html")).unwrap();
    assert!(html.contains("\"work_d\""), "the call tree is inlined");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("flame.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str], url: &str| {
        let o = run_captured(
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--hide-scrollbars",
                    "--window-size=1280,900",
                    "--virtual-time-budget=5000",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.path().join("chrome").display()
                ))
                .args(extra)
                .arg(url)
                .env("HOME", dir.path()),
            TIMEOUT,
        );
        assert!(o.status.success(), "chromium failed: {}", o.stderr);
        o.stdout
    };
    // The script ran to the end and drew frames on the canvas.
    let dom = chromium(&["--dump-dom"], &url);
    let body = dom
        .find("<body")
        .map(|i| &dom[i..dom[i..].find('>').map(|j| i + j).unwrap_or(dom.len())])
        .unwrap_or("");
    assert!(
        body.contains("data-ready=\"1\""),
        "the page's script did not finish: {body}"
    );
    let drawn: u64 = body
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(drawn >= 10, "only {drawn} frames drawn: {body}");
    // And it paints: the screenshot is a real PNG of the page.
    let shot = dir.path().join("shot.png");
    chromium(&[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
    // The search (state in the URL: #q=REGEX&zoom=NODE) matches work_d's share of the
    // samples, and zooming shows the path to the zoomed frame.
    let dom = chromium(&["--dump-dom"], &format!("{url}#q=%5Ework_d%24&zoom=1"));
    let matched: f64 = dom
        .split("<span id=\"matched\">matched ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no search result in the page: {dom}"));
    let want = 100.0 * total_of(report, "work_d") / num(report, "weight");
    assert!(
        (matched - want).abs() < 0.15,
        "search matched {matched}%, work_d is {want}%"
    );
    assert!(dom.contains("Zoomed into: "), "{dom}");
}

#[test]
fn collapsed_output_is_unchanged() {
    let (profile, _) = c_profile();
    let o = run_captured(
        prof()
            .arg("report")
            .arg(profile)
            .args(["--format", "collapsed"]),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(export(profile, "collapsed"), o.stdout.as_bytes());
    assert!(
        o.stdout.lines().any(|l| l.contains(";work_d ")),
        "{}",
        o.stdout
    );
}

#[test]
fn pprof_to_a_terminal_is_refused_and_unknown_inputs_are_named() {
    let (profile, _) = c_profile();
    // Not a terminal here, so the bytes come through stdout.
    let o = run_captured(
        prof()
            .arg("report")
            .arg(profile)
            .args(["--format", "pprof"]),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01\x02 definitely not a profile").unwrap();
    let o = run_captured(prof().arg("report").arg(&junk), TIMEOUT);
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains(
            "not a prof profile, nor a vmprof log, `perf script` output or folded stacks"
        ),
        "{}",
        o.stderr
    );
}

// ---------------------------------------------------------------- vmprof imports

/// Records `python -m vmprof -o LOG vmprof_cpu.py ROUNDS`; returns the log's path.
fn record_vmprof(python: &Path, rounds: &str, dir: &Path) -> PathBuf {
    let script = cpu_script();
    let log = dir.join("cpu.vmprof");
    let o = run_captured(
        Command::new(python)
            .args(["-m", "vmprof", "-o"])
            .arg(&log)
            .arg(&script)
            .arg(rounds),
        TIMEOUT,
    );
    assert!(
        o.status.success() && o.stdout.contains("vmprof_cpu"),
        "python -m vmprof failed: {}{}",
        o.stdout,
        o.stderr
    );
    log
}

fn function(report: &Value, name: &str) -> Value {
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no function {name}: {}", describe(report)))
}

#[test]
fn vmprof_log_from_cpython_imports() {
    let python = vmprof_venv(
        "python3",
        "install Python 3 (apt-get install -y python3 python3-venv)",
    );
    let dir = tempfile::tempdir().unwrap();
    let log = record_vmprof(&python, "60", dir.path());
    let report = report_json(&log);
    for f in ["vm_fib", "vm_sieve", "vm_main"] {
        let func = function(&report, f);
        assert_eq!(
            func["file"].as_str().unwrap(),
            cpu_script().to_str().unwrap()
        );
        assert!(func["total"].as_u64().unwrap() > 0);
    }
    // Nearly all of the time is under vm_main (the rest: start-up and vmprof itself).
    let main_total = function(&report, "vm_main")["total"].as_f64().unwrap();
    assert!(
        main_total >= 0.8 * num(&report, "weight"),
        "{}",
        describe(&report)
    );
    let tiers = &report["tiers"];
    assert!(num(tiers, "interpreter") > 0.0, "{tiers}");
    assert_eq!(num(tiers, "jit"), 0.0, "CPython has no JIT: {tiers}");
    assert!(report["notices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("cpython")));
    // And it exports like any profile.
    let folded = String::from_utf8(export(&log, "collapsed")).unwrap();
    assert!(
        folded.lines().any(|l| l.contains("vm_main;vm_fib;vm_fib")),
        "{folded}"
    );
}

#[test]
fn vmprof_log_from_pypy_shows_the_jit_tier() {
    let python = vmprof_venv("pypy3", "install PyPy (apt-get install -y pypy3)");
    let dir = tempfile::tempdir().unwrap();
    let log = record_vmprof(&python, "400", dir.path());
    let report = report_json(&log);
    for f in ["vm_fib", "vm_sieve", "vm_main"] {
        assert!(function(&report, f)["total"].as_u64().unwrap() > 0);
    }
    let tiers = &report["tiers"];
    assert!(num(tiers, "jit") > 0.0, "PyPy's JIT-compiled code: {tiers}");
    let fib = function(&report, "vm_fib");
    assert!(
        fib["tiers"]["jit"].as_u64().unwrap() > 0,
        "vm_fib ran JIT-compiled: {fib}"
    );
    assert!(report["notices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("pypy")));
    // The HTML flamegraph of it carries the tier split.
    let html = String::from_utf8(export(&log, "html")).unwrap();
    assert!(html.contains("\"vm_fib\""));
}

//! [issue 14] Request markers end to end: the agent's C ABI through the `prof_markers`
//! Python module (WSGI middleware under a real wsgiref server, `mark`, `marked`,
//! `interval`) on pyenv's CPython 3.11, 3.12, 3.13 and Debian's PyPy, to `prof report`'s
//! `markers` and `marker_stats`; and launchers (pyenv's shim, `env`, `sh -c`) folding into
//! the program they start.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use prof_e2e::{prof_run, report_json, run_captured, TIMEOUT};
use serde_json::Value;

fn pyenv_root() -> PathBuf {
    PathBuf::from(std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into()))
}

fn interpreters() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "3.11.7/bin/python3.11",
        "3.12.1/bin/python3.12",
        "3.13.0/bin/python3.13",
    ]
    .iter()
    .map(|p| pyenv_root().join("versions").join(p))
    .collect();
    v.push(PathBuf::from("/usr/bin/pypy3"));
    for p in &v {
        assert!(
            p.exists(),
            "{} is missing: the marker tests need pyenv's CPython 3.11.7, 3.12.1, 3.13.0 and Debian's pypy3 (apt-get install pypy3)",
            p.display()
        );
    }
    v
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn out_dir(name: &str) -> PathBuf {
    let d = prof_e2e::profile_dir().join("markers");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn stats<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["marker_stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no marker {name:?} in {}", report["marker_stats"]))
}

fn check(python: &Path) -> PathBuf {
    let tag = python.file_name().unwrap().to_string_lossy().into_owned();
    let out = out_dir(&format!("{tag}.data"));
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[python.as_os_str(), fixture("py_markers.py").as_os_str()],
        ),
        TIMEOUT,
    );
    assert!(o.status.success(), "{tag}: {}\n{}", o.status, o.stderr);
    let did: Value = serde_json::from_str(
        o.stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("{tag}: no JSON line in {}", o.stdout)),
    )
    .unwrap();
    assert_eq!(did["enabled"], true, "{tag}: prof_markers found no agent");
    let r = report_json(&out);
    // Every request is one marker, named by route with its id folded.
    let fast = stats(&r, "GET /fast/{id}/item");
    let slow = stats(&r, "GET /slow/{id}");
    assert_eq!(fast["count"], did["fast"], "{tag}");
    assert_eq!(slow["count"], did["slow"], "{tag}");
    assert_eq!(stats(&r, "batch")["count"], 5, "{tag}");
    assert_eq!(stats(&r, "decorated")["count"], 1, "{tag}");
    assert_eq!(stats(&r, "given whole")["count"], 1, "{tag}");
    // Durations: the slow route burns 12 ms of CPU, the fast one 2 ms (each at least that
    // long; a loaded machine stretches them).
    let p50 = |m: &Value| m["p50_s"].as_f64().unwrap();
    assert!(p50(slow) >= 0.012, "{tag}: slow p50 {}", p50(slow));
    assert!(p50(fast) >= 0.002, "{tag}: fast p50 {}", p50(fast));
    assert!(
        p50(slow) > 2.0 * p50(fast),
        "{tag}: slow {} fast {}",
        p50(slow),
        p50(fast)
    );
    // ASGI: six interleaved requests, each at least its two 5 ms sleeps long.
    let asgi = stats(&r, "GET /async/{id}");
    assert_eq!(asgi["count"], did["asgi"], "{tag}");
    assert_eq!(asgi["count"], 6, "{tag}");
    assert!(p50(asgi) >= 0.010, "{tag}: {asgi}");
    let whole = stats(&r, "given whole");
    assert!((p50(whole) - 0.030).abs() < 0.001, "{tag}: {whole}");
    // CPU time of each marker: its thread's, so the slow requests used >= 12 ms each.
    let cpu_each = slow["cpu_s"].as_f64().unwrap() / slow["count"].as_f64().unwrap();
    assert!(cpu_each >= 0.012, "{tag}: slow CPU each {cpu_each}");
    // Requests ran on the server thread, not the main one; markers are placed on the
    // CPU-time axis in order.
    let markers = r["markers"].as_array().unwrap();
    let pid = r["processes"][0]["pid"].as_u64().unwrap();
    let requests: Vec<&Value> = markers
        .iter()
        .filter(|m| {
            let n = m["name"].as_str().unwrap();
            n.starts_with("GET /fast") || n.starts_with("GET /slow")
        })
        .collect();
    assert!(
        requests.iter().all(|m| m["tid"].as_u64() != Some(pid)),
        "{tag}"
    );
    let xs: Vec<f64> = requests
        .iter()
        .map(|m| m["timeline_s"].as_f64().unwrap())
        .collect();
    assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{tag}: {xs:?}");
    assert!(
        xs.last().unwrap() > &0.1,
        "{tag}: the last request at {xs:?}"
    );
    out
}

fn api_weight(v: &Value) -> u64 {
    v["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total in {v}"))
}

/// The server's /markers table and the marker filter on the CPython profile: the slow
/// requests' samples are the server thread's `burn`, the client (main thread) is outside.
fn check_api(profile: &Path) {
    let server = prof_e2e::browser::Server::start(&prof_e2e::bins().prof);
    let id = server.upload(profile, "markers");
    let t = server.json(&format!("/api/v1/profiles/{id}/markers"));
    let names: Vec<&str> = t["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let count = |name: &str| {
        let i = names.iter().position(|n| *n == name).unwrap() as u64;
        t["name"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.as_u64() == Some(i))
            .count()
    };
    assert_eq!(count("GET /slow/{id}"), 10, "{t}");
    assert_eq!(count("GET /fast/{id}/item"), 30, "{t}");
    let q = |marker: &str| {
        let m = marker
            .replace(' ', "%20")
            .replace('{', "%7B")
            .replace('}', "%7D");
        server.json(&format!(
            "/api/v1/profiles/{id}/functions?native=hide&limit=50&marker={m}"
        ))
    };
    let slow = q("GET /slow/{id}");
    let fast = q("GET /fast/{id}/item");
    // 10 x 12 ms against 30 x 2 ms of CPU burnt inside the markers.
    assert!(
        api_weight(&slow) > api_weight(&fast),
        "slow {} fast {}",
        api_weight(&slow),
        api_weight(&fast)
    );
    assert!(
        api_weight(&slow) >= 60,
        "slow requests: {} samples",
        api_weight(&slow)
    );
    let all = server.json(&format!(
        "/api/v1/profiles/{id}/functions?native=hide&limit=50"
    ));
    assert!(
        api_weight(&slow) < api_weight(&all) / 2,
        "the filter keeps only the marked samples"
    );
    let fnames: Vec<&str> = slow["functions"]["name"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // Inside the slow requests the CPU went to `burn` (and the CPU-clock reads it makes).
    let burn = fnames
        .iter()
        .position(|f| *f == "burn")
        .expect("burn in the slow requests");
    let burn_total = slow["total_weight"][burn].as_u64().unwrap();
    assert!(
        burn_total * 10 >= api_weight(&slow) * 8,
        "burn {burn_total} of {}",
        api_weight(&slow)
    );
    assert!(
        !fnames.iter().any(|f| f.contains("urlopen")),
        "the client thread is outside: {fnames:?}"
    );
    // Selections by duration and by place on the axis; unknown names are a 400.
    let long = server.json(&format!("/api/v1/profiles/{id}/markers?marker_min=0.012"));
    assert!(long["name"].as_array().unwrap().len() >= 10, "{long}");
    let early = server.json(&format!("/api/v1/profiles/{id}/markers?marker_to=0.000001"));
    assert!(early["name"].as_array().unwrap().len() < t["name"].as_array().unwrap().len());
    let bad = ureq::get(&format!(
        "{}/api/v1/profiles/{id}/tree?marker=nope",
        server.url
    ))
    .call();
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))), "{bad:?}");
}

#[test]
fn markers_round_trip_on_cpython_and_pypy() {
    let mut first = None;
    for python in interpreters() {
        let out = check(&python);
        first.get_or_insert(out);
    }
    check_api(&first.unwrap());
}

#[test]
fn markers_cost_nothing_and_do_nothing_without_prof() {
    // The same module, run without prof: every call is a no-op.
    let dir = out_dir("standalone");
    std::fs::create_dir_all(&dir).unwrap();
    let o = run_captured(
        std::process::Command::new(&interpreters()[0])
            .arg("-c")
            .arg("import prof_markers as m\nwith m.mark('x'): pass\nm.begin('y'); m.end(); print(m.enabled())")
            .env("PYTHONPATH", prof_e2e::python_markers_dir()),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "False");
}

fn launched(name: &str, cmd: &[&OsStr]) -> Value {
    let out = out_dir(&format!("{name}.data"));
    let o = run_captured(&mut prof_run(&[], &out, cmd), TIMEOUT);
    assert!(o.status.success(), "{name}: {}\n{}", o.status, o.stderr);
    report_json(&out)
}

#[test]
fn launchers_fold_into_the_program() {
    let shim = pyenv_root().join("shims/python3");
    assert!(
        shim.exists(),
        "{} is missing: this test runs pyenv's shim (install pyenv with CPython 3.11.7)",
        shim.display()
    );
    let script = fixture("py_loop.py");
    let s = script.to_str().unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("shim", vec![shim.to_string_lossy().into_owned(), s.into()]),
        (
            "env",
            vec!["/usr/bin/env".into(), "python3.11".into(), s.into()],
        ),
        (
            "sh-c",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{} {s}", shim.display()),
            ],
        ),
    ];
    for (name, argv) in cases {
        let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let r = launched(name, &argv);
        let procs = r["processes"].as_array().unwrap();
        assert_eq!(procs.len(), 1, "{name}: {procs:#?}");
        let cmd = procs[0]["command"].as_str().unwrap();
        assert!(
            cmd.contains("python3") && cmd.ends_with("py_loop.py") && !cmd.contains("shims"),
            "{name}: the profile is named {cmd:?}"
        );
        assert!(procs[0]["ended"].as_bool().unwrap(), "{name}");
        let notes = r["notices"].to_string();
        assert!(
            notes.contains("folded away the launcher"),
            "{name}: {notes}"
        );
    }
}

#[test]
fn node_markers_through_the_marker_file() {
    let out = out_dir("node.data");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[OsStr::new("node"), fixture("node_markers.js").as_os_str()],
        ),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}\n{}", o.status, o.stderr);
    let r = report_json(&out);
    let slow = stats(&r, "slow");
    let fast = stats(&r, "fast");
    assert_eq!(
        (slow["count"].as_u64(), fast["count"].as_u64()),
        (Some(10), Some(40))
    );
    // 2e6 square roots take longer than 2e5 (10x the work).
    assert!(slow["p50_s"].as_f64() > fast["p50_s"].as_f64(), "{r:#}");
    let pid = r["processes"][0]["pid"].as_u64().unwrap();
    assert!(r["markers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["pid"].as_u64() == Some(pid)
            && m["start_s"].as_f64().unwrap() >= 0.0
            && m["start_s"].as_f64().unwrap() < r["duration_s"].as_f64().unwrap()));
}

#[test]
fn the_text_summary_of_a_python_program_lists_its_functions() {
    let python = &interpreters()[0];
    let script = fixture("py_loop.py");
    let out = out_dir("summary.data");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[python.as_os_str(), script.as_os_str(), OsStr::new("0.5")],
        ),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    let source = std::fs::read_to_string(&script).unwrap();
    let def_line = |f: &str| {
        1 + source
            .lines()
            .position(|l| l.starts_with(&format!("def {f}(")))
            .unwrap_or_else(|| panic!("no def {f} in the fixture"))
    };
    let by_total = o
        .stderr
        .split("functions by total")
        .nth(1)
        .unwrap_or_else(|| panic!("no top-by-total table in:\n{}", o.stderr));
    let rows: Vec<&str> = by_total.lines().skip(2).take(4).collect();
    // The program's functions, outermost first, at their def lines; no start-up chain.
    assert!(rows[0].contains("<module> (py_loop.py:1)"), "{rows:#?}");
    assert!(rows[1].contains("outer_loop"), "{rows:#?}");
    for f in ["outer_loop", "inner"] {
        let want = format!("{f} (py_loop.py:{})", def_line(f));
        assert!(
            rows.iter().any(|r| r.contains(&want)),
            "{want} not in {rows:#?}"
        );
    }
    assert!(
        !by_total.contains("_start") && !by_total.contains("Py_BytesMain"),
        "{by_total}"
    );
    assert!(o.stderr.contains("code-only view"), "{}", o.stderr);
    // The hot line is named as such, beside the def line.
    assert!(by_total.contains(", hot line "), "{by_total}");
}

#[test]
fn web_errors_say_the_cause_first_and_advice_that_works() {
    let out = out_dir("unreachable.data");
    let o = run_captured(
        &mut prof_run(&["--web=http://127.0.0.1:9"], &out, &[OsStr::new("true")]),
        TIMEOUT,
    );
    assert!(!o.status.success());
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("127.0.0.1:9"))
        .unwrap_or_else(|| panic!("{}", o.stderr));
    let cause = line.find("connection refused").expect(line);
    let advice = line
        .find(&format!(
            "prof upload {} --server http://127.0.0.1:9",
            out.display()
        ))
        .expect(line);
    assert!(cause < advice, "{line}");
    assert!(out.exists(), "the profile is kept");
}

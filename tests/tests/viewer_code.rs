//! [issue 13] The code-only view, per-line costs with source, and the comparison of two
//! profiles: real CPython (Debian's python3.11) and PyPy (Debian's pypy3) profiles made by
//! `prof run`, served by the real `prof serve`, checked through the API (`native=hide`,
//! `/lines`, `/diff`), the CLI (`prof report A --diff B`) and headless Chromium (the
//! code-only tree starts at `<module>`, the source panel, the compare page). Screenshots
//! are saved in target/<profile>/viewer-artifacts/code-only/.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prof_e2e::browser::{Browser, Server};
use prof_e2e::vmprof::require;
use prof_e2e::{bins, prof, prof_run, run_captured, Value, TIMEOUT};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const READY: &str = "document.body.dataset.state === 'ready'";
const PYTHON: &str = "/usr/bin/python3.11";

fn fixture_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn record(dir: &Path, name: &str, opts: &[&str], cmd: &[&OsStr]) -> PathBuf {
    let out = dir.join(name);
    let o = run_captured(&mut prof_run(opts, &out, cmd), TIMEOUT);
    assert_eq!(o.code(), Some(0), "prof run {cmd:?} failed: {}", o.stderr);
    out
}

/// GET that must fail with `status`.
fn status_of(url: &str) -> u16 {
    match ureq::get(url).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Depth-1 children of a tree answer: (name, module, total), heaviest first.
fn top_level(tree: &Value) -> Vec<(String, String, u64)> {
    let n = &tree["nodes"];
    let f = &tree["functions"];
    let mut out: Vec<(String, String, u64)> = n["parent"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.as_i64() == Some(0))
        .map(|(i, _)| {
            let fi = n["func"][i].as_u64().unwrap() as usize;
            (
                f["name"][fi].as_str().unwrap().to_string(),
                f["module"][fi].as_str().unwrap().to_string(),
                n["total"][i].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.2));
    out
}

fn names(tree: &Value) -> Vec<String> {
    let f = &tree["functions"];
    tree["nodes"]["func"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            f["name"][x.as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn wait_ready(b: &Browser) {
    b.wait_for(READY, WAIT);
}

/// (x, y, w, h) of the widest drawn frame of `name` in the main graph, or None.
fn frame_box(b: &Browser, name: &str) -> Option<(f64, f64, f64, f64)> {
    let v = b.js(
        "return window.profViewer.frameBox(arguments[0]);",
        json!([name]),
    );
    v.is_object().then(|| {
        let f = |k: &str| v[k].as_f64().unwrap();
        (f("x"), f("y"), f("w"), f("h"))
    })
}

/// The code-only tree of the viewer starts at `<module>`: its frame is right under `all`,
/// and no `names_gone` frame is drawn.
fn assert_starts_at_module(b: &Browser, names_gone: &[&str], what: &str) {
    let checked = b.js(
        "return document.getElementById('code-only').checked;",
        json!([]),
    );
    assert_eq!(checked, json!(true), "{what}: code-only is on by default");
    let (_, all_y, _, _) = frame_box(b, "all").expect("the root is drawn");
    let (_, y, w, _) = frame_box(b, "<module>").unwrap_or_else(|| {
        panic!(
            "{what}: no <module> frame (screenshot {})",
            b.screenshot("no-module").display()
        )
    });
    assert!(
        (y - all_y - 18.0).abs() < 1.0,
        "{what}: <module> is on the row under all (y {y} vs {all_y})"
    );
    assert!(w > 300.0, "{what}: <module> is wide: {w}");
    for n in names_gone {
        assert!(
            frame_box(b, n).is_none(),
            "{what}: {n} is drawn in the code-only view"
        );
    }
}

#[test]
fn code_only_lines_and_compare_on_cpython_and_pypy() {
    require(PYTHON, &["--version"], "apt-get install -y python3");
    require("pypy3", &["--version"], "apt-get install -y pypy3");
    let dir = tempfile::tempdir().unwrap();
    let script = fixture_file("py_calls.py");
    let py = OsStr::new(PYTHON);
    let a = record(
        dir.path(),
        "a.data",
        &["--rate", "1999"],
        &[py, script.as_os_str(), OsStr::new("0.6")],
    );
    let base = record(
        dir.path(),
        "base.data",
        &["--rate", "1999", "--no-source"],
        &[py, script.as_os_str(), OsStr::new("0.3")],
    );
    let pypy_script = fixture_file("pypy_app.py");
    let pypy = record(
        dir.path(),
        "pypy.data",
        &[],
        &[
            OsStr::new("pypy3"),
            pypy_script.as_os_str(),
            OsStr::new("0.5"),
        ],
    );
    let server = Server::start(&bins().prof);
    let id = server.upload(&a, "cpython");
    let base_id = server.upload(&base, "cpython base");
    let pypy_id = server.upload(&pypy, "pypy");
    let api = |id: &str, rest: &str| format!("/api/v1/profiles/{id}{rest}");

    // --- API: native=hide ---------------------------------------------------------------
    for (pid, script_module, gone) in [
        (
            &id,
            "py_calls.py",
            &["_start", "Py_RunMain", "_PyEval_EvalFrameDefault"][..],
        ),
        (
            &pypy_id,
            "pypy_app.py",
            &["entry_point", "run_toplevel", "pypy_main_startup"][..],
        ),
    ] {
        let meta = server.json(&api(pid, ""));
        assert_eq!(meta["mostly_program_code"], json!(true), "{script_module}");
        let tree = server.json(&api(pid, "/tree?native=hide"));
        let top = top_level(&tree);
        assert_eq!(
            (top[0].0.as_str(), top[0].1.as_str()),
            ("<module>", script_module),
            "the code-only tree starts at the script's <module>: {top:?}"
        );
        let all = names(&tree);
        for g in gone {
            assert!(
                !all.iter().any(|n| n == g),
                "{g} in the code-only tree of {script_module}"
            );
        }
        // The same samples: code-only folds frames, never drops samples.
        let plain = server.json(&api(pid, "/tree"));
        assert_eq!(tree["total"], plain["total"]);
        let tl = server.json(&api(pid, "/timeline?native=hide&buckets=10"));
        let tl_sum: u64 = tl["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(json!(tl_sum), plain["total"]);
    }
    let plain = server.json(&api(&id, "/tree"));
    assert!(
        names(&plain).iter().any(|n| n == "_start"),
        "the plain view has the native entry frames"
    );
    // The self sort of the code-only table puts the program's function first.
    let fns = server.json(&api(&id, "/functions?native=hide&limit=5"));
    assert_eq!(fns["functions"]["name"][0], json!("work"), "{fns}");
    assert_eq!(fns["functions"]["module"][0], json!("py_calls.py"));
    assert_eq!(
        status_of(&format!("{}{}", server.url, api(&id, "/tree?native=maybe"))),
        400
    );

    // --- API: lines -------------------------------------------------------------------
    let work_file = fns["functions"]["file"][0].as_str().unwrap().to_string();
    let work_line = fns["functions"]["line"][0].as_u64().unwrap();
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (c as char).to_string()
                }
                _ => format!("%{c:02X}"),
            })
            .collect()
    };
    let lines = server.json(&api(&id, &format!("/lines?file={}", enc(&work_file))));
    assert_eq!(lines["file"], json!(work_file));
    let source = lines["source"]
        .as_array()
        .expect("prof run stored the script");
    let text = std::fs::read_to_string(&script).unwrap();
    assert_eq!(source.len(), text.lines().count());
    // (The function table's line is the first sampled line of work, not its def.)
    let def_line = text
        .lines()
        .position(|l| l.starts_with("def work"))
        .unwrap() as u64
        + 1;
    assert_eq!(source[def_line as usize - 1], json!("def work(n):"));
    assert!((def_line..def_line + 5).contains(&work_line));
    let costs = lines["lines"].as_object().unwrap();
    let self_sum: u64 = costs.values().map(|c| c["self"].as_u64().unwrap()).sum();
    let (hot_line, hot) = costs
        .iter()
        .max_by_key(|(_, c)| c["self"].as_u64().unwrap())
        .unwrap();
    assert!(
        self_sum > 0 && self_sum <= lines["total"].as_u64().unwrap(),
        "{lines}"
    );
    let hot_line: u64 = hot_line.parse().unwrap();
    assert!(
        (def_line..def_line + 5).contains(&hot_line),
        "the hottest line is in work's loop: line {hot_line} {hot}"
    );
    // Without a stored copy (--no-source): the costs, no text.
    let nosrc = server.json(&api(&base_id, &format!("/lines?file={}", enc(&work_file))));
    assert_eq!(nosrc["source"], Value::Null, "--no-source stores no text");
    assert!(!nosrc["lines"].as_object().unwrap().is_empty());
    assert_eq!(
        status_of(&format!("{}{}", server.url, api(&id, "/lines"))),
        400
    );
    assert_eq!(
        status_of(&format!(
            "{}{}",
            server.url,
            api(&id, "/lines?file=%2Fetc%2Fpasswd")
        )),
        404,
        "nothing of /etc/passwd is in a profile"
    );

    // --- API and CLI: diff ------------------------------------------------------------
    let diff = server.json(&api(&id, &format!("/diff?base={base_id}&native=hide")));
    assert!(diff["total"].as_u64().unwrap() > diff["base_total"].as_u64().unwrap());
    assert_eq!(diff["nodes"]["share"][0], json!(1.0));
    assert_eq!(diff["nodes"]["base_share"][0], json!(1.0));
    assert!(diff["nodes"]["base_total"].as_array().unwrap().len() > 3);
    let changes = diff["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["name"] == "work"), "{diff}");
    assert_eq!(
        status_of(&format!("{}{}", server.url, api(&id, "/diff"))),
        400
    );
    assert_eq!(
        status_of(&format!(
            "{}{}",
            server.url,
            api(&id, "/diff?base=ffffffffffffffff")
        )),
        404
    );
    let o = run_captured(
        prof()
            .args(["report", "--format", "json", "--diff"])
            .arg(&base)
            .arg(&a),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    let d: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(d["native"], json!("hide"));
    let work = d["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "work")
        .expect("work in the diff");
    let delta = work["delta_self"].as_f64().unwrap();
    assert!(
        (delta - (work["self"].as_f64().unwrap() - work["base_self"].as_f64().unwrap())).abs()
            < 1e-9
    );
    let o = run_captured(
        prof().args(["report", "--diff"]).arg(&base).arg(&a),
        TIMEOUT,
    );
    assert!(
        o.status.success() && o.stdout.contains("Δself") && o.stdout.contains("work"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // --- the browser ------------------------------------------------------------------
    let artifacts = bins().dir.join("viewer-artifacts").join("code-only");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let b = Browser::start(&artifacts, 1400, 900);
    b.goto(&format!("{}/p/{id}", server.url));
    wait_ready(&b);
    assert_starts_at_module(
        &b,
        &["_start", "Py_RunMain", "_PyEval_EvalFrameDefault"],
        "CPython",
    );
    let shot = b.screenshot("01-cpython-code-only");
    eprintln!("CPython code-only: {}", shot.display());
    let first = b.js(
        "return document.querySelector('#functions tbody tr').dataset.name;",
        json!([]),
    );
    assert_eq!(first, json!("work"), "the code-only table leads with work");

    // The source panel from the table row.
    b.click("#functions tr[data-name=\"work\"] button.src");
    b.wait_for(
        "!document.getElementById('source').hidden && document.querySelectorAll('#source-lines tbody tr').length > 0",
        WAIT,
    );
    assert!(b
        .js(
            "return document.getElementById('source-file').textContent;",
            json!([])
        )
        .as_str()
        .unwrap()
        .ends_with("py_calls.py"));
    let bar = b.js(
        "const r = document.querySelector(`#source-lines tr[data-line=\"${arguments[0]}\"]`); return r ? [r.querySelector('pre').textContent, r.querySelector('.linebar.self').getBoundingClientRect().width] : null;",
        json!([hot_line]),
    );
    assert!(
        bar[1].as_f64().unwrap() >= 59.0,
        "the hottest line has the longest self bar: {bar}"
    );
    assert_eq!(
        bar[0].as_str().unwrap(),
        text.lines().nth(hot_line as usize - 1).unwrap(),
        "the line's text"
    );
    b.screenshot("02-source-panel");
    b.keys("\u{E00C}");
    b.wait_for("document.getElementById('source').hidden", WAIT);

    // Code-only off: the native entry frames are back.
    b.click("#code-only");
    wait_ready(&b);
    assert!(b.current_url().contains("native=show"));
    assert!(
        frame_box(&b, "_start").is_some(),
        "every frame with code-only off"
    );
    b.screenshot("03-cpython-every-frame");

    // PyPy.
    b.goto(&format!("{}/p/{pypy_id}", server.url));
    wait_ready(&b);
    assert_starts_at_module(&b, &["entry_point", "run_toplevel"], "PyPy");
    b.screenshot("04-pypy-code-only");

    // The compare page.
    b.goto(&format!("{}/compare/{base_id}/{id}", server.url));
    wait_ready(&b);
    let v = b.js(
        "return window.profViewer ? null : [document.querySelectorAll('#changes tbody tr').length, document.getElementById('base-link').getAttribute('href'), document.getElementById('profile-link').getAttribute('href'), document.getElementById('code-only').checked];",
        json!([]),
    );
    assert_eq!(
        v,
        json!([
            changes.len().min(100),
            format!("/p/{base_id}"),
            format!("/p/{id}"),
            true
        ]),
        "compare page"
    );
    let painted = b.js(
        "const c = document.getElementById('flame'); const d = c.getContext('2d').getImageData(0, 0, c.width, Math.min(c.height, 400)).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i+1] || d[i+1] !== d[i+2]) n++; return n;",
        json!([]),
    );
    assert!(
        painted.as_u64().unwrap() > 1000,
        "the differential flamegraph has coloured frames: {painted}"
    );
    let shot = b.screenshot("05-compare");
    // The tier filter applies to both profiles.
    b.click("button.tier[data-tier=kernel]");
    wait_ready(&b);
    assert!(b.current_url().contains("tier=kernel"));
    let kernel_diff = server.json(&api(
        &id,
        &format!("/diff?base={base_id}&native=hide&tier=kernel"),
    ));
    assert!(kernel_diff["total"].as_u64().unwrap() < diff["total"].as_u64().unwrap());
    eprintln!("compare page: {}", shot.display());
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

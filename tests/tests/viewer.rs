//! The web viewer in a real headless Chromium (Debian's chromium + chromium-driver),
//! against the real `prof serve` holding a real profile that `prof run` made of the C
//! fixture tests/fixtures/viewer.c (interpreter, warmup, JIT, GC and native phases, and a
//! function named `<img src=x onerror=alert(1)>`). Screenshots of every step are saved in
//! target/<profile>/viewer-artifacts/.

use std::path::PathBuf;
use std::time::Duration;

use prof_e2e::browser::{Browser, Server};
use prof_e2e::{bins, gcc, prof_run, report_json, run_captured, total_of, Value, TIMEOUT};
use serde_json::json;

const XSS: &str = "<img src=x onerror=alert(1)>";
const WAIT: Duration = Duration::from_secs(30);
const READY: &str = "document.body.dataset.state === 'ready'";

struct Setup {
    server: Server,
    id: String,
    report: Value,
    artifacts: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(name: &str) -> Setup {
    setup_with(name, None)
}

/// A profile of the fixture on a fresh server (with `--token TOKEN` if given).
fn setup_with(name: &str, token: Option<&str>) -> Setup {
    let exe = gcc(
        "viewer",
        &[],
        &[
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-Wall",
        ],
        "viewer",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("viewer.data");
    let o = run_captured(&mut prof_run(&["-q"], &data, &[exe.as_os_str()]), TIMEOUT);
    assert!(o.status.success(), "prof run failed: {}", o.stderr);
    let report = report_json(&data);
    let server = match token {
        Some(t) => Server::start_with(&bins().prof, &["--token", t]),
        None => Server::start(&bins().prof),
    };
    let id = server.upload_with_token(&data, "viewer fixture", token);
    let artifacts = bins().dir.join("viewer-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    Setup {
        server,
        id,
        report,
        artifacts,
        _dir: dir,
    }
}

/// Opens a browser on which every `alert`/`confirm`/`prompt` call is counted in
/// `window.__dialogs` (installed before any page script runs).
fn browser(artifacts: &std::path::Path) -> Browser {
    let b = Browser::start(artifacts, 1400, 1000);
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__dialogs = 0; for (const f of ['alert','confirm','prompt']) { window[f] = () => { window.__dialogs++; return false; }; }"}),
    );
    b
}

fn assert_no_console_errors(b: &Browser, when: &str) {
    let errors = b.console_errors();
    assert!(
        errors.is_empty(),
        "console errors {when}: {errors:#?} (screenshot {})",
        b.screenshot(&format!("console-errors-{}", when.replace(' ', "-")))
            .display()
    );
}

fn wait_ready(b: &Browser) {
    b.wait_for(READY, WAIT);
}

/// The viewport box of the widest drawn frame of `name`: (x, y, w, h).
fn frame_box(b: &Browser, name: &str) -> (f64, f64, f64, f64) {
    let v = b.js(
        "return window.profViewer.frameBox(arguments[0]);",
        json!([name]),
    );
    assert!(
        v.is_object(),
        "no frame of {name} is drawn (screenshot {})",
        b.screenshot("missing-frame").display()
    );
    let f = |k: &str| v[k].as_f64().unwrap();
    (f("x"), f("y"), f("w"), f("h"))
}

/// The RGB of the flamegraph canvas at viewport point (x, y).
fn pixel(b: &Browser, x: f64, y: f64) -> [u8; 3] {
    let v = b.js(
        "const c = document.getElementById('flame'); const r = c.getBoundingClientRect();
         const k = c.width / r.width;
         const d = c.getContext('2d').getImageData(Math.floor((arguments[0] - r.left) * k), Math.floor((arguments[1] - r.top) * k), 1, 1).data;
         return [d[0], d[1], d[2]];",
        json!([x, y]),
    );
    let a = v.as_array().unwrap();
    [0, 1, 2].map(|i| a[i].as_u64().unwrap() as u8)
}

fn text(b: &Browser, css: &str) -> String {
    b.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        json!([css]),
    )
    .as_str()
    .unwrap_or_else(|| panic!("no element {css}"))
    .to_string()
}

fn crumbs(b: &Browser) -> Vec<String> {
    b.js(
        "return [...document.querySelectorAll('#breadcrumbs .crumb')].map(e => e.textContent);",
        json!([]),
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap().to_string())
    .collect()
}

fn matched_pct(b: &Browser) -> f64 {
    b.wait_for(
        "document.getElementById('matched').dataset.pct !== undefined",
        WAIT,
    );
    b.js(
        "return Number(document.getElementById('matched').dataset.pct);",
        json!([]),
    )
    .as_f64()
    .unwrap()
}

fn painted(b: &Browser, which: &str) -> (u64, u64) {
    let v = b.js(
        "return window.profViewer.paintedPixels(arguments[0]);",
        json!([which]),
    );
    (v["painted"].as_u64().unwrap(), v["of"].as_u64().unwrap())
}

fn selected_total(b: &Browser) -> u64 {
    b.js(
        "return Number(document.getElementById('totals').dataset.total);",
        json!([]),
    )
    .as_u64()
    .unwrap()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

#[test]
fn viewer_in_headless_chromium() {
    let s = setup("viewer");
    let weight = s.report["weight"].as_f64().unwrap();
    assert!(weight > 300.0, "too few samples: {}", s.report);
    let b = browser(&s.artifacts);
    let page = format!("{}/p/{}", s.server.url, s.id);

    // --- loads with no console errors; the flamegraph and the timeline are drawn --------
    b.goto(&page);
    wait_ready(&b);
    let (p, of) = painted(&b, "flame");
    assert!(
        p > of / 20 && p < of,
        "the flamegraph canvas looks blank: {p} of {of} pixels differ from the background"
    );
    let (p, of) = painted(&b, "timeline");
    assert!(p > of / 10, "the timeline looks blank: {p} of {of} pixels");
    assert_eq!(selected_total(&b) as f64, weight);
    b.screenshot("01-loaded");
    assert_no_console_errors(&b, "on load");

    // --- the first screen: the icicle's root and widest frames at its top, the canvas as
    // tall as the rows it draws, the legend beside the graph ----------------------------
    let (_, all_y, all_w, _) = frame_box(&b, "all");
    let screen = b.js(
        "const c = document.getElementById('flame').parentElement.getBoundingClientRect(); const l = document.getElementById('legend').getBoundingClientRect(); return {vh: innerHeight, scrollY: scrollY, top: c.top, bottom: c.bottom, right: c.right, w: c.width, lTop: l.top, lLeft: l.left, rows: window.profViewer.rows(), state: window.profViewer.state().view};",
        json!([]),
    );
    let f = |k: &str| screen[k].as_f64().unwrap();
    assert_eq!(screen["state"], json!("icicle"), "icicle by default");
    assert_eq!(f("scrollY"), 0.0);
    assert!(
        all_y < f("vh") / 2.0 && (all_w - f("w")).abs() < 1.0,
        "the root spans the graph in the top half of the first screen: {screen} all at y={all_y}"
    );
    assert!(
        f("lTop") < f("vh") && f("lLeft") >= f("right") - 1.0,
        "the legend is beside the graph, on the first screen: {screen}"
    );
    assert!(
        (f("bottom") - f("top") - f("rows") * 18.0).abs() < 1.0,
        "the graph is as tall as its visible rows: {screen}"
    );
    // The first screen is mostly frames: painted pixels of the canvas's visible part.
    let covered = b.js(
        "const c = document.getElementById('flame'); const r = c.parentElement.getBoundingClientRect(); const k = c.width / r.width; const h = Math.min(r.bottom, innerHeight) - r.top; const d = c.getContext('2d').getImageData(0, 0, c.width, Math.floor(h * k)).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] !== 255 || d[i+1] !== 255 || d[i+2] !== 255) n++; return n / (d.length / 4);",
        json!([]),
    );
    assert!(
        covered.as_f64().unwrap() > 0.25,
        "frames cover the visible part of the graph: {covered}"
    );
    let shot = b.screenshot("00-first-screen");
    eprintln!("first screen: {}", shot.display());

    // --- exports on the page: every format, each link answers ------------------------
    let links = b.js(
        "return [...document.querySelectorAll('#exports a')].map(a => [a.dataset.format, a.getAttribute('href')]);",
        json!([]),
    );
    let links = links.as_array().unwrap();
    let formats: Vec<&str> = links.iter().map(|l| l[0].as_str().unwrap()).collect();
    assert_eq!(
        formats,
        [
            "raw",
            "speedscope",
            "pprof",
            "firefox",
            "svg",
            "html",
            "collapsed"
        ]
    );
    for l in links {
        let href = l[1].as_str().unwrap();
        let r = ureq::get(&format!("{}{href}", s.server.url))
            .call()
            .unwrap_or_else(|e| panic!("export link {href}: {e}"));
        assert_eq!(r.status(), 200, "{href}");
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
        assert!(body.len() > 100, "{href}: {} bytes", body.len());
    }

    // --- keyboard: ? help, i invert, c code-only; theme in the URL --------------------
    b.keys("?");
    b.wait_for("!document.getElementById('help').hidden", WAIT);
    assert!(text(&b, "#help").contains("next / previous matching frame"));
    b.screenshot("01b-help");
    b.keys("\u{E00C}");
    b.wait_for("document.getElementById('help').hidden", WAIT);
    b.keys("i");
    wait_ready(&b);
    assert_eq!(
        query_param(&b.current_url(), "invert").as_deref(),
        Some("1")
    );
    b.keys("i");
    wait_ready(&b);
    assert_eq!(query_param(&b.current_url(), "invert"), None);
    let before = b.js("return window.profViewer.nativeMode();", json!([]));
    b.keys("c");
    wait_ready(&b);
    let after = b.js("return window.profViewer.nativeMode();", json!([]));
    assert_ne!(before, after, "c toggles code-only");
    assert_eq!(
        query_param(&b.current_url(), "native").as_deref(),
        after.as_str()
    );
    b.keys("c");
    wait_ready(&b);

    // The tiers of the fixture's phases are all there, in the legend of the filter.
    for t in ["interpreter", "warmup", "jit", "gc", "native"] {
        let share = text(&b, &format!("button.tier[data-tier={t}] .tier-share"));
        assert!(share.trim() != "0%", "tier {t} shows no share: {share}");
    }

    // --- tooltip: name, location, module, self/total, tier split -----------------------
    let (x, y, w, h) = frame_box(&b, "compile_loop");
    b.hover(x + w / 2.0, y + h / 2.0);
    b.wait_for("!document.getElementById('tooltip').hidden", WAIT);
    let tip = text(&b, "#tooltip");
    assert!(tip.contains("compile_loop"), "tooltip: {tip}");
    assert!(tip.contains("viewer.c:"), "tooltip has no file:line: {tip}");
    assert!(
        tip.contains("module: viewer-"),
        "tooltip has no module: {tip}"
    );
    assert!(
        tip.contains("self ") && tip.contains("total "),
        "tooltip: {tip}"
    );
    // All warmup — but for the CPU time the kernel spent on the thread while it ran (the
    // sampling signals' delivery, page faults: kernel-time accounting puts it under a
    // `[kernel]` leaf, more of it on a loaded machine), which the split shows as kernel.
    assert!(tip.contains("warmup "), "tooltip tier split: {tip}");
    for t in ["interpreter", "jit", "native", "gc"] {
        assert!(!tip.contains(t), "tooltip tier split: {tip}");
    }
    let segs = b.js(
        "return document.querySelectorAll('#tooltip .tierbar .seg').length;",
        json!([]),
    );
    let kernel = tip.contains("kernel ");
    assert_eq!(
        segs,
        json!(1 + kernel as u64),
        "compile_loop is warmup (and kernel): one bar segment each"
    );
    b.screenshot("02-tooltip");

    // --- search: substring, highlighted, % matches the JSON report ---------------------
    b.keys("/");
    let active = b.js("return document.activeElement.id;", json!([]));
    assert_eq!(active, json!("search"), "`/` focuses the search box");
    b.keys("hot_loop");
    wait_ready(&b);
    let pct = matched_pct(&b);
    // One frame per JS function whatever tier ran it: the report's `JS:*hot_loop` is the
    // viewer's `JS:hot_loop`.
    let expected = total_of(&s.report, "JS:*hot_loop") * 100.0 / weight;
    assert!(
        (pct - expected).abs() < 0.01,
        "search `hot_loop` matched {pct}%, the report says {expected}%"
    );
    assert!(text(&b, "#matched").contains('%'));
    // Matching frames keep their colour, the others fade.
    let (x, y, w, h) = frame_box(&b, "JS:hot_loop");
    let hot = pixel(&b, x + w / 2.0, y + h / 2.0);
    assert!(
        hot[2] > 150 && hot[0] < 60,
        "JS:hot_loop is JIT code and matched: full JIT blue, got {hot:?}"
    );
    let (x, y, w, h) = frame_box(&b, "_PyEval_EvalFrameDefault");
    let faded = pixel(&b, x + w / 2.0, y + h / 2.0);
    let full = [0xe6u8, 0x9f, 0x00];
    let dist: i32 = (0..3)
        .map(|i| (faded[i] as i32 - full[i] as i32).abs())
        .sum();
    assert!(
        dist > 100,
        "an unmatched interpreter frame is faded, got {faded:?}"
    );
    let match_rows = b.js(
        "return [...document.querySelectorAll('#functions tr.match')].map(r => r.dataset.name);",
        json!([]),
    );
    assert_eq!(match_rows, json!(["JS:hot_loop"]));
    // The search filters the table.
    let rows = b.js(
        "return [...document.querySelectorAll('#functions tbody tr')].map(r => r.dataset.name);",
        json!([]),
    );
    assert_eq!(
        rows,
        json!(["JS:hot_loop"]),
        "the table shows the matches only"
    );
    // n / N walk the matching frames (outside the search box).
    b.js("document.activeElement.blur();", json!([]));
    b.keys("n");
    let cursor = b.js(
        "return document.getElementById('matched').dataset.cursorName;",
        json!([]),
    );
    assert_eq!(cursor, json!("JS:hot_loop"));
    b.screenshot("03-search");

    // Regex search.
    b.click("#regex");
    wait_ready(&b);
    b.js(
        "const s = document.getElementById('search'); s.value = ''; s.focus();",
        json!([]),
    );
    b.keys("^(compile_loop|gc_collect_main)$\u{E007}");
    wait_ready(&b);
    b.wait_for(
        "new URLSearchParams(location.search).get('q') === '^(compile_loop|gc_collect_main)$'",
        WAIT,
    );
    let pct = matched_pct(&b);
    let expected = (total_of(&s.report, "compile_loop") + total_of(&s.report, "gc_collect_main"))
        * 100.0
        / weight;
    assert!(
        (pct - expected).abs() < 0.01,
        "regex search matched {pct}%, the report says {expected}%"
    );
    b.screenshot("04-regex-search");

    // --- click to zoom changes the breadcrumbs; reload restores; back/forward ----------
    assert_eq!(crumbs(&b), vec!["all"]);
    let (x, y, w, h) = frame_box(&b, "run_compiled");
    b.click_at(x + w / 2.0, y + h / 2.0);
    wait_ready(&b);
    let zoomed = crumbs(&b);
    assert_eq!(
        zoomed.last().map(String::as_str),
        Some("run_compiled"),
        "breadcrumbs after zooming: {zoomed:?}"
    );
    assert!(zoomed.len() > 3, "breadcrumbs {zoomed:?}");
    // The zoom is in the URL as short ids, not names.
    let z = query_param(&b.current_url(), "z").unwrap();
    assert!(
        z.split('.').all(|id| id.len() <= 7) && !z.contains("run_compiled"),
        "z={z}"
    );
    // Ancestors collapse into the one-line breadcrumb: not drawn, the zoomed frame on
    // the first row; the counter shows the zoomed share.
    assert_eq!(
        b.js("return window.profViewer.frameBox('main');", json!([])),
        Value::Null,
        "ancestors are not drawn when zoomed"
    );
    let crumb_h = b
        .js(
            "return document.getElementById('breadcrumbs').getBoundingClientRect().height;",
            json!([]),
        )
        .as_f64()
        .unwrap();
    assert!(crumb_h < 40.0, "breadcrumbs on one line: {crumb_h} px");
    let totals = text(&b, "#totals");
    let share = total_of(&s.report, "run_compiled") * 100.0 / weight;
    assert!(
        totals.starts_with("zoomed:") && totals.contains(&format!("{share:.1}%")),
        "counter {totals:?}, run_compiled is {share:.2}%"
    );
    // The zoomed frame spans the whole width.
    let (_, _, w_zoomed, _) = frame_box(&b, "run_compiled");
    let canvas_w = b
        .js(
            "return document.getElementById('flame').getBoundingClientRect().width;",
            json!([]),
        )
        .as_f64()
        .unwrap();
    assert!((w_zoomed - canvas_w).abs() < 1.0);
    b.screenshot("05-zoomed");

    let url_before = b.current_url();
    b.refresh();
    wait_ready(&b);
    assert_eq!(b.current_url(), url_before);
    assert_eq!(crumbs(&b), zoomed, "reload restores the zoom");
    let q = b.js("return document.getElementById('search').value;", json!([]));
    assert_eq!(q, json!("^(compile_loop|gc_collect_main)$"));
    assert_eq!(
        b.js(
            "return document.getElementById('regex').checked;",
            json!([])
        ),
        json!(true)
    );
    assert!((matched_pct(&b) - expected).abs() < 0.01);
    b.screenshot("06-reloaded");
    assert_no_console_errors(&b, "after reload");

    b.back();
    wait_ready(&b);
    assert_eq!(crumbs(&b), vec!["all"], "back undoes the zoom");
    b.forward();
    wait_ready(&b);
    assert_eq!(crumbs(&b), zoomed, "forward redoes it");

    // Esc resets zoom and search.
    b.keys("\u{E00C}");
    wait_ready(&b);
    assert_eq!(crumbs(&b), vec!["all"]);
    assert_eq!(text(&b, "#matched"), "");
    assert!(!b.current_url().contains("q="));

    // --- brushing the timeline filters the flamegraph and the table -------------------
    let total_all = selected_total(&b);
    // The timeline is below the flamegraph: scroll it into view first.
    let timeline_rect = || -> Vec<f64> {
        b.js(
            "const t = document.getElementById('timeline'); t.scrollIntoView({block: 'center'}); const r = t.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];",
            json!([]),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
    };
    let r = timeline_rect();
    // The plot starts 44 px in; drag over its first fifth (the interpreter phase).
    let plot_w = r[2] - 44.0 - 8.0;
    let (x0, x1, y) = (
        r[0] + 44.0 + plot_w * 0.02,
        r[0] + 44.0 + plot_w * 0.2,
        r[1] + r[3] / 2.0,
    );
    b.drag(x0, y, x1, y);
    wait_ready(&b);
    b.wait_for("new URLSearchParams(location.search).has('from')", WAIT);
    let total_range = selected_total(&b);
    assert!(
        total_range > 0 && total_range < total_all,
        "brushing changes the totals: {total_range} of {total_all}"
    );
    let url = b.current_url();
    let (from, to) = (
        query_param(&url, "from").unwrap(),
        query_param(&url, "to").unwrap(),
    );
    let tree = s.server.json(&format!(
        "/api/v1/profiles/{}/tree?from={from}&to={to}&max_nodes=10",
        s.id
    ));
    assert_eq!(tree["total"].as_u64(), Some(total_range));
    // The table follows the range: the interpreter leads it, JIT code is absent.
    let first = b.js(
        "return document.querySelector('#functions tbody tr').dataset.name;",
        json!([]),
    );
    assert_eq!(first, json!("_PyEval_EvalFrameDefault"));
    let has_jit = b.js(
        "return !!document.querySelector('#functions tr[data-name=\"JS:hot_loop\"]');",
        json!([]),
    );
    // The tier chips show the range's shares: no JIT early on.
    assert_eq!(
        text(&b, "button.tier[data-tier=jit] .tier-share").trim(),
        "0%"
    );
    assert_eq!(
        b.js("return window.profViewer.timelineTitle();", json!([])),
        json!("CPU time (s, all selected threads)")
    );
    assert_eq!(has_jit, json!(false), "no JIT code early in the run");
    b.screenshot("07-brushed");
    // A click without a drag clears the range.
    let r = timeline_rect();
    b.click_at((x0 + x1) / 2.0, r[1] + r[3] / 2.0);
    wait_ready(&b);
    b.wait_for("!new URLSearchParams(location.search).has('from')", WAIT);
    assert_eq!(selected_total(&b), total_all);

    // --- the XSS-named function renders as text, and nothing runs ---------------------
    let cell = b.js(
        "return [...document.querySelectorAll('#functions td.fn')].map(e => e.textContent).filter(t => t.includes('onerror'));",
        json!([]),
    );
    assert_eq!(cell, json!([XSS]), "the name is shown verbatim, as text");
    let (x, y, w, h) = frame_box(&b, XSS);
    b.hover(x + w / 2.0, y + h / 2.0);
    b.wait_for("!document.getElementById('tooltip').hidden", WAIT);
    assert_eq!(text(&b, "#tooltip .tt-name"), XSS);
    let injected = b.js(
        "return document.querySelectorAll('img, [onerror]').length;",
        json!([]),
    );
    assert_eq!(injected, json!(0), "no element was made from a name");
    assert_eq!(
        b.js("return window.__dialogs;", json!([])),
        json!(0),
        "no script ran"
    );
    assert_eq!(b.alert_text(), None);
    b.screenshot("08-xss-as-text");

    // --- a table click focuses a function: its frames outlined (scrolled to), callers and
    // callees beside the table -----------------------------------------------------------
    b.click("#functions tr[data-name=\"compile_loop\"]");
    wait_ready(&b);
    assert!(b.current_url().contains("focus=compile_loop"));
    assert!(text(&b, "#focus-bar").contains("compile_loop"));
    let (p, _) = painted(&b, "callers");
    assert!(p > 0, "the callers graph is drawn");
    let (p, _) = painted(&b, "callees");
    assert!(p > 0, "the callees graph is drawn");
    let callers_box = b.js(
        "return window.profViewer.frameBox('warm_up', 'callers') !== null;",
        json!([]),
    );
    assert_eq!(callers_box, json!(true), "warm_up calls compile_loop");
    let totals = b.js("return window.profViewer.sandwichTotals();", json!([]));
    let want = total_of(&s.report, "compile_loop");
    assert_eq!(
        totals,
        json!([want as u64, want as u64]),
        "sandwich of compile_loop"
    );
    assert_eq!(
        selected_total(&b) as f64,
        weight,
        "the flamegraph is not re-rooted"
    );
    let beside = b.js(
        "const t = document.getElementById('functions').getBoundingClientRect(); const s = document.getElementById('sandwich').getBoundingClientRect(); return s.left >= t.right - 1 && s.top < t.bottom;",
        json!([]),
    );
    assert_eq!(beside, json!(true), "the sandwich is beside the table");
    // The focused function's frame was scrolled into view.
    let (_, y, _, h) = frame_box(&b, "compile_loop");
    let vh = b.js("return innerHeight;", json!([])).as_f64().unwrap();
    assert!(
        y >= 0.0 && y + h <= vh,
        "compile_loop's frame in view: y={y}"
    );
    b.screenshot("09-focus-sandwich");

    // --- tier filter, icicle, colour by module, dark mode ------------------------------
    b.click("#clear-focus");
    wait_ready(&b);
    b.click("button.tier[data-tier=jit]");
    wait_ready(&b);
    assert!(b.current_url().contains("tier=jit"));
    assert_eq!(
        selected_total(&b) as f64,
        s.report["tiers"]["jit"].as_f64().unwrap(),
        "only JIT samples"
    );
    b.click("#view-toggle");
    wait_ready(&b);
    assert!(b.current_url().contains("view=flame"));
    b.screenshot("10a-flame-root-at-bottom");
    b.click("#view-toggle");
    wait_ready(&b);
    assert!(!b.current_url().contains("view="));
    b.js(
        "const s = document.getElementById('color'); s.value = 'module'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    wait_ready(&b);
    assert!(b.current_url().contains("color=module"));
    assert!(text(&b, "#legend").contains("viewer-"));
    b.screenshot("10-icicle-jit-modules");
    b.click("button.tier[data-tier=jit]");
    wait_ready(&b);
    b.click("#theme"); // auto -> light
    b.click("#theme"); // light -> dark
    wait_ready(&b);
    let bg = b.js(
        "return getComputedStyle(document.body).backgroundColor;",
        json!([]),
    );
    assert_eq!(bg, json!("rgb(22, 24, 27)"), "dark theme");
    assert_eq!(
        query_param(&b.current_url(), "theme").as_deref(),
        Some("dark"),
        "the theme is in the URL"
    );
    // The flamegraph's background (its top-right corner in icicle mode) is dark too.
    let (_, top, _, _) = frame_box(&b, "all");
    let right = b
        .js(
            "return document.getElementById('flame').getBoundingClientRect().right;",
            json!([]),
        )
        .as_f64()
        .unwrap();
    let px = pixel(&b, right - 2.0, top + 200.0);
    assert!(
        px.iter().all(|&c| c < 60),
        "the flamegraph background is dark: {px:?}"
    );
    b.screenshot("11-dark");
    assert_no_console_errors(&b, "after interactions");

    // --- the profile list ---------------------------------------------------------------
    b.goto(&format!("{}/", s.server.url));
    wait_ready(&b);
    let row = b.js(
        "return [...document.querySelectorAll('table.profiles tbody tr')].map(r => [...r.cells].slice(0, 5).map(c => c.textContent));",
        json!([]),
    );
    let rows = row.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{row}");
    assert_eq!(rows[0][0], json!("viewer fixture"));
    assert!(rows[0][1].as_str().unwrap().contains("viewer-"));
    assert!(
        rows[0][4]
            .as_str()
            .unwrap()
            .replace(',', "")
            .parse::<f64>()
            .unwrap()
            == s.report["samples"].as_f64().unwrap(),
        "the list's samples column: {row}"
    );
    let bars = b.js(
        "return document.querySelectorAll('table.profiles .tierbar .seg').length;",
        json!([]),
    );
    assert!(bars.as_u64().unwrap() >= 4, "tier mini-bar: {bars}");
    b.screenshot("12-list");
    assert_no_console_errors(&b, "on the list page");

    // --- the link vmprof's own client prints (HOST/#/{id}) opens the profile ------------
    b.goto(&format!("{}/#/{}", s.server.url, s.id));
    wait_ready(&b);
    assert_eq!(
        b.current_url(),
        page,
        "vmprof's link is redirected to the viewer"
    );
    eprintln!("viewer screenshots: {}", s.artifacts.display());
}

#[test]
fn pages_carry_a_content_security_policy() {
    let s = setup("csp");
    for path in [
        "/".to_string(),
        format!("/p/{}", s.id),
        "/static/main.js".to_string(),
    ] {
        let r = ureq::get(&format!("{}{path}", s.server.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"))
            .to_string();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .unwrap_or_else(|| panic!("{path}: no script-src in {csp}"));
        assert_eq!(script_src, "script-src 'self'", "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
    // The plain pages stay available without JavaScript.
    let plain = ureq::get(&format!("{}/plain/p/{}", s.server.url, s.id))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(plain.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!plain.contains(XSS));
    // Assets revalidate with their ETag.
    let r = ureq::get(&format!("{}/static/flame.js", s.server.url))
        .call()
        .unwrap();
    let etag = r.header("etag").unwrap().to_string();
    let r = ureq::get(&format!("{}/static/flame.js", s.server.url))
        .set("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(r.status(), 304);
    let missing = ureq::get(&format!("{}/static/nope.js", s.server.url)).call();
    assert!(matches!(missing, Err(ureq::Error::Status(404, _))));
}

#[test]
fn profile_list_deletes_with_a_token() {
    let s = setup_with("list-delete", Some("s3cret-token"));
    let b = browser(&s.artifacts);
    b.goto(&format!("{}/", s.server.url));
    wait_ready(&b);
    let rows = "document.querySelectorAll('table.profiles tbody tr').length";
    assert_eq!(b.js(&format!("return {rows};"), json!([])), json!(1));
    // Without a token there is no delete button at all.
    assert_eq!(
        b.js(
            "return document.querySelectorAll('table.profiles button.danger').length;",
            json!([])
        ),
        json!(0),
        "delete is hidden without a token"
    );
    // With a wrong token the button shows, the server refuses, and the page says so.
    b.type_into("#token", "wrong-token");
    b.click("#token ~ button");
    wait_ready(&b);
    // Confirm the deletion (the dialog hook answers no otherwise).
    b.js("window.confirm = () => true;", json!([]));
    b.click("table.profiles button.danger");
    b.wait_for("!document.getElementById('error').hidden", WAIT);
    assert!(
        text(&b, "#error").contains("token"),
        "{}",
        text(&b, "#error")
    );
    assert_eq!(b.js(&format!("return {rows};"), json!([])), json!(1));
    // With the right one, the profile goes.
    b.js("document.getElementById('token').value = '';", json!([]));
    b.type_into("#token", "s3cret-token");
    b.click("#token ~ button");
    wait_ready(&b);
    b.js("window.confirm = () => true;", json!([]));
    b.click("table.profiles button.danger");
    b.wait_for(&format!("{rows} === 0"), WAIT);
    b.screenshot("deleted");
    let list = s.server.json("/api/v1/profiles");
    assert_eq!(list["total"], json!(0), "{list}");
    let gone = ureq::get(&format!("{}/api/v1/profiles/{}", s.server.url, s.id)).call();
    assert!(matches!(gone, Err(ureq::Error::Status(404, _))));
    // Only the 401/403 of the refused deletion reached the console.
    let errors = b.console_errors();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("401") || e.contains("403")),
        "console errors: {errors:#?}"
    );
}

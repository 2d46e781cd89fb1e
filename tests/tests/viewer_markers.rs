//! [issue 14] Request markers in the viewer, in a real headless Chromium against a real
//! `prof serve`: a profile of tests/fixtures/py_markers.py (40 WSGI requests under wsgiref,
//! 10 slow and 30 fast, on pyenv's CPython 3.11) opens on its warm-up curve and request
//! latencies above the flamegraph; dragging a box around the slow requests narrows the
//! profile to the samples inside them; a name chip keeps one route. Screenshots of every
//! step are saved in target/<profile>/viewer-artifacts/markers/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prof_e2e::browser::{Browser, Server};
use prof_e2e::{bins, prof_run, run_captured, TIMEOUT};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const READY: &str = "document.body.dataset.state === 'ready'";

fn python() -> PathBuf {
    let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
    let p = Path::new(&root).join("versions/3.11.7/bin/python3.11");
    assert!(
        p.exists(),
        "{} is missing: this test needs pyenv's CPython 3.11.7",
        p.display()
    );
    p
}

fn total(b: &Browser) -> u64 {
    b.js(
        "return Number(document.getElementById('totals').dataset.total);",
        json!([]),
    )
    .as_u64()
    .unwrap()
}

fn table_names(b: &Browser) -> Vec<String> {
    let v = b.js(
        "return [...document.querySelectorAll('#functions tbody tr')].slice(0, 8).map(r => r.querySelector('.fn') ? r.querySelector('.fn').textContent : r.textContent);",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn latency_plot_selects_the_slow_requests() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("markers.data");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/py_markers.py");
    let o = run_captured(
        &mut prof_run(&["-q"], &data, &[python().as_os_str(), script.as_os_str()]),
        TIMEOUT,
    );
    assert!(o.status.success(), "prof run failed: {}", o.stderr);
    let server = Server::start(&bins().prof);
    let id = server.upload(&data, "markers fixture");
    let artifacts = bins().dir.join("viewer-artifacts").join("markers");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let b = Browser::start(&artifacts, 1400, 1000);
    b.goto(&format!("{}/p/{id}", server.url));
    b.wait_for(READY, WAIT);
    b.wait_for("window.profViewer.latency() !== null", WAIT);
    b.screenshot("first-screen");

    // The first screen: the curves above the flamegraph, the latency plot drawn in full
    // view, a chip per route.
    let order = b.js(
        "const t = document.getElementById('time-panel').getBoundingClientRect(); const f = document.getElementById('flame-panel').getBoundingClientRect(); return [t.top, f.top, document.getElementById('latency-plot').getBoundingClientRect().bottom];",
        json!([]),
    );
    let (t, f, plot_bottom) = (
        order[0].as_f64().unwrap(),
        order[1].as_f64().unwrap(),
        order[2].as_f64().unwrap(),
    );
    assert!(t < f, "the time panel comes first ({t} vs {f})");
    assert!(
        plot_bottom < 1000.0,
        "the latency plot is on the first screen (bottom {plot_bottom})"
    );
    let painted = b.js(
        "return window.profViewer.paintedPixels('latency');",
        json!([]),
    );
    assert!(
        painted["painted"].as_u64().unwrap() * 50 > painted["of"].as_u64().unwrap(),
        "the latency plot is nearly empty: {painted}"
    );
    let chips = b.js(
        "return [...document.querySelectorAll('#marker-legend button')].map(c => c.textContent);",
        json!([]),
    );
    let chips = chips.to_string();
    for route in ["GET /slow/{id}", "GET /fast/{id}/item", "batch"] {
        assert!(chips.contains(route), "no chip for {route}: {chips}");
    }
    let all = total(&b);

    // Drag a box over the slow half of the latencies (> ~10 ms, a decade and more above
    // the fast requests' 2 ms) across the whole time axis.
    let box_ = b.js("return window.profViewer.latency();", json!([]));
    let (left, top, right, bottom) = (
        box_["left"].as_f64().unwrap(),
        box_["top"].as_f64().unwrap(),
        box_["right"].as_f64().unwrap(),
        box_["bottom"].as_f64().unwrap(),
    );
    // The box: from the top of the plot down to 10 ms on its log axis (asked of the plot).
    let y_cut = b
        .js(
            "const p = window.__latencyPlot; return p ? p.yAt(0.010) + document.getElementById('latency-plot').getBoundingClientRect().top : null;",
            json!([]),
        )
        .as_f64()
        .unwrap_or((top + bottom) / 2.0);
    b.drag(left + 1.0, top + 1.0, right - 1.0, y_cut);
    b.wait_for("new URLSearchParams(location.search).has('mmin')", WAIT);
    b.wait_for(READY, WAIT);
    b.screenshot("slow-requests");
    let mmin: f64 = b
        .js(
            "return Number(new URLSearchParams(location.search).get('mmin'));",
            json!([]),
        )
        .as_f64()
        .unwrap();
    assert!(
        mmin > 0.005 && mmin < 0.013,
        "the box's lower edge is ~10 ms: {mmin}"
    );
    let slow = total(&b);
    assert!(
        slow < all / 2,
        "only the slow requests' samples: {slow} of {all}"
    );
    assert!(slow > 0, "the slow requests have samples");
    let names = table_names(&b);
    assert!(
        names.iter().any(|n| n.contains("burn")),
        "burn leads inside the slow requests: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("urlopen")),
        "the client's thread is outside the requests: {names:?}"
    );
    let sel = b.js(
        "return document.getElementById('marker-selection').textContent;",
        json!([]),
    );
    assert!(sel.as_str().unwrap().contains("long"), "{sel}");

    // A name chip keeps one route; "all requests" clears everything.
    b.click("#clear-markers");
    b.wait_for("!new URLSearchParams(location.search).has('mmin')", WAIT);
    b.wait_for(READY, WAIT);
    assert_eq!(total(&b), all);
    b.js(
        "[...document.querySelectorAll('#marker-legend button')].find(c => c.textContent.includes('batch')).click(); return null;",
        json!([]),
    );
    b.wait_for(
        "new URLSearchParams(location.search).get('marker') === 'batch'",
        WAIT,
    );
    b.wait_for(READY, WAIT);
    b.screenshot("batch-only");
    let batch = total(&b);
    assert!(
        batch > 0 && batch < all / 4,
        "5 batches of 3 ms: {batch} of {all}"
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

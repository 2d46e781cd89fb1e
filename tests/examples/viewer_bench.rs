//! The viewer benchmark (run by bench/viewer.sh): time to first paint and redraw time
//! after a zoom, in headless Chromium, on a call tree of 100,000 nodes.
//!
//! It writes a synthetic profile whose stacks are random walks over a random call graph
//! (4,000 functions in three modules named so that the tier rules see an interpreter, JIT
//! code and native code), serves it with the real `prof serve`, opens the viewer with a
//! node budget of `--nodes` (default 100,000) and reads the viewer's own timings
//! (`window.profViewer.stats`, measured with `performance.now()` in the page):
//!
//! - first paint: from the moment the tree response has fully arrived to the end of the
//!   first draw (JSON parsing, layout and drawing), and to the next animation frame;
//! - redraw after a zoom: from the click on a frame to the end of the redraw, and the
//!   draw alone; zooms alternate with a return to the root (a click on the breadcrumb).
//!
//! `viewer_bench [--nodes N] [--loads N] [--zooms N] [--stacks N]`

use prof_e2e::rng::Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prof_e2e::browser::{Browser, Server};
use prof_format::{
    node_kind, LogWriter, Mode, Module, PendingSample, ProcessEnd, ProcessInfo, TimerSource,
};
use serde_json::{json, Value};

struct Args {
    nodes: u64,
    loads: usize,
    zooms: usize,
    stacks: usize,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 100_000,
        loads: 5,
        zooms: 20,
        stacks: 30_000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let n = v.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (v[i].as_str(), n) {
            ("--nodes", Some(n)) => a.nodes = n,
            ("--loads", Some(n)) => a.loads = n as usize,
            ("--zooms", Some(n)) => a.zooms = n as usize,
            ("--stacks", Some(n)) => a.stacks = n as usize,
            _ => {
                eprintln!("usage: viewer_bench [--nodes N] [--loads N] [--zooms N] [--stacks N]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// A profile with `stacks` distinct stacks (each sampled at least once) over 4,000
/// functions; returns its bytes and the number of stack nodes.
fn synthetic_profile(stacks: usize) -> (Vec<u8>, usize) {
    const FUNCS: u64 = 4000;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let callees: Vec<Vec<u64>> = (0..FUNCS)
        .map(|_| (0..3 + rng.below(6)).map(|_| rng.below(FUNCS)).collect())
        .collect();
    // Three modules: a Python file (interpreter tier), JIT code, a native library. None
    // exists on disk, so frames are named module+0xOFFSET, one name per function.
    let modules = [
        ("/opt/bench/app.py", 0x1000_0000u64),
        ("/opt/bench/[jit]", 0x2000_0000),
        ("/opt/bench/libnative.so", 0x3000_0000),
    ];
    let addr = |f: u64| modules[(f % 3) as usize].1 + 0x1000 + f * 64;
    let mut w = LogWriter::new(Vec::with_capacity(16 << 20));
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    w.process(&ProcessInfo {
        pid: 4242,
        ppid: 1,
        start_unix_ns: start,
        period_ns: 1_000_000,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 1000,
        max_depth: 128,
        exe: "/opt/bench/app".into(),
        argv: vec!["viewer-bench".into()],
        agent_version: "bench".into(),
    });
    for (i, (path, base)) in modules.iter().enumerate() {
        w.module(&Module {
            id: i as u32 + 1,
            path: path.to_string(),
            build_id: Vec::new(),
            bias: 0,
            ranges: vec![(*base, base + 0x1000_0000)],
        });
    }
    w.thread(4242, "main");
    let roots: Vec<u64> = (0..3).map(|_| rng.below(FUNCS)).collect();
    let mut leaves = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut tries = 0;
    while leaves.len() < stacks && tries < stacks * 50 {
        tries += 1;
        let depth = 8 + rng.below(33);
        let mut f = roots[rng.below(3) as usize];
        let mut frames = vec![(node_kind::NATIVE, addr(f))];
        for _ in 1..depth {
            let c = &callees[f as usize];
            f = c[rng.below(c.len() as u64) as usize];
            frames.push((node_kind::NATIVE, addr(f)));
        }
        let leaf = w.stacks.intern(frames);
        if seen.insert(leaf) {
            leaves.push(leaf);
        }
    }
    // Every stack once, then a skewed distribution on top (a few hot stacks).
    let mut samples: Vec<u32> = leaves.clone();
    for _ in 0..leaves.len() * 4 {
        let r = rng.below(leaves.len() as u64) as f64 / leaves.len() as f64;
        samples.push(leaves[(r * r * r * leaves.len() as f64) as usize]);
    }
    for i in (1..samples.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        samples.swap(i, j);
    }
    let mut batch = Vec::new();
    for (k, leaf) in samples.iter().enumerate() {
        batch.push(PendingSample {
            time_ns: k as u64 * 1_000_000,
            leaf: *leaf,
            weight: 1,
            flags: 0,
        });
        if batch.len() == 4096 {
            w.samples(4242, &batch);
            batch.clear();
        }
    }
    w.samples(4242, &batch);
    let n = samples.len() as u64;
    w.end(&ProcessEnd {
        duration_ns: n * 1_000_000,
        cpu_user_ns: n * 1_000_000,
        cpu_system_ns: 0,
        signals: n,
    });
    let nodes = w.stacks.len();
    (w.into_inner().unwrap(), nodes)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::max)
}

fn prof_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/viewer_bench -> target/<profile>/prof
    let dir = exe.parent().unwrap().parent().unwrap();
    let prof = dir.join("prof");
    assert!(
        prof.is_file(),
        "{} is missing: build it first (bench/viewer.sh does)",
        prof.display()
    );
    prof
}

fn wait_ready(b: &Browser) {
    b.wait_for(
        "document.body.dataset.state === 'ready'",
        Duration::from_secs(120),
    );
}

fn main() {
    let a = args();
    let t = Instant::now();
    let (bytes, stack_nodes) = synthetic_profile(a.stacks);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.data");
    std::fs::write(&path, &bytes).unwrap();
    eprintln!(
        "viewer_bench: profile of {} bytes, {stack_nodes} stack nodes ({:.1} s)",
        bytes.len(),
        t.elapsed().as_secs_f64()
    );
    let server = Server::start(&prof_binary());
    let id = server.upload(&path, "viewer bench");
    // Let the server prepare the profile and this tree before the browser asks.
    let tree = server.json(&format!("/api/v1/profiles/{id}/tree?max_nodes={}", a.nodes));
    let nodes_sent = tree["nodes"]["parent"].as_array().map_or(0, Vec::len);
    eprintln!(
        "viewer_bench: the tree has {nodes_sent} nodes ({} folded away)",
        tree["folded_nodes"]
    );
    let artifacts = prof_binary()
        .parent()
        .unwrap()
        .join("viewer-artifacts")
        .join("bench");
    let b = Browser::start(&artifacts, 1400, 1000);
    let url = format!("{}/p/{id}?nodes={}", server.url, a.nodes);

    let mut first_paint = Vec::new();
    let mut first_frame = Vec::new();
    let mut layout = Vec::new();
    let mut draw = Vec::new();
    let mut fetch = Vec::new();
    let mut stats = Value::Null;
    for _ in 0..a.loads {
        b.goto(&url);
        wait_ready(&b);
        b.wait_for(
            "window.profViewer.stats.firstFrameMs !== null",
            Duration::from_secs(30),
        );
        stats = b.js("return window.profViewer.stats;", json!([]));
        let f = |k: &str| stats[k].as_f64().unwrap_or(f64::NAN);
        first_paint.push(f("firstPaintMs"));
        first_frame.push(f("firstFrameMs"));
        layout.push(f("layoutMs"));
        draw.push(f("drawMs"));
        fetch.push(f("fetchMs"));
    }
    b.screenshot("bench-loaded");
    let (boxes, labels) = (stats["boxes"].clone(), stats["labels"].clone());

    // Zooms: click a frame some rows below the root (one wide enough to click), then the
    // root's breadcrumb.
    let mut rng = Rng(7);
    let mut since_click = Vec::new();
    let mut redraw = Vec::new();
    let mut zoom_boxes = Vec::new();
    let mut k = 0;
    let mut misses = 0;
    while k < a.zooms {
        // A point a few rows below the root (the default icicle: root on top), with the
        // graph's top in view.
        let p = b.js(
            "const c = document.getElementById('flame'); c.scrollIntoView({block: 'start'});
             const r = c.getBoundingClientRect();
             const row = 1 + Math.floor(arguments[0] * 4);
             return [r.left + 4 + arguments[1] * (r.width - 8), r.top + row * 18 + 9];",
            json!([
                rng.below(1000) as f64 / 1000.0,
                rng.below(1000) as f64 / 1000.0
            ]),
        );
        let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        let before = b.js("return window.profViewer.stats.redraws.length;", json!([]));
        let crumbs = "document.querySelectorAll('#breadcrumbs .crumb').length";
        b.click_at(x, y);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut zoomed = false;
        while Instant::now() < deadline {
            let n = b.js("return window.profViewer.stats.redraws.length;", json!([]));
            if n.as_u64() > before.as_u64() {
                zoomed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !zoomed {
            // A gap between boxes: try another point.
            misses += 1;
            assert!(misses < 200, "no click hit a frame");
            continue;
        }
        wait_ready(&b);
        if k == 0 {
            b.screenshot("bench-zoomed");
        }
        k += 1;
        // Back to the root through the breadcrumb.
        let before = b.js("return window.profViewer.stats.redraws.length;", json!([]));
        if b.js(&format!("return {crumbs} > 1;"), json!([])) == json!(true) {
            b.click("#breadcrumbs .crumb");
            b.wait_for(
                &format!("window.profViewer.stats.redraws.length > {before}"),
                Duration::from_secs(30),
            );
            wait_ready(&b);
        }
    }
    let redraws = b.js("return window.profViewer.stats.redraws;", json!([]));
    for r in redraws.as_array().unwrap() {
        since_click.push(r["sinceClickMs"].as_f64().unwrap());
        redraw.push(r["drawMs"].as_f64().unwrap());
        zoom_boxes.push(r["boxes"].as_f64().unwrap());
    }
    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    println!(
        "tree: {nodes_sent} nodes sent (budget {}), {} stack nodes in the profile; response {} bytes; {} boxes and {} labels drawn at the root",
        a.nodes, stack_nodes, stats["bytes"], boxes, labels
    );
    println!();
    println!("| measure (ms) | median | max | n |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, v: &mut Vec<f64>| {
        let m = max(v);
        println!("| {name} | {:.1} | {:.1} | {} |", median(v), m, v.len());
    };
    row("fetch (request to last byte, local server)", &mut fetch);
    row(
        "first paint: data arrived → first draw done (parse + layout + draw)",
        &mut first_paint,
    );
    row(
        "first paint: data arrived → next animation frame",
        &mut first_frame,
    );
    row("  of which layout (one pass over the nodes)", &mut layout);
    row("  of which draw", &mut draw);
    row("zoom: click → redraw done", &mut since_click);
    row("zoom: redraw alone", &mut redraw);
    println!();
    println!(
        "boxes drawn per redraw: median {:.0}, max {:.0}; screenshots in {}",
        median(&mut zoom_boxes.clone()),
        max(&zoom_boxes),
        artifacts.display()
    );
}

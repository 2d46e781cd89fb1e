//! The 4-thread C fixture (CPU cost 1:2:3:4) must be attributed within 2 percentage
//! points of its own per-thread CPU times, with the default timer and with the POSIX-timer
//! fallback.

use std::ffi::OsStr;

use prof_e2e::*;

const FLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fno-omit-frame-pointer",
    "-DMIX_FRAME",
    "-pthread",
];
/// Iterations per cost unit: about 3 CPU-seconds in all.
const UNIT: &str = "24000000";
const FUNCS: [&str; 4] = ["work_a", "work_b", "work_c", "work_d"];

/// Parses `GROUND work_a=0.31 work_b=0.62 ...` from the fixture's stderr.
fn ground(stderr: &str) -> Vec<f64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("GROUND "))
        .unwrap_or_else(|| panic!("no GROUND line in the fixture's stderr:\n{stderr}"));
    FUNCS
        .iter()
        .map(|f| {
            let key = format!("{f}=");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("{f} missing from {line}"));
            line[at + key.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn check_accuracy(timer: Option<&str>) -> Value {
    let exe = gcc("c_threads", &[], FLAGS, "c_threads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prof.data");
    let mut cmd = prof_run(
        &["--rate", "999"],
        &out,
        &[exe.as_os_str(), OsStr::new(UNIT)],
    );
    if let Some(t) = timer {
        cmd.env("PROF_TIMER", t);
    }
    let o = run_captured(&mut cmd, TIMEOUT);
    assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
    assert!(
        o.stdout.starts_with("c_threads "),
        "the fixture's stdout is passed through: {:?}",
        o.stdout
    );
    assert!(
        o.stderr.contains("profile written to"),
        "summary missing: {}",
        o.stderr
    );
    let truth = ground(&o.stderr);
    let truth_sum: f64 = truth.iter().sum();

    let rep = report_json(&out);
    let weight = num(&rep, "weight");
    assert!(num(&rep, "samples") > 0.0, "{}", describe(&rep));
    let mut errors = Vec::new();
    for (f, t) in FUNCS.iter().zip(&truth) {
        let share = 100.0 * total_of(&rep, f) / weight;
        let true_share = 100.0 * t / truth_sum;
        errors.push(format!("{f}: {share:.2}% (truth {true_share:.2}%)"));
        assert!(
            (share - true_share).abs() <= 2.0,
            "{f}: profiled share {share:.2}% vs true {true_share:.2}% (timer {timer:?})\n{}\n{}",
            errors.join(", "),
            describe(&rep)
        );
    }
    eprintln!("timer {timer:?}: {}", errors.join(", "));
    rep
}

#[test]
fn c_threads_shares_within_2pp() {
    let rep = check_accuracy(None);
    // Without PROF_TIMER the agent picks the best timer it can arm; the report says which.
    assert!(
        rep["timer"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        describe(&rep)
    );
}

#[test]
fn c_threads_shares_within_2pp_with_posix_timer_fallback() {
    let rep = check_accuracy(Some("posix"));
    let timer = rep["timer"].as_str().unwrap_or("").to_ascii_lowercase();
    assert!(
        timer.contains("posix"),
        "PROF_TIMER=posix should run the POSIX timer, report says {timer:?}"
    );
}

#[test]
fn text_and_collapsed_reports_name_the_hot_functions() {
    let exe = gcc("c_threads", &[], FLAGS, "c_threads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prof.data");
    let o = run_captured(
        &mut prof_run(&[], &out, &[exe.as_os_str(), OsStr::new("3000000")]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);

    let text = run_captured(prof().arg("report").arg(&out), TIMEOUT);
    assert!(text.status.success(), "{}", text.stderr);
    for f in FUNCS {
        assert!(
            text.stdout.contains(f),
            "text report lacks {f}:\n{}",
            text.stdout
        );
    }

    let folded = run_captured(
        prof().args(["report", "--format", "collapsed"]).arg(&out),
        TIMEOUT,
    );
    assert!(folded.status.success(), "{}", folded.stderr);
    let mut total = 0u64;
    for line in folded.stdout.lines() {
        let (stack, n) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad folded line {line:?}"));
        assert!(!stack.is_empty(), "bad folded line {line:?}");
        total += n
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
    }
    assert!(total > 0);
    assert!(
        folded
            .stdout
            .lines()
            .any(|l| l.contains(";work_d;mix ") || l.contains(";work_d ")),
        "no stack through work_d:\n{}",
        folded.stdout
    );

    let top = report_json_top(&out, 2);
    assert!(top["functions"].as_array().unwrap().len() <= 2);
}

fn report_json_top(path: &std::path::Path, n: usize) -> Value {
    let o = run_captured(
        prof()
            .args(["report", "--format", "json", "--top", &n.to_string()])
            .arg(path),
        TIMEOUT,
    );
    assert!(o.status.success(), "{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap()
}

/// `prof run` symbolizes while the command runs (profiler/cli/src/warm.rs) and reuses that
/// work for its summary: the summary must say exactly what `prof report` says of the same
/// profile. The run lasts long enough (> 1.5 s) for several warming rounds.
#[test]
fn run_summary_matches_the_report() {
    let exe = gcc("c_threads", &[], FLAGS, "c_threads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prof.data");
    let started = std::time::Instant::now();
    let o = run_captured(
        &mut prof_run(&[], &out, &[exe.as_os_str(), OsStr::new("25000000")]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert!(
        started.elapsed() > std::time::Duration::from_millis(1500),
        "the run was too short to warm anything: make the fixture's work larger"
    );
    let report = run_captured(prof().arg("report").arg(&out), TIMEOUT);
    assert!(report.status.success(), "{}", report.stderr);
    let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let reported: Vec<String> = report.stdout.lines().map(words).collect();
    // The function lines of the run's summary (between its header and the footer).
    let rows: Vec<String> = o
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("Top 10 functions by self"))
        .filter(|l| l.contains('%') && !l.contains("self%"))
        .map(words)
        .collect();
    assert!(rows.len() >= 5, "no summary rows in:\n{}", o.stderr);
    for r in &rows {
        assert!(
            reported.contains(r),
            "summary row {r:?} is not in `prof report`:\n{}\n---\n{}",
            o.stderr,
            report.stdout
        );
    }
}

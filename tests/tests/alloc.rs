//! The SIGPROF handler allocates nothing: an interposed allocator counts the calls made
//! with SIGPROF blocked (as it is inside the handler) by non-agent threads. The fixture
//! makes exactly 5 such calls itself, so the count must be exactly 5.

use prof_e2e::*;

#[test]
fn handler_never_allocates() {
    let counter = gcc(
        "alloc_count",
        &[],
        &["-O2", "-shared", "-fPIC", "-Wall"],
        "libprof_alloc_count.so",
    );
    let exe = gcc(
        "alloc_fixture",
        &[],
        &[
            "-O1",
            "-fno-builtin",
            "-g",
            "-fno-omit-frame-pointer",
            "-pthread",
            "-Wall",
            "-ldl",
        ],
        "alloc_fixture",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    // prof puts the agent first in LD_PRELOAD and keeps this after it.
    let o = run_captured(
        prof_run(&[], &out, &[exe.as_os_str(), "1.5".as_ref()]).env("LD_PRELOAD", &counter),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("ALLOC "))
        .unwrap_or_else(|| panic!("{}", o.stdout));
    let field = |k: &str| -> u64 {
        let at = line.find(k).unwrap() + k.len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (blocked, total) = (field("blocked="), field("total="));
    assert!(
        total > 1000,
        "the counting allocator saw only {total} calls: {line}"
    );

    let rep = report_json(&out);
    let samples = num(&rep, "samples");
    let timer = rep["timer"].as_str().unwrap_or("").to_ascii_lowercase();
    // 3 CPU-seconds: ~3000 samples from perf events, ~750 from the tick-bound POSIX timer.
    let min = if timer.contains("posix") {
        500.0
    } else {
        2000.0
    };
    assert!(
        samples >= min,
        "only {samples} samples ({timer})\n{}",
        describe(&rep)
    );
    assert_eq!(
        blocked, 5,
        "allocations with SIGPROF blocked: {blocked}, of which 5 are the fixture's own: the handler allocated ({samples} samples)"
    );
}

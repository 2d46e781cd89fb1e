//! The agent lives inside other people's programs: a program that closes every descriptor
//! and reuses the numbers must neither get profiler bytes in its files nor lose its
//! profile.

use prof_e2e::*;

#[test]
fn closing_all_descriptors_neither_corrupts_files_nor_stops_profiling() {
    let exe = fixture("fd_closer");
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let out = dir.path().join("prof.data");
    let o = run_captured(
        &mut prof_run(&[], &out, &[exe.as_os_str(), files.path().as_os_str()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), "opened 1000 dirty 0", "{}", o.stderr);
    let r = report_json(&out);
    // burn_after runs ~5x longer than burn_before, after the descriptors were closed: it
    // must still be sampled at the same rate (the agent re-arms its timer within one
    // drain period, <= 50 ms). The fixture measures each phase's CPU time itself.
    let truth: Vec<f64> = o
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("cpu_before "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        truth.len(),
        2,
        "no CPU times from the fixture: {}",
        o.stderr
    );
    let (before, after) = (total_of(&r, "burn_before"), total_of(&r, "burn_after"));
    assert!(before > 50.0, "{}", describe(&r));
    let (ratio, true_ratio) = (after / before, truth[1] / truth[0]);
    assert!(
        (0.8..=1.25).contains(&(ratio / true_ratio)),
        "burn_after/burn_before = {ratio:.2} sampled, {true_ratio:.2} measured: {}",
        describe(&r)
    );
}

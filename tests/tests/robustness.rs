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
    // burn_after runs 6x longer than burn_before, after the descriptors were closed: it
    // must still be sampled at the same rate (the agent re-arms its timer).
    let (before, after) = (total_of(&r, "burn_before"), total_of(&r, "burn_after"));
    assert!(before > 50.0, "{}", describe(&r));
    let ratio = after / before;
    assert!(
        (4.5..=7.5).contains(&ratio),
        "burn_after/burn_before = {ratio:.2}: {}",
        describe(&r)
    );
}

//! Wall mode samples sleeping threads without disturbing the program: no EINTR, the same
//! output as an unprofiled run.

use prof_e2e::*;

#[test]
fn wall_mode_does_not_disturb_sleeps_and_reads() {
    let exe = fixture("wall_io");
    let plain = run_captured(&mut std::process::Command::new(&exe), TIMEOUT);
    assert_eq!(plain.code(), Some(0), "{}", plain.stderr);
    assert!(plain.stdout.contains("eintr=0"), "{}", plain.stdout);

    for mode in ["wall", "cpu"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.data");
        let o = run_captured(
            &mut prof_run(&["--mode", mode], &out, &[exe.as_os_str()]),
            TIMEOUT,
        );
        assert_eq!(o.code(), Some(0), "{mode}: {}", o.stderr);
        assert_eq!(
            o.stdout, plain.stdout,
            "--mode {mode} changed the program's output"
        );
        if mode == "wall" {
            let rep = report_json(&out);
            assert_eq!(rep["mode"].as_str(), Some("wall"), "{}", describe(&rep));
            assert!(
                num(&rep, "off_cpu_samples") > 0.0,
                "no off-CPU samples\n{}",
                describe(&rep)
            );
            // The main thread spends the run asleep or blocked in read(): it must be sampled.
            let pid = rep["processes"][0]["pid"].clone();
            let main = rep["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tid"] == pid)
                .unwrap_or_else(|| panic!("main thread missing: {:#}", rep["threads"]));
            assert!(
                main["samples"].as_f64().unwrap_or(0.0) >= 50.0,
                "main thread: {main}\n{}",
                describe(&rep)
            );
        }
    }
}

//! Exit-status passthrough, signals, and clear one-line errors for bad input.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use prof_e2e::*;

fn status_fixture() -> std::path::PathBuf {
    fixture("status")
}

/// prof's own error: one line starting with `prof: `, no panic.
fn assert_one_line_error(o: &Outcome, expect: &str) {
    assert!(
        !o.stderr.contains("panicked"),
        "prof panicked:\n{}",
        o.stderr
    );
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line of error, got:\n{}",
        o.stderr
    );
    assert!(lines[0].starts_with("prof: "), "{}", lines[0]);
    assert!(
        lines[0].contains(expect),
        "expected {expect:?} in {:?}",
        lines[0]
    );
}

#[test]
fn exit_code_is_passed_through() {
    let exe = status_fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(&[], &out, &[exe.as_os_str(), "exit".as_ref(), "3".as_ref()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(3), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

#[test]
fn death_by_signal_is_128_plus_n() {
    let exe = status_fixture();
    for (arg, sig) in [("segv", libc::SIGSEGV), ("abort", libc::SIGABRT)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.data");
        let o = run_captured(
            &mut prof_run(&[], &out, &[exe.as_os_str(), OsStr::new(arg)]),
            TIMEOUT,
        );
        assert_eq!(o.code(), Some(128 + sig), "{arg}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
}

#[test]
fn sigkill_leaves_a_readable_profile() {
    let exe = status_fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    // The fixture spins for 1 CPU-second, then raise(SIGKILL): no exit handler runs.
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[exe.as_os_str(), "kill".as_ref(), "1000".as_ref()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(137), "{}", o.stderr);
    assert!(out.is_file(), "no profile written: {}", o.stderr);
    let rep = report_json(&out);
    assert!(num(&rep, "samples") > 100.0, "{}", describe(&rep));
    assert!(
        total_of(&rep, "spin_until_killed") > 0.5 * num(&rep, "weight"),
        "{}",
        describe(&rep)
    );
}

#[test]
fn sigterm_and_sigint_from_a_process_are_forwarded() {
    for (sig, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.data");
        let sleep: &OsStr = "sleep".as_ref();
        let mut cmd = prof_run(&[], &out, &[sleep, "30".as_ref()]);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "signal {sig}: {stderr}");
        assert!(out.is_file(), "signal {sig}: no profile written: {stderr}");
    }
}

#[test]
fn missing_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(&[], &out, &["no-such-command-xyz".as_ref()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2));
    assert_one_line_error(&o, "no-such-command-xyz: command not found");
    let o = run_captured(
        &mut prof_run(&[], &out, &["/no/such/program".as_ref()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2));
    assert_one_line_error(&o, "/no/such/program: no such file");
    assert!(!out.exists());
}

#[test]
fn static_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::panic::catch_unwind(|| gcc("status", &[], &["-O2", "-static"], "status-static"))
        .unwrap_or_else(|_| panic!("gcc -static failed: install libc6-dev (scripts/test.sh does)"));
    let o = run_captured(
        &mut prof_run(
            &[],
            &dir.path().join("p.data"),
            &[exe.as_os_str(), "hello".as_ref()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2), "{}", o.stderr);
    assert_eq!(o.stdout, "", "the static program must not run");
    assert_one_line_error(&o, "is statically linked");
}

#[test]
fn setuid_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("status-suid");
    std::fs::copy(status_fixture(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let o = run_captured(
        &mut prof_run(
            &[],
            &dir.path().join("p.data"),
            &[exe.as_os_str(), "hello".as_ref()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2), "{}", o.stderr);
    assert_eq!(o.stdout, "");
    assert_one_line_error(&o, "is setuid");
}

#[test]
fn unwritable_output_is_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    for out in ["/nonexistent-dir/p.data", "/proc/p.data"] {
        let o = run_captured(
            &mut prof_run(
                &[],
                Path::new(out),
                &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
            ),
            TIMEOUT,
        );
        assert_eq!(o.code(), Some(2), "{out}: {}", o.stderr);
        assert_one_line_error(&o, &format!("cannot write the profile to {out}"));
        assert!(
            !marker.exists(),
            "the command ran although {out} cannot be written"
        );
    }
}

#[test]
fn missing_agent_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_captured(
        prof_run(&[], &dir.path().join("p.data"), &["true".as_ref()])
            .env("PROF_AGENT", "/nonexistent/libprof_agent.so"),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(2));
    assert_one_line_error(&o, "PROF_AGENT=/nonexistent/libprof_agent.so: no such file");
}

#[test]
fn report_refuses_a_file_that_is_not_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are not the samples you are looking for\n").unwrap();
    let o = run_captured(prof().arg("report").arg(&path), TIMEOUT);
    assert_eq!(o.code(), Some(1));
    assert_one_line_error(&o, &format!("{}: not a prof profile", path.display()));
    let o = run_captured(
        prof().arg("report").arg(dir.path().join("missing")),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(1));
    assert_one_line_error(&o, "cannot read");
}

#[test]
fn truncated_profile_reports_what_it_has() {
    let exe = fixture("child_burn");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(&[], &out, &[exe.as_os_str(), "500".as_ref()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    let full = report_json(&out);
    let bytes = std::fs::read(&out).unwrap();
    // Cut in the middle of the last SAMPLES record, as a copy interrupted there would be.
    let records = prof_format::split_records(&bytes).unwrap().records;
    let last = records
        .iter()
        .rev()
        .find(|r| r.kind == prof_format::kind::SAMPLES)
        .expect("a SAMPLES record");
    let cut = dir.path().join("cut.data");
    std::fs::write(&cut, &bytes[..last.offset + last.bytes.len() / 2]).unwrap();
    let o = run_captured(
        prof().args(["report", "--format", "json"]).arg(&cut),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("truncated"),
        "no truncation warning: {}",
        o.stderr
    );
    let rep: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(rep["profile_truncated"], Value::Bool(true), "{rep:#}");
    assert!(num(&rep, "samples") <= num(&full, "samples"));
}

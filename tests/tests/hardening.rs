//! The agent lives inside other people's programs: each test runs a real program doing
//! something odd (tests/fixtures/harden.c) once on its own and once under `prof run`, and
//! checks that its stdout and exit status are the same, that prof said what it had to
//! say, and that the profile is readable and useful.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use prof_e2e::*;

/// The fixture: -O2 without frame pointers, so every stack below needs DWARF unwinding.
fn harden() -> PathBuf {
    gcc(
        "harden",
        &[],
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-pthread",
            "-Wall",
            "-ldl",
        ],
        "harden",
    )
}

/// What the shell would report: the exit code, or 128+N for death by signal N.
fn shell_status(o: &Outcome) -> i32 {
    match (o.status.code(), o.status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => panic!("no status: {:?}", o.status),
    }
}

/// One program run twice, in fresh working directories: alone and under `prof run`.
struct Runs {
    plain: Outcome,
    profiled: Outcome,
    profile: PathBuf,
    plain_dir: tempfile::TempDir,
    prof_dir: tempfile::TempDir,
}

impl Runs {
    fn report(&self) -> Value {
        report_json(&self.profile)
    }

    /// `prof report --format collapsed`: (frames root first, weight).
    fn stacks(&self) -> Vec<(Vec<String>, u64)> {
        let o = run_captured(
            prof()
                .args(["report", "--format", "collapsed"])
                .arg(&self.profile),
            TIMEOUT,
        );
        assert!(o.status.success(), "prof report failed: {}", o.stderr);
        o.stdout
            .lines()
            .map(|l| {
                let (s, w) = l.rsplit_once(' ').expect("folded line");
                (
                    s.split(';').map(str::to_string).collect(),
                    w.parse().expect("weight"),
                )
            })
            .collect()
    }
}

/// Runs `args` alone and under prof; asserts identical stdout and exit status.
fn compare(args: &[&OsStr]) -> Runs {
    let plain_dir = tempfile::tempdir().unwrap();
    let prof_dir = tempfile::tempdir().unwrap();
    let plain = run_captured(
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(plain_dir.path()),
        TIMEOUT,
    );
    let profile = prof_dir.path().join("p.data");
    let profiled = run_captured(
        prof_run(&[], &profile, args).current_dir(prof_dir.path()),
        TIMEOUT,
    );
    assert!(
        !profiled.stderr.contains("panicked"),
        "prof panicked:\n{}",
        profiled.stderr
    );
    assert_eq!(
        profiled.stdout, plain.stdout,
        "prof changed the program's output (stderr under prof:\n{})",
        profiled.stderr
    );
    assert_eq!(
        shell_status(&profiled),
        shell_status(&plain),
        "prof changed the exit status ({:?} alone); stderr under prof:\n{}",
        plain.status,
        profiled.stderr
    );
    assert!(
        profile.is_file(),
        "no profile written:\n{}",
        profiled.stderr
    );
    Runs {
        plain,
        profiled,
        profile,
        plain_dir,
        prof_dir,
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn weight_where(stacks: &[(Vec<String>, u64)], f: impl Fn(&[String]) -> bool) -> u64 {
    stacks.iter().filter(|(s, _)| f(s)).map(|(_, w)| w).sum()
}

fn rooted(s: &[String]) -> bool {
    matches!(
        s.first().map(String::as_str),
        Some("_start") | Some("clone3") | Some("clone")
    )
}

fn heaviest(stacks: &[(Vec<String>, u64)]) -> String {
    let mut v: Vec<&(Vec<String>, u64)> = stacks.iter().collect();
    v.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
    v.iter()
        .take(12)
        .map(|(s, w)| {
            let mut line = s.join(";");
            if line.len() > 300 {
                line = format!("{}...{}", &line[..150], &line[line.len() - 120..]);
            }
            format!("  {w:6}  {line}\n")
        })
        .collect()
}

/// Every sample whose stack does not reach a root frame must be counted by the summary as
/// stopped or truncated: users see unwind quality, not just names.
fn assert_unrooted_are_counted(runs: &Runs, rep: &Value) {
    let stacks = runs.stacks();
    // Folded stacks carry weights, the counters count samples: the same numbers when
    // every sample stands for one period (the perf_event timer), else compare shares.
    let unrooted = weight_where(&stacks, |s| !rooted(s)) as f64;
    let counted = num(rep, "unwind_stopped_samples") + num(rep, "truncated_samples");
    let (samples, weight) = (num(rep, "samples"), num(rep, "weight"));
    let ok = if samples == weight {
        unrooted <= counted
    } else {
        unrooted / weight <= counted / samples + 0.1
    };
    assert!(
        ok,
        "{unrooted} of {weight} periods do not reach _start/clone but only {counted} of {samples} samples are counted as stopped or truncated\n{}",
        heaviest(&stacks)
    );
}

#[test]
fn a_thousand_threads_created_and_joined_while_sampling() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("threads"), os("1000")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    assert!(
        runs.plain.stdout.starts_with("threads 1000 joined"),
        "{}",
        runs.plain.stdout
    );
    let rep = runs.report();
    let threads = rep["threads"].as_array().expect("threads").len();
    // ~1 ms of CPU each at 999 Hz: most of them are sampled, many while exiting. (The
    // POSIX-timer fallback fires on the kernel tick only, every 4 ms at 250 Hz.)
    let perf_timer = rep["timer"]
        .as_str()
        .unwrap_or("")
        .starts_with("perf_event");
    assert!(
        threads >= if perf_timer { 300 } else { 50 },
        "only {threads} threads sampled\n{}",
        describe(&rep)
    );
    // Each worker spins ~1 ms: none may cost tens of ms under prof. (A first period of a
    // few µs once kept one worker in timer interrupts for 4-14 s in a VM.)
    let heaviest_worker = rep["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(|t| t["tid"] != t["pid"])
        .map(|t| t["samples"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    assert!(
        heaviest_worker <= 25,
        "a worker thread of ~1 ms took {heaviest_worker} periods\n{}",
        describe(&rep)
    );
    let weight = num(&rep, "weight");
    assert!(
        total_of(&rep, "thread_work") >= 0.5 * weight,
        "{}",
        describe(&rep)
    );
    assert!(
        num(&rep, "lost_samples") <= 0.01 * weight,
        "{}",
        describe(&rep)
    );
    // The threads' stacks unwind to their start (clone3 → start_thread → thread_main).
    let stacks = runs.stacks();
    let in_work = |s: &[String]| s.iter().any(|f| f == "thread_work");
    let work = weight_where(&stacks, in_work);
    let whole = weight_where(&stacks, |s| {
        in_work(s) && rooted(s) && s.iter().any(|f| f == "start_thread")
    });
    assert!(
        whole as f64 >= 0.98 * work as f64,
        "{whole} of {work} thread samples unwind to clone\n{}",
        heaviest(&stacks)
    );
    assert_unrooted_are_counted(&runs, &rep);
}

#[test]
fn dlopen_and_dlclose_in_a_loop() {
    let exe = harden();
    let lib = gcc(
        "harden_lib",
        &[],
        &["-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC"],
        "libharden_lib.so",
    );
    let runs = compare(&[exe.as_os_str(), os("dlopen"), lib.as_os_str(), os("60")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    let rep = runs.report();
    let weight = num(&rep, "weight");
    // Samples in a library unloaded since are still named (half of the time is spent
    // in it, half between a dlclose and the next dlopen).
    assert!(
        total_of(&rep, "lib_work") >= 0.3 * weight,
        "{}",
        describe(&rep)
    );
    // Its unwind tables are in place as soon as dlopen returns: without frame pointers,
    // a sample in lib_work reaches main only through them.
    let stacks = runs.stacks();
    let in_lib = |s: &[String]| s.last().map(String::as_str) == Some("lib_work");
    let lib_w = weight_where(&stacks, in_lib);
    let whole = weight_where(&stacks, |s| {
        in_lib(s)
            && rooted(s)
            && s.windows(2)
                .any(|w| w[0] == "main" && w[1] == "mode_dlopen")
    });
    assert!(
        whole as f64 >= 0.97 * lib_w as f64,
        "{whole} of {lib_w} samples in lib_work unwind to main\n{}",
        heaviest(&stacks)
    );
    assert_unrooted_are_counted(&runs, &rep);
}

#[test]
fn recursion_ten_thousand_frames_deep() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("deep"), os("10000")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    let rep = runs.report();
    let samples = num(&rep, "samples");
    assert!(num(&rep, "weight") >= 200.0, "{}", describe(&rep));
    // Cut at the depth limit, and said so: in the JSON and in the summary on stderr.
    let truncated = num(&rep, "truncated_samples");
    assert!(truncated >= 0.9 * samples, "{}", describe(&rep));
    assert!(
        runs.profiled
            .stderr
            .contains("truncated at the depth limit"),
        "the summary does not mention truncation:\n{}",
        runs.profiled.stderr
    );
    // Still useful: the innermost 256 frames are kept, so the hot function and its
    // callers are there.
    let stacks = runs.stacks();
    let max_len = stacks.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    assert!(max_len <= 256, "a stack of {max_len} frames");
    let useful = weight_where(&stacks, |s| {
        s.len() >= 200
            && s.ends_with(&["deep_bottom".to_string(), "spin".to_string()])
            && s[..s.len() - 2].iter().all(|f| f == "deep")
    });
    let weight = num(&rep, "weight");
    assert!(
        useful as f64 >= 0.9 * weight,
        "{useful} of {weight} periods are deep;...;deep;deep_bottom;spin\n{}",
        heaviest(&stacks)
    );
}

#[test]
fn program_with_its_own_sigprof_handler_and_itimer_prof() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("ownprof")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    // Its own ticks arrive, with the right si_code, at its own rate (the fixture checks
    // the rate against the CPU time it used: prof's 999 Hz must not reach its handler),
    // and it sees its own handler and the original SIG_DFL through sigaction.
    assert_eq!(
        runs.plain.stdout, "ownprof: ticks ok, si_code ok, readback ok, old SIG_DFL, rate ok\n",
        "{}",
        runs.plain.stderr
    );
    let rate = |stderr: &str| -> f64 {
        let l = stderr
            .lines()
            .find(|l| l.starts_with("OWNPROF "))
            .unwrap_or_else(|| panic!("no OWNPROF line:\n{stderr}"));
        let r = l.split_whitespace().find_map(|kv| kv.strip_prefix("rate="));
        r.and_then(|r| r.trim_end_matches("/s").parse().ok())
            .unwrap_or_else(|| panic!("bad OWNPROF line {l:?}"))
    };
    let (alone, under) = (rate(&runs.plain.stderr), rate(&runs.profiled.stderr));
    assert!(
        (under / alone - 1.0).abs() < 0.2,
        "its SIGPROF rate was {alone}/s alone and {under}/s under prof"
    );
    // prof says what it did, on stderr and in the profile, and still sampled the program.
    assert!(
        runs.profiled
            .stderr
            .contains("prof: the program installed its own SIGPROF handler"),
        "{}",
        runs.profiled.stderr
    );
    let rep = runs.report();
    let notices = rep["notices"].to_string();
    assert!(notices.contains("own SIGPROF handler"), "{notices}");
    assert!(num(&rep, "weight") >= 200.0, "{}", describe(&rep));
    assert!(
        total_of(&rep, "ownprof_work") >= 0.5 * num(&rep, "weight"),
        "{}",
        describe(&rep)
    );
}

#[test]
fn program_that_blocks_sigprof() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("blockprof")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    assert!(
        runs.plain.stdout.starts_with("blockprof: mask kept yes"),
        "{}",
        runs.plain.stdout
    );
    assert!(
        runs.profiled
            .stderr
            .contains("prof: the program blocks SIGPROF"),
        "{}",
        runs.profiled.stderr
    );
    let rep = runs.report();
    // Not sampled while blocked (at most the one signal left pending per thread), sampled
    // again once unblocked.
    let blocked = total_of(&rep, "blocked_work");
    assert!(
        blocked <= 3.0,
        "blocked_work: {blocked}\n{}",
        describe(&rep)
    );
    assert!(
        total_of(&rep, "unblocked_work") >= 100.0,
        "{}",
        describe(&rep)
    );
    assert!(
        rep["notices"].to_string().contains("blocks SIGPROF"),
        "{}",
        rep["notices"]
    );
    // The CPU time used while blocked (~3/4 of the run: blocked_work in three threads) is
    // user time, shown where it was unblocked or the thread ended — not [kernel], which
    // the thread CPU clocks once made of it (74% kernel).
    let kernel = rep["tiers"]["kernel"].as_f64().unwrap_or(0.0);
    let weight = num(&rep, "weight");
    assert!(
        kernel <= 0.1 * weight,
        "{kernel} of {weight} kernel\n{}",
        describe(&rep)
    );
    let stacks = runs.stacks();
    let at_end = weight_where(&stacks, |s| {
        s.last().is_some_and(|f| f.contains("nptl_deallocate_tsd"))
    });
    assert!(
        at_end as f64 >= 0.3 * weight,
        "{at_end} of {weight} at the blocked threads' end\n{}",
        heaviest(&stacks)
    );
}

#[test]
fn sigaltstack_user() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("altstack")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    assert!(
        runs.plain
            .stdout
            .starts_with("altstack: ran on the alternate stack, still set"),
        "{}",
        runs.plain.stdout
    );
    let rep = runs.report();
    let stacks = runs.stacks();
    // Work on the ordinary stack unwinds as usual.
    let main_stack = weight_where(&stacks, |s| {
        rooted(s)
            && s.windows(2)
                .any(|w| w[0] == "mode_altstack" && w[1] == "spin")
    });
    assert!(main_stack >= 100, "{main_stack}\n{}", heaviest(&stacks));
    // Samples taken on the alternate stack (a SIGPROF nested in the program's SIGUSR1
    // handler, on the guarded SIGSTKSZ stack) are recorded and counted as stopped.
    let stopped = num(&rep, "unwind_stopped_samples");
    assert!(stopped >= 0.2 * num(&rep, "samples"), "{}", describe(&rep));
    assert_unrooted_are_counted(&runs, &rep);
}

#[test]
fn vfork_and_posix_spawn() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("spawn"), exe.as_os_str(), os("3")]);
    assert_eq!(shell_status(&runs.plain), 0, "{}", runs.plain.stderr);
    for k in 0..3 {
        for how in ["vfork", "posix_spawn"] {
            let line = format!("{how} child {k}: exit {}", 10 + k);
            assert!(runs.plain.stdout.contains(&line), "{}", runs.plain.stdout);
        }
    }
    // The parent and all six children (the agent loaded again at each exec) are profiled.
    let rep = runs.report();
    let procs = rep["processes"].as_array().expect("processes");
    let children: Vec<&Value> = procs
        .iter()
        .filter(|p| p["command"].as_str().unwrap_or("").contains(" child "))
        .collect();
    assert_eq!(children.len(), 6, "{procs:#?}");
    for c in &children {
        assert!(
            c["samples"].as_u64().unwrap_or(0) >= 3,
            "{c:#}\n{}",
            describe(&rep)
        );
    }
    assert!(
        total_of(&rep, "parent_between") > 50.0,
        "{}",
        describe(&rep)
    );
    assert!(total_of(&rep, "child_work") > 50.0, "{}", describe(&rep));
}

/// The fixture's CPU time, from its `NAME cpu=S` line on stderr.
fn fixture_cpu(stderr: &str, name: &str) -> f64 {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|l| l.trim().strip_prefix("cpu="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name} cpu=` line:\n{stderr}"))
}

/// Samples up to the last flush before an abrupt end: the writer flushes every ~50 ms,
/// so all but the last few dozen periods of the program's CPU time are in the profile.
fn assert_kept_until_the_end(runs: &Runs, rep: &Value, name: &str, work: &str) {
    let cpu = fixture_cpu(&runs.profiled.stderr, name);
    let weight = num(rep, "weight");
    let rate = num(rep, "rate_hz");
    assert!(
        weight >= 0.85 * rate * (cpu - 0.1),
        "{weight} periods for {cpu} CPU-s at {rate} Hz\n{}",
        describe(rep)
    );
    assert!(total_of(rep, work) >= 0.8 * weight, "{}", describe(rep));
    let p = &rep["processes"][0];
    assert_eq!(p["ended"], false, "{p:#}");
}

#[test]
fn exit_without_atexit() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("exit")]);
    assert_eq!(shell_status(&runs.plain), 7, "{}", runs.plain.stderr);
    assert!(
        runs.plain.stdout.starts_with("exit: ") && !runs.plain.stdout.contains("atexit"),
        "{}",
        runs.plain.stdout
    );
    let rep = runs.report();
    assert_kept_until_the_end(&runs, &rep, "EXIT", "exit_work");
    assert_eq!(rep["profile_truncated"], false);
}

fn cores(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("core"))
        .collect()
}

#[test]
fn crash_by_sigsegv() {
    let exe = harden();
    let runs = compare(&[exe.as_os_str(), os("segv")]);
    assert_eq!(
        runs.plain.status.signal(),
        Some(libc::SIGSEGV),
        "{:?}",
        runs.plain.status
    );
    assert_eq!(shell_status(&runs.profiled), 139);
    // Its own SIGSEGV handler ran, and it still died of the signal.
    assert_eq!(
        runs.plain.stdout,
        "segv: about to crash\nsegv: caught SIGSEGV, restoring the default action\n"
    );
    // Its core dump behaves the same: where core_pattern writes a file into the working
    // directory, both runs leave one; elsewhere neither does.
    let (alone, under) = (cores(runs.plain_dir.path()), cores(runs.prof_dir.path()));
    assert_eq!(
        alone.len(),
        under.len(),
        "core files alone: {alone:?}, under prof: {under:?}"
    );
    if let Ok(pattern) = std::fs::read_to_string("/proc/sys/kernel/core_pattern") {
        if !pattern.starts_with('|') && !pattern.contains('/') && runs.plain.status.core_dumped() {
            assert_eq!(alone.len(), 1, "core_pattern {pattern:?}: {alone:?}");
        }
    }
    let rep = runs.report();
    assert_kept_until_the_end(&runs, &rep, "SEGV", "segv_work");
}

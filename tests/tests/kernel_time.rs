//! CPU time spent in system calls is counted in cpu mode (issue 12): the sys_threads
//! fixture's three threads (a pread loop, pure computation, both mixed) measure their own
//! CLOCK_THREAD_CPUTIME_ID (user + system); prof's per-thread shares must be within 3
//! percentage points of them with the perf-event timer and with the POSIX fallback, the
//! kernel time must sit under the function that called pread, under `[syscall pread64]`,
//! and the summary's achieved rate must count it.

use std::ffi::OsStr;

use prof_e2e::*;

const THREADS: [&str; 3] = ["reader", "computer", "mixed"];
const RATE: f64 = 999.0;

/// `GROUND reader=S computer=S mixed=S user=S system=S` from the fixture's stderr.
fn ground(stderr: &str, key: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("GROUND "))
        .unwrap_or_else(|| panic!("no GROUND line in the fixture's stderr:\n{stderr}"));
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key} missing from {line}"));
    line[at + key.len() + 2..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {line}"))
}

struct Run {
    stderr: String,
    report: Value,
    folded: String,
}

fn run(env: &[(&str, &str)]) -> Run {
    let exe = fixture("sys_threads");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prof.data");
    let mut cmd = prof_run(
        &["--rate", "999"],
        &out,
        &[exe.as_os_str(), OsStr::new("1.0")],
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = run_captured(&mut cmd, TIMEOUT);
    assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
    assert_eq!(o.stdout, "sys_threads done\n", "stdout passed through");
    let folded = run_captured(
        prof().args(["report", "--format", "collapsed"]).arg(&out),
        TIMEOUT,
    );
    assert!(folded.status.success(), "{}", folded.stderr);
    Run {
        report: report_json(&out),
        stderr: o.stderr,
        folded: folded.stdout,
    }
}

/// Each thread's share of the profile (its function's total) and of the fixture's own
/// CPU clocks, in percent.
fn shares(r: &Run) -> Vec<(&'static str, f64, f64)> {
    let weight = num(&r.report, "weight");
    let truth: Vec<f64> = THREADS.iter().map(|t| ground(&r.stderr, t)).collect();
    let sum: f64 = truth.iter().sum();
    THREADS
        .iter()
        .zip(&truth)
        .map(|(t, v)| (*t, 100.0 * total_of(&r.report, t) / weight, 100.0 * v / sum))
        .collect()
}

fn shares_text(s: &[(&str, f64, f64)]) -> String {
    s.iter()
        .map(|(t, got, want)| format!("{t} {got:.2}% (truth {want:.2}%)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Weight of the folded stacks that satisfy `f`.
fn folded_weight(folded: &str, f: impl Fn(&str) -> bool) -> f64 {
    folded
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(stack, _)| f(stack))
        .map(|(_, n)| {
            n.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad count {n:?}"))
        })
        .sum()
}

fn check(timer: Option<&str>) {
    let env: Vec<(&str, &str)> = timer.map(|t| ("PROF_TIMER", t)).into_iter().collect();
    let r = run(&env);
    let rep = &r.report;
    let s = shares(&r);
    eprintln!("timer {timer:?}: {}", shares_text(&s));
    for (t, got, want) in &s {
        assert!(
            (got - want).abs() <= 3.0,
            "{t}: profiled {got:.2}% vs its own CPU clock {want:.2}% (timer {timer:?}): {}\n{}",
            shares_text(&s),
            describe(rep)
        );
    }
    if let Some(t) = timer {
        let name = rep["timer"].as_str().unwrap_or("").to_ascii_lowercase();
        assert!(name.contains(t), "asked for {t}, report says {name:?}");
    }

    // Kernel time is under the syscall, below the function that called pread.
    let weight = num(rep, "weight");
    let pread = folded_weight(&r.folded, |s| s.ends_with(";[syscall pread64]"));
    let under_callers = folded_weight(&r.folded, |s| {
        s.ends_with(";[syscall pread64]")
            && (s.contains(";read_chunk;") || s.contains(";mixed_read;"))
    });
    assert!(
        pread >= 0.25 * weight,
        "[syscall pread64] has {pread} of {weight}: the reader thread alone spends ~40% of the CPU in pread\n{}",
        r.folded
    );
    assert!(
        under_callers >= 0.97 * pread,
        "only {under_callers} of {pread} under read_chunk/mixed_read\n{}",
        r.folded
    );
    // Both pread callers have their share, each on its own thread's stack.
    for caller in ["reader;read_chunk;", "mixed;mixed_read;"] {
        let w = folded_weight(&r.folded, |s| {
            s.contains(caller) && s.ends_with(";[syscall pread64]")
        });
        assert!(
            w >= 0.05 * weight,
            "{caller}: {w} of {weight}\n{}",
            r.folded
        );
    }
    // The computing thread made no syscall worth a tick: nothing of it under one.
    let computer_syscalls = folded_weight(&r.folded, |s| {
        s.contains(";computer;") && s.contains("[syscall ")
    });
    assert!(
        computer_syscalls <= 0.01 * weight,
        "the computing thread has {computer_syscalls} under syscalls\n{}",
        r.folded
    );

    // The kernel tier matches the fixture's own system time, roughly: getrusage splits user
    // and system by sampling on the tick, which is itself off by several points.
    let kernel = rep["tiers"]["kernel"].as_f64().unwrap_or(0.0);
    let tier_share = 100.0 * kernel / weight;
    let (user, system) = (ground(&r.stderr, "user"), ground(&r.stderr, "system"));
    let sys_share = 100.0 * system / (user + system);
    assert!(
        (tier_share - sys_share).abs() <= 10.0,
        "kernel tier {tier_share:.1}% vs the fixture's system time {sys_share:.1}%\n{}",
        describe(rep)
    );

    // All of the CPU time is sampled again.
    let rate = num(rep, "samples_per_cpu_s");
    assert!(
        (0.9 * RATE..=1.05 * RATE).contains(&rate),
        "{rate:.1} samples per CPU-second at {RATE} Hz\n{}",
        describe(rep)
    );
    eprintln!(
        "timer {timer:?}: kernel tier {tier_share:.1}% (system time {sys_share:.1}%), {rate:.1} samples per CPU-second"
    );
}

#[test]
fn syscall_time_is_counted_with_the_perf_event() {
    check(None);
}

#[test]
fn syscall_time_is_counted_with_the_posix_timer_fallback() {
    check(Some("posix"));
}

/// The check above fails without kernel-time accounting (PROF_KERNEL_TIME=off, the agent
/// before issue 12): the perf event alone drops every period that ends in the kernel.
#[test]
fn without_kernel_time_accounting_the_shares_are_wrong() {
    let r = run(&[("PROF_KERNEL_TIME", "off")]);
    let s = shares(&r);
    let worst = s
        .iter()
        .map(|(_, got, want)| (got - want).abs())
        .fold(0.0, f64::max);
    eprintln!("PROF_KERNEL_TIME=off: {}", shares_text(&s));
    if r.report["timer"].as_str().unwrap_or("").contains("perf") {
        assert!(
            worst > 10.0,
            "with the perf event and no kernel-time accounting the reader should be far too low: {}",
            shares_text(&s)
        );
        let rate = num(&r.report, "samples_per_cpu_s");
        assert!(rate < 0.8 * RATE, "{rate} samples per CPU-second");
    }
    assert_eq!(
        folded_weight(&r.folded, |s| s.contains("[syscall ")),
        0.0,
        "no syscall frames in cpu mode without kernel-time accounting"
    );
}

/// Kernel time is counted without ever interrupting a system call: the kernel catcher's
/// signal comes on the way back to user space (CONFIG_POSIX_CPU_TIMERS_TASK_WORK), so
/// threads that burn CPU in the kernel and then sleep in calls that fail with EINTR
/// whatever SA_RESTART says (poll over 200 pipes, epoll_wait, nanosleep, select) never
/// see EINTR — with the perf event and its catcher, and with the POSIX timer alone.
#[test]
fn kernel_time_accounting_never_interrupts_a_syscall() {
    let exe = fixture("sys_threads");
    for timer in ["auto", "posix"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prof.data");
        let mut cmd = prof_run(
            &["--rate", "999"],
            &out,
            &[exe.as_os_str(), OsStr::new("eintr")],
        );
        cmd.env("PROF_TIMER", timer);
        let o = run_captured(&mut cmd, TIMEOUT);
        assert_eq!(o.code(), Some(0), "prof run failed: {}", o.stderr);
        assert!(
            o.stderr.contains("SELFTEST_EINTR=1"),
            "the fixture's own check that it sees EINTR failed: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains("EINTR=0 "),
            "a sleeping syscall failed with EINTR under prof (timer {timer}): {}",
            o.stderr
        );
        // And the pread bursts' kernel time was sampled, under the syscall.
        let folded = run_captured(
            prof().args(["report", "--format", "collapsed"]).arg(&out),
            TIMEOUT,
        );
        let pread = folded_weight(&folded.stdout, |s| {
            s.contains(";read_chunk;") && s.ends_with(";[syscall pread64]")
        });
        assert!(
            pread > 0.0,
            "no pread time (timer {timer}):\n{}",
            folded.stdout
        );
    }
}

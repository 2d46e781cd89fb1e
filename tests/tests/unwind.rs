//! Native stacks without frame pointers: an -O2 -fomit-frame-pointer C program with a known
//! call chain, and Debian's python3.11 (built without frame pointers), must unwind to
//! `main` through DWARF CFI in the signal handler.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use prof_e2e::*;

/// `prof report --format collapsed`: (frames root first, weight) per distinct stack.
fn collapsed(path: &Path) -> Vec<(Vec<String>, u64)> {
    let o = run_captured(
        prof().args(["report", "--format", "collapsed"]).arg(path),
        TIMEOUT,
    );
    assert!(o.status.success(), "prof report failed: {}", o.stderr);
    o.stdout
        .lines()
        .map(|l| {
            let (stack, w) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line {l:?}"));
            let w = w
                .parse()
                .unwrap_or_else(|_| panic!("bad weight in folded line {l:?}"));
            (stack.split(';').map(str::to_string).collect(), w)
        })
        .collect()
}

/// The heaviest stacks, for assertion messages.
fn heaviest(stacks: &[(Vec<String>, u64)], n: usize) -> String {
    let mut v: Vec<&(Vec<String>, u64)> = stacks.iter().collect();
    v.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
    v.iter()
        .take(n)
        .map(|(s, w)| {
            let mut line = s.join(";");
            if line.len() > 400 {
                line = format!("{}...{}", &line[..200], &line[line.len() - 150..]);
            }
            format!("  {w:6}  {line}\n")
        })
        .collect()
}

/// A stack of the fixture is whole when it is rooted at `_start`, reaches `main` through
/// libc's start-up frames, and from `main` on is exactly one of the fixture's two chains:
/// main → outer → middle → leaf, or main → recurse × 200 → bottom. A kernel leaf
/// (`[kernel]`, `[syscall …]`: kernel time, more of it on a loaded machine) on top of
/// the chain is the same stack.
fn whole_chain(stack: &[String]) -> bool {
    let stack = match stack.split_last() {
        Some((leaf, rest)) if leaf == "[kernel]" || leaf.starts_with("[syscall ") => rest,
        _ => stack,
    };
    let Some(m) = stack.iter().position(|f| f == "main") else {
        return false;
    };
    if stack.first().map(String::as_str) != Some("_start")
        || !stack[..m]
            .iter()
            .any(|f| f.starts_with("__libc_start_main"))
    {
        return false;
    }
    let rest = &stack[m + 1..];
    let call_chain = rest == ["outer", "middle", "leaf"];
    let recursion =
        rest.len() == 201 && rest[..200].iter().all(|f| f == "recurse") && rest[200] == "bottom";
    call_chain || recursion
}

#[test]
fn no_frame_pointer_chain_is_whole_in_99_percent_of_samples() {
    let exe = gcc(
        "nofp_chain",
        &[],
        &["-O2", "-g", "-fomit-frame-pointer", "-Wall"],
        "nofp_chain",
    );
    let plain = run_captured(&mut std::process::Command::new(&exe), TIMEOUT);
    assert_eq!(plain.code(), Some(0), "{}", plain.stderr);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(&mut prof_run(&[], &out, &[exe.as_os_str()]), TIMEOUT);
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.stdout, plain.stdout, "prof changed the program's output");

    let stacks = collapsed(&out);
    let total: u64 = stacks.iter().map(|(_, w)| w).sum();
    let whole: u64 = stacks
        .iter()
        .filter(|(s, _)| whole_chain(s))
        .map(|(_, w)| w)
        .sum();
    let in_chain = |leaf: &str| -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.last().map(String::as_str) == Some(leaf))
            .map(|(_, w)| w)
            .sum()
    };
    assert!(total >= 300, "too few samples ({total}):\n{}", o.stderr);
    // Both halves of the program were sampled (about half each).
    for leaf in ["leaf", "bottom"] {
        assert!(
            in_chain(leaf) as f64 >= 0.3 * total as f64,
            "{leaf}: {} of {total}\n{}",
            in_chain(leaf),
            heaviest(&stacks, 10)
        );
    }
    assert!(
        whole as f64 >= 0.99 * total as f64,
        "only {whole} of {total} samples have the whole chain from _start; heaviest stacks:\n{}",
        heaviest(&stacks, 10)
    );
    // The summary's unwind-quality counters agree: nothing cut at the depth limit (205
    // frames < 256), next to nothing stopped early.
    let rep = report_json(&out);
    assert_eq!(num(&rep, "truncated_samples"), 0.0, "{}", describe(&rep));
    assert!(
        num(&rep, "unwind_stopped_samples") <= 0.01 * num(&rep, "samples"),
        "unwind_stopped_samples {}\n{}",
        num(&rep, "unwind_stopped_samples"),
        describe(&rep)
    );
}

fn debian_python() -> PathBuf {
    // Called by its full path: `python3` on PATH may be a pyenv shim with frame pointers.
    let p = PathBuf::from("/usr/bin/python3.11");
    assert!(
        p.is_file(),
        "{} is missing: this test needs Debian's python3.11 (apt-get install -y python3; scripts/test.sh does)",
        p.display()
    );
    p
}

#[test]
fn debian_python_stacks_reach_main() {
    let python = debian_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/py_loop.py");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[python.as_os_str(), script.as_os_str(), OsStr::new("1.0")],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert!(o.stdout.starts_with("py_loop "), "{}", o.stdout);

    let stacks = collapsed(&out);
    let total: u64 = stacks.iter().map(|(_, w)| w).sum();
    assert!(total >= 300, "too few samples ({total}):\n{}", o.stderr);
    let reaches_main = |s: &[String]| {
        s.first().map(String::as_str) == Some("_start")
            || s.iter()
                .any(|f| f == "main" || f.starts_with("__libc_start_main"))
    };
    let rooted: u64 = stacks
        .iter()
        .filter(|(s, _)| reaches_main(s))
        .map(|(_, w)| w)
        .sum();
    assert!(
        rooted as f64 >= 0.95 * total as f64,
        "only {rooted} of {total} stacks reach main; heaviest stacks:\n{}",
        heaviest(&stacks, 10)
    );
    // And they are the Python program's stacks: the interpreter's native frames with the
    // Python functions spliced in, below main.
    let through_inner: u64 = stacks
        .iter()
        .filter(|(s, _)| {
            reaches_main(s)
                && s.windows(2)
                    .any(|w| w[0] == "outer_loop" && w[1] == "inner")
        })
        .map(|(_, w)| w)
        .sum();
    assert!(
        through_inner as f64 >= 0.8 * total as f64,
        "only {through_inner} of {total} samples go main → outer_loop → inner:\n{}",
        heaviest(&stacks, 10)
    );
    let rep = report_json(&out);
    assert!(
        num(&rep, "unwind_stopped_samples") <= 0.05 * num(&rep, "samples"),
        "{}",
        describe(&rep)
    );
}

#[test]
fn wall_mode_off_cpu_stacks_without_frame_pointers_reach_the_root() {
    let exe = gcc(
        "nofp_sleep",
        &[],
        &["-O2", "-g", "-fomit-frame-pointer", "-pthread", "-Wall"],
        "nofp_sleep",
    );
    let plain = run_captured(&mut std::process::Command::new(&exe), TIMEOUT);
    assert_eq!(plain.code(), Some(0), "{}", plain.stderr);
    assert_eq!(plain.stdout, "nofp_sleep eintr=0 read=1\n");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(&["--mode", "wall"], &out, &[exe.as_os_str()]),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert_eq!(
        o.stdout, plain.stdout,
        "wall mode changed the program's output"
    );

    // Blocked threads are unwound from the pc and sp /proc gives, over a copy of their
    // stack: without frame pointers only CFI gets from the syscall to the thread's root.
    let stacks = collapsed(&out);
    let ending = |syscall: &str| -> Vec<&(Vec<String>, u64)> {
        stacks
            .iter()
            .filter(|(s, _)| s.last().map(String::as_str) == Some(syscall))
            .collect()
    };
    for (syscall, root, chain) in [
        (
            "[syscall clock_nanosleep]",
            "_start",
            &["main", "sleep_outer", "sleep_middle", "sleep_leaf"][..],
        ),
        (
            "[syscall read]",
            "clone3",
            &["start_thread", "read_outer", "read_leaf"][..],
        ),
    ] {
        let off_cpu = ending(syscall);
        let total: u64 = off_cpu.iter().map(|(_, w)| w).sum();
        let whole: u64 = off_cpu
            .iter()
            .filter(|(s, _)| {
                s.first().map(String::as_str) == Some(root)
                    && s.windows(chain.len()).any(|w| w == chain)
            })
            .map(|(_, w)| w)
            .sum();
        assert!(
            total >= 200,
            "{syscall}: weight {total}\n{}",
            heaviest(&stacks, 8)
        );
        assert!(
            whole as f64 >= 0.95 * total as f64,
            "{syscall}: {whole} of {total} reach {root} through {chain:?}\n{}",
            heaviest(&stacks, 8)
        );
    }
}

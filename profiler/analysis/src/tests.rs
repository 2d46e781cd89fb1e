//! Aggregation tests on synthetic profiles (symbols injected with `add_symbols`).

use prof_format::{
    flags, node_kind, read_profile, LogWriter, Mode, Module, Node, PendingSample, Process,
    ProcessEnd, ProcessInfo, Profile, Sample, TimerSource,
};

use crate::*;

const APP: &str = "/fake/bin/app";
const APP_ID: &[u8] = &[0xaa, 0xbb, 0xcc, 0xdd];
const BIAS: u64 = 0x5555_0000_0000;

fn info(pid: u32, mode: Mode, start_unix_ns: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        start_unix_ns,
        period_ns: 1_000_000,
        mode,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 1000,
        max_depth: 128,
        exe: APP.into(),
        argv: vec!["app".into(), "--fast".into()],
        agent_version: "test".into(),
    }
}

fn app_module() -> Module {
    Module {
        id: 1,
        path: APP.into(),
        build_id: APP_ID.to_vec(),
        bias: BIAS,
        ranges: vec![(BIAS + 0x1000, BIAS + 0x2000)],
    }
}

fn symbolizer() -> Symbolizer {
    let mut s = Symbolizer::without_debug_dirs();
    s.add_symbols(
        APP,
        APP_ID,
        [
            (0x1000u64, 0x100u64, "main"),
            (0x1100, 0x100, "f"),
            (0x1200, 0x100, "g"),
        ],
    );
    s
}

/// Runtime address `off` bytes into function `f` (svma base).
fn at(svma: u64) -> (u32, u64) {
    (node_kind::NATIVE, BIAS + svma)
}

struct Rec {
    w: LogWriter<Vec<u8>>,
}

impl Rec {
    fn new(info: &ProcessInfo) -> Rec {
        let mut w = LogWriter::new(Vec::new());
        w.process(info);
        Rec { w }
    }
    fn sample(&mut self, tid: u32, t_ns: u64, stack: &[(u32, u64)], weight: u32, fl: u32) {
        let leaf = self.w.stacks.intern(stack.iter().copied());
        self.w.samples(
            tid,
            &[PendingSample {
                time_ns: t_ns,
                leaf,
                weight,
                flags: fl,
            }],
        );
    }
    fn finish(self) -> Vec<u8> {
        self.w.into_inner().unwrap()
    }
}

/// main -> f -> g (x3 weight), main -> f -> f -> f (recursion, weight 2), main -> g on two
/// threads, one empty stack.
fn basic_profile() -> Profile {
    let mut r = Rec::new(&info(100, Mode::Cpu, 0));
    r.w.module(&app_module());
    r.w.thread(100, "app-main");
    r.w.thread(101, "worker");
    let main = at(0x1010);
    r.sample(100, 1_000_000, &[main, at(0x1110), at(0x1210)], 3, 0);
    r.sample(
        100,
        2_000_000,
        &[main, at(0x1120), at(0x1120), at(0x1130)],
        2,
        flags::TRUNCATED,
    );
    r.sample(100, 3_000_000, &[main, at(0x1250)], 1, 0);
    r.sample(
        101,
        3_500_000,
        &[main, at(0x1250)],
        1,
        flags::UNWIND_STOPPED,
    );
    r.sample(101, 4_000_000, &[], 1, 0);
    r.w.lost(7);
    r.w.notice("perf_event_open refused; using POSIX timers");
    r.w.end(&ProcessEnd {
        duration_ns: 5_000_000_000,
        cpu_user_ns: 3_000_000_000,
        cpu_system_ns: 1_000_000_000,
        signals: 8,
    });
    read_profile(&r.finish()).unwrap()
}

fn func<'a>(s: &'a Summary, name: &str) -> &'a FunctionSummary {
    s.functions
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no function {name} in {:#?}", s.functions))
}

#[test]
fn self_total_and_recursion() {
    let p = basic_profile();
    let a = analyze(&p, &mut symbolizer());
    let s = a.summary();
    assert_eq!(s.samples, 5);
    assert_eq!(s.weight, 8);
    assert_eq!(s.lost_samples, 7);
    assert_eq!((func(&s, "g").self_, func(&s, "g").total), (5, 5));
    // f appears three times in the recursive stack but counts once.
    assert_eq!((func(&s, "f").self_, func(&s, "f").total), (2, 5));
    assert_eq!((func(&s, "main").self_, func(&s, "main").total), (0, 7));
    assert_eq!((func(&s, NO_STACK).self_, func(&s, NO_STACK).total), (1, 1));
    assert_eq!(func(&s, "g").module, "app");
    // Sorted by self desc, then total desc.
    let order: Vec<&str> = s.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(order, ["g", "f", NO_STACK, "main"]);
    let self_sum: u64 = s.functions.iter().map(|f| f.self_).sum();
    assert_eq!(self_sum, s.weight);

    assert_eq!(s.truncated_samples, 1);
    assert_eq!(s.unwind_stopped_samples, 1);
    assert_eq!(s.off_cpu_samples, 0);
    assert_eq!(s.notices, ["perf_event_open refused; using POSIX timers"]);
    assert_eq!(s.mode, "cpu");
    assert_eq!(s.timer, "perf_event cpu-clock");
    assert_eq!(s.rate_hz, 1000.0);
    assert_eq!(s.duration_s, 5.0);
    assert_eq!(s.samples_per_cpu_s, Some(2.0));
    assert!(s.symbol_warnings.is_empty(), "{:?}", s.symbol_warnings);

    assert_eq!(s.processes.len(), 1);
    let pr = &s.processes[0];
    assert_eq!(
        (pr.pid, pr.ppid, pr.command.as_str(), pr.samples),
        (100, 1, "app --fast", 8)
    );
    assert_eq!(pr.cpu_s, Some(4.0));
    assert!(pr.ended);

    let th: Vec<(u32, &str, u64)> = s
        .threads
        .iter()
        .map(|t| (t.tid, t.name.as_str(), t.samples))
        .collect();
    assert_eq!(th, [(100, "app-main", 6), (101, "worker", 2)]);
}

#[test]
fn collapsed_golden() {
    let a = analyze(&basic_profile(), &mut symbolizer());
    assert_eq!(
        a.collapsed(),
        "[no stack] 1\nmain;f;f;f 2\nmain;f;g 3\nmain;g 2\n"
    );
    let per_thread = a.collapsed_with(&CollapseOptions {
        process: true,
        thread: true,
    });
    assert_eq!(
        per_thread,
        "app --fast (pid 100);app-main (tid 100);main;f;f;f 2\n\
         app --fast (pid 100);app-main (tid 100);main;f;g 3\n\
         app --fast (pid 100);app-main (tid 100);main;g 1\n\
         app --fast (pid 100);worker (tid 101);[no stack] 1\n\
         app --fast (pid 100);worker (tid 101);main;g 1\n"
    );
}

#[test]
fn json_field_names_are_the_contract() {
    let s = analyze(&basic_profile(), &mut symbolizer()).summary();
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    for k in [
        "samples",
        "weight",
        "lost_samples",
        "duration_s",
        "processes",
        "threads",
        "functions",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in ["pid", "command", "samples"] {
        assert!(
            v["processes"][0].get(k).is_some(),
            "missing processes[].{k}"
        );
    }
    for k in ["pid", "tid", "name", "samples"] {
        assert!(v["threads"][0].get(k).is_some(), "missing threads[].{k}");
    }
    for k in ["name", "module", "file", "line", "self", "total"] {
        assert!(
            v["functions"][0].get(k).is_some(),
            "missing functions[].{k}"
        );
    }
    assert!(v["functions"][0].get("self_").is_none());
    assert_eq!(v["functions"][0]["self"], 5);
    assert_eq!(v["weight"], 8);
    let back: Summary = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}

#[test]
fn return_addresses_are_looked_up_minus_one() {
    let mut r = Rec::new(&info(1, Mode::Cpu, 0));
    r.w.module(&app_module());
    r.w.module(&Module {
        id: 2,
        path: "/nonexistent/libx.so".into(),
        build_id: vec![1, 2, 3],
        bias: 0x7000_0000,
        ranges: vec![(0x7000_0000, 0x7001_0000)],
    });
    // The call to g's caller is the last instruction of f: the return address is the first
    // byte of g, which must still be attributed to f. As a leaf, that address is g.
    r.sample(1, 0, &[at(0x1010), at(0x1200), at(0x1200)], 1, 0);
    // Unsymbolizable return address: shown as its own offset, not offset - 1.
    r.sample(
        1,
        0,
        &[
            (node_kind::NATIVE, 0x7000_0100),
            (node_kind::NATIVE, 0x7000_0200),
        ],
        1,
        0,
    );
    let p = read_profile(&r.finish()).unwrap();
    let a = analyze(&p, &mut symbolizer());
    assert_eq!(a.collapsed(), "libx.so+0x100;libx.so+0x200 1\nmain;f;g 1\n");
    let s = a.summary();
    assert_eq!(s.symbol_warnings.len(), 1, "{:?}", s.symbol_warnings);
    assert!(
        s.symbol_warnings[0].starts_with("/nonexistent/libx.so: cannot read the file"),
        "{:?}",
        s.symbol_warnings
    );
    assert_eq!(func(&s, "libx.so+0x200").module, "libx.so");
}

#[test]
fn a_pushed_function_entry_as_return_address_names_that_function() {
    // V8's deoptimizer pushes Builtins_InterpreterEnterAtNextBytecode's first byte as a
    // return address; the byte before it is padding after the previous function.
    let mut r = Rec::new(&info(1, Mode::Cpu, 0));
    r.w.module(&app_module());
    r.sample(1, 0, &[at(0x1010), at(0x1480), at(0x1410)], 1, 0);
    let p = read_profile(&r.finish()).unwrap();
    let mut s = Symbolizer::without_debug_dirs();
    s.add_symbols(
        APP,
        APP_ID,
        [
            (0x1000u64, 0x100u64, "main"),
            (0x1400, 0x50, "padded"),
            (0x1480, 0x40, "entry"),
        ],
    );
    let a = analyze(&p, &mut s);
    assert_eq!(a.collapsed(), "main;entry;padded 1\n");
}

#[test]
fn synthetic_frames_syscalls_vdso_and_unknown_addresses() {
    let mut r = Rec::new(&info(1, Mode::Wall, 0));
    r.w.module(&app_module());
    r.w.module(&Module {
        id: 2,
        path: "[vdso]".into(),
        build_id: vec![],
        bias: 0,
        ranges: vec![(0x7fff_0000, 0x7fff_1000)],
    });
    let main = at(0x1010);
    r.sample(1, 0, &[main, (node_kind::SYSCALL, 35)], 4, flags::OFF_CPU);
    r.sample(
        1,
        0,
        &[main, (node_kind::SYSCALL, 99_999)],
        1,
        flags::OFF_CPU,
    );
    r.sample(1, 0, &[main, (7, 42)], 1, 0);
    // CPU time in the kernel, syscall unknown (cpu mode: no OFF_CPU flag).
    r.sample(
        1,
        0,
        &[main, (node_kind::SYSCALL, prof_format::UNKNOWN_SYSCALL)],
        3,
        0,
    );
    r.sample(1, 0, &[main, (node_kind::NATIVE, 0x7f00_dead_beef)], 1, 0);
    r.sample(1, 0, &[main, (node_kind::NATIVE, 0x7fff_0123)], 1, 0);
    let p = read_profile(&r.finish()).unwrap();
    let a = analyze(&p, &mut symbolizer());
    assert_eq!(
        a.collapsed(),
        "main;0x7f00deadbeef 1\nmain;[kernel] 3\nmain;[syscall 99999] 1\nmain;[syscall nanosleep] 4\nmain;[unknown frame kind 7] 1\nmain;[vdso] 1\n"
    );
    let s = a.summary();
    assert_eq!(s.mode, "wall");
    assert_eq!(s.off_cpu_samples, 2);
    assert_eq!(func(&s, "[syscall nanosleep]").module, "[kernel]");
    assert_eq!(func(&s, "[kernel]").module, "[kernel]");
    assert_eq!(func(&s, "0x7f00deadbeef").module, "[unknown]");
    assert_eq!(func(&s, "[vdso]").module, "[vdso]");
    assert!(s.symbol_warnings.is_empty(), "{:?}", s.symbol_warnings);
}

#[test]
fn reloaded_module_at_same_address_wins() {
    let mut sym = Symbolizer::without_debug_dirs();
    sym.add_symbols("/old.so", &[1], [(0x0u64, 0x1000u64, "old_fn")]);
    sym.add_symbols("/new.so", &[2], [(0x0u64, 0x1000u64, "new_fn")]);
    let mut r = Rec::new(&info(1, Mode::Cpu, 0));
    r.w.module(&Module {
        id: 1,
        path: "/old.so".into(),
        build_id: vec![1],
        bias: 0x10000,
        ranges: vec![(0x10000, 0x11000)],
    });
    r.w.module_unload(1);
    r.w.module(&Module {
        id: 2,
        path: "/new.so".into(),
        build_id: vec![2],
        bias: 0x10000,
        ranges: vec![(0x10000, 0x11000)],
    });
    r.sample(1, 0, &[(node_kind::NATIVE, 0x10010)], 1, 0);
    let a = analyze(&read_profile(&r.finish()).unwrap(), &mut sym);
    assert_eq!(a.collapsed(), "new_fn 1\n");
}

#[test]
fn processes_share_one_clock() {
    let mut bytes = {
        let mut r = Rec::new(&info(10, Mode::Cpu, 1_000_000_000));
        r.w.module(&app_module());
        r.sample(10, 0, &[at(0x1010)], 2, 0);
        r.w.end(&ProcessEnd {
            duration_ns: 2_000_000_000,
            cpu_user_ns: 500_000_000,
            cpu_system_ns: 0,
            signals: 2,
        });
        r.finish()
    };
    // A child started half a second later and killed (no end record): its end is its last
    // sample, at 3 s.
    let child = {
        let mut i = info(11, Mode::Cpu, 1_500_000_000);
        i.ppid = 10;
        i.argv = vec![];
        let mut r = Rec::new(&i);
        r.w.module(&app_module());
        r.sample(11, 1_000_000, &[at(0x1110)], 1, 0);
        r.sample(11, 3_000_000_000, &[at(0x1110)], 1, 0);
        r.finish()
    };
    bytes.extend_from_slice(&child[prof_format::HEADER_LEN..]);
    let p = read_profile(&bytes).unwrap();
    assert_eq!(p.processes.len(), 2);
    let s = analyze(&p, &mut symbolizer()).summary();
    assert!((s.duration_s - 3.5).abs() < 1e-9, "{}", s.duration_s);
    assert_eq!(s.processes[1].command, APP);
    assert_eq!(s.processes[1].cpu_s, None);
    assert!(!s.processes[1].ended);
    assert!((s.processes[1].duration_s - 3.0).abs() < 1e-9);
    // Only the ended process has CPU time: 2 samples in 0.5 CPU-s.
    assert_eq!(s.samples_per_cpu_s, Some(4.0));
    assert_eq!(s.weight, 4);
    let th: Vec<(u32, u32, u64)> = s
        .threads
        .iter()
        .map(|t| (t.pid, t.tid, t.samples))
        .collect();
    assert_eq!(th, [(10, 10, 2), (11, 11, 2)]);
}

#[test]
fn garbage_profiles_do_not_panic() {
    let info = info(1, Mode::Cpu, u64::MAX);
    let mut p = Process {
        info,
        modules: vec![
            Module {
                id: 1,
                path: "".into(),
                build_id: vec![],
                bias: u64::MAX,
                ranges: vec![(5, 1), (u64::MAX, u64::MAX), (0, u64::MAX)],
            },
            Module {
                id: 1,
                path: "relative/path.so".into(),
                build_id: vec![9; 40],
                bias: 3,
                ranges: vec![(0x100, 0x200)],
            },
            Module {
                id: 7,
                path: "/".into(),
                build_id: vec![],
                bias: 0,
                ranges: vec![(0x300, 0x400)],
            },
            Module {
                id: 8,
                path: "/dev/null".into(),
                build_id: vec![],
                bias: 0,
                ranges: vec![(0x400, 0x500)],
            },
            Module {
                id: 9,
                path: "/proc/self/status".into(),
                build_id: vec![],
                bias: 0,
                ranges: vec![(0x500, 0x600)],
            },
        ],
        unloaded: vec![42, 1],
        threads: vec![(1, "x;y\nz".into())],
        nodes: vec![],
        samples: vec![],
        lost: u64::MAX,
        end: Some(ProcessEnd {
            duration_ns: u64::MAX,
            cpu_user_ns: u64::MAX,
            cpu_system_ns: u64::MAX,
            signals: 0,
        }),
        notices: vec![],
        py_code: vec![],
        frames: vec![],
        marker_names: vec!["m".into()],
        // Ends without begins, a name id past the table, times at the limits.
        marker_events: vec![
            prof_format::MarkerEvent {
                tid: 1,
                time_ns: u64::MAX,
                cpu_ns: u64::MAX,
                name: None,
                duration_ns: None,
            },
            prof_format::MarkerEvent {
                tid: 1,
                time_ns: u64::MAX,
                cpu_ns: 0,
                name: Some(99),
                duration_ns: Some(u64::MAX),
            },
            prof_format::MarkerEvent {
                tid: 2,
                time_ns: 5,
                cpu_ns: 9,
                name: Some(0),
                duration_ns: None,
            },
            prof_format::MarkerEvent {
                tid: 2,
                time_ns: 1,
                cpu_ns: 0,
                name: None,
                duration_ns: None,
            },
        ],
        jit_code: vec![],
        jit_phases: vec![],
    };
    // Nodes: root placeholder missing, parents pointing forward, to themselves, past the end.
    p.nodes = vec![
        Node {
            parent: 3,
            kind: 0,
            value: 0x150,
        },
        Node {
            parent: 1,
            kind: 0,
            value: 0x180,
        },
        Node {
            parent: 99,
            kind: 1,
            value: u64::MAX,
        },
        Node {
            parent: 2,
            kind: 0,
            value: 0x350,
        },
        Node {
            parent: 3,
            kind: 0,
            value: 0x450,
        },
        Node {
            parent: 4,
            kind: 0,
            value: 0x550,
        },
        Node {
            parent: 5,
            kind: 0,
            value: 0,
        },
        Node {
            parent: 6,
            kind: u32::MAX,
            value: 1,
        },
    ];
    for leaf in [0, 1, 2, 3, 4, 5, 6, 7, 8, u32::MAX] {
        p.samples.push(Sample {
            tid: 1,
            time_ns: u64::MAX,
            leaf,
            weight: u32::MAX,
            flags: u32::MAX,
        });
    }
    let profile = Profile {
        version: 1,
        processes: vec![p.clone(), p],
        sources: Vec::new(),
        truncated: true,
    };
    let a = analyze(&profile, &mut Symbolizer::without_debug_dirs());
    let s = a.summary();
    assert_eq!(s.samples, 20);
    assert_eq!(s.weight, 20 * u32::MAX as u64);
    assert_eq!(s.bad_stack_samples, 4);
    assert!(s.profile_truncated);
    let folded = a.collapsed_with(&CollapseOptions {
        process: true,
        thread: true,
    });
    for line in folded.lines() {
        assert!(
            line.rsplit_once(' ').unwrap().1.parse::<u64>().is_ok(),
            "{line}"
        );
    }
    assert!(folded.contains("x:y z (tid 1)"), "{folded}");
    let text = render_text(&s, 10);
    assert!(text.contains("with invalid stacks"), "{text}");
    // Out-of-range accessors are empty, not panics.
    assert!(a.stack(5, 1).is_empty());
    assert!(a.node_frames(0, 1000, true).is_empty());
    assert!(a.leaf_weights(9).is_empty());
    // An empty profile summarizes to zeros.
    let empty = analyze(&Profile::default(), &mut Symbolizer::without_debug_dirs()).summary();
    assert_eq!((empty.samples, empty.weight, empty.duration_s), (0, 0, 0.0));
    assert!(render_text(&empty, 5).contains("(no samples)"));
}

#[test]
fn render_text_shows_header_and_tables() {
    let s = analyze(&basic_profile(), &mut symbolizer()).summary();
    let text = render_text(&s, 2);
    eprintln!("{text}");
    assert!(
        text.starts_with("5.00 s, 1 process, 2 threads: 5 samples (weight 8), 7 lost\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "cpu mode, timer: perf_event cpu-clock, 1000 Hz requested, 2.0 samples per CPU-second"
        ),
        "{text}"
    );
    assert!(
        text.contains("stacks: 1 truncated at the depth limit, 1 stopped unwinding early"),
        "{text}"
    );
    assert!(text.contains("notice: perf_event_open refused"), "{text}");
    let self_table = text.split("Top 2 functions by self").nth(1).unwrap();
    let mut rows = self_table.lines().skip(2);
    // g: self 5 of 8 = 62.5%, total 5.
    let g = rows.next().unwrap();
    assert!(
        g.contains(" 62.5%") && g.contains(" g ") && g.trim_end().ends_with("app"),
        "{g}"
    );
    let f = rows.next().unwrap();
    assert!(
        f.contains(" 25.0%") && f.contains(" 62.5%") && f.contains(" f "),
        "{f}"
    );
    let total_table = text.split("Top 2 functions by total").nth(1).unwrap();
    let main = total_table.lines().nth(2).unwrap();
    assert!(
        main.contains("  0.0%") && main.contains(" 87.5%") && main.contains(" main "),
        "{main}"
    );
}

#[test]
fn node_frames_and_stacks_are_exposed() {
    let p = basic_profile();
    let a = analyze(&p, &mut symbolizer());
    let s = &p.processes[0].samples[0];
    let names: Vec<&str> = a.stack(0, s.leaf).iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["main", "f", "g"]);
    let leaf_frames = a.node_frames(0, s.leaf, true);
    assert_eq!(leaf_frames.len(), 1);
    assert_eq!(a.frame(leaf_frames[0]).name, "g");
    let total: u64 = a.leaf_weights(0).iter().map(|l| l.weight).sum();
    assert_eq!(total, 8);
}

/// 1M samples over 50k distinct nodes: aggregation must stay far below a second in release
/// builds (debug builds get a looser bound).
#[test]
fn aggregation_scales() {
    let mut sym = Symbolizer::without_debug_dirs();
    let syms: Vec<(u64, u64, String)> = (0..1000u64)
        .map(|i| (0x1000 + i * 0x10, 0x10, format!("fn_{i}")))
        .collect();
    sym.add_symbols(APP, APP_ID, syms);
    let mut p = Process {
        info: info(1, Mode::Cpu, 0),
        modules: vec![Module {
            ranges: vec![(BIAS, BIAS + 0x100000)],
            ..app_module()
        }],
        unloaded: vec![],
        threads: vec![],
        nodes: vec![Node {
            parent: 0,
            kind: 0,
            value: 0,
        }],
        samples: Vec::with_capacity(1_000_000),
        lost: 0,
        end: None,
        notices: vec![],
        py_code: vec![],
        frames: vec![],
        marker_names: vec![],
        marker_events: vec![],
        jit_code: vec![],
        jit_phases: vec![],
    };
    // 2000 chains of depth 25.
    let mut leaves = Vec::new();
    let mut x = 12345u64;
    for _ in 0..2000 {
        let mut parent = 0;
        for _ in 0..25 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let f = (x >> 33) % 1000;
            p.nodes.push(Node {
                parent,
                kind: 0,
                value: BIAS + 0x1000 + f * 0x10 + 4,
            });
            parent = p.nodes.len() as u32 - 1;
            leaves.push(parent);
        }
    }
    assert_eq!(p.nodes.len(), 50_001);
    for i in 0..1_000_000u64 {
        let leaf = leaves[(i.wrapping_mul(2654435761) % leaves.len() as u64) as usize];
        p.samples.push(Sample {
            tid: (i % 8) as u32,
            time_ns: i * 1000,
            leaf,
            weight: 1,
            flags: 0,
        });
    }
    let profile = Profile {
        version: 1,
        processes: vec![p],
        sources: Vec::new(),
        truncated: false,
    };
    let t = std::time::Instant::now();
    let a = analyze(&profile, &mut sym);
    let t_analyze = t.elapsed();
    let t = std::time::Instant::now();
    let s = a.summary();
    let folded = a.collapsed();
    let t_report = t.elapsed();
    eprintln!("analyze {t_analyze:?}, summary+collapsed {t_report:?}");
    assert_eq!(s.weight, 1_000_000);
    assert_eq!(s.functions.iter().map(|f| f.self_).sum::<u64>(), 1_000_000);
    assert_eq!(
        folded
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum::<u64>(),
        1_000_000
    );
    let limit = if cfg!(debug_assertions) { 20.0 } else { 1.0 };
    assert!(
        (t_analyze + t_report).as_secs_f64() < limit,
        "{t_analyze:?} + {t_report:?}"
    );
}

#[test]
fn a_module_path_naming_a_fifo_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("not-a-library.so");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo failed");
    let m = Module {
        id: 0,
        path: fifo.display().to_string(),
        build_id: vec![],
        bias: 0,
        ranges: vec![(0x1000, 0x2000)],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sym = Symbolizer::new();
        tx.send(sym.symbolize(&m, 0x1234, false).to_vec()).unwrap();
    });
    let frames = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("symbolizing a FIFO path blocked");
    assert_eq!(frames[0].name, "not-a-library.so+0x1234");
}

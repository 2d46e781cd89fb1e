use prof_format::{
    node_kind, read_profile, LogWriter, Mode, Module, PendingSample, ProcessInfo, Profile,
    TimerSource,
};

use super::*;
use crate::{analyze, Symbolizer};

const APP: &str = "/fake/bin/tree-app";
const APP_ID: &[u8] = &[0x11, 0x22, 0x33, 0x44];
const BIAS: u64 = 0x4000_0000;

fn symbolizer() -> Symbolizer {
    let mut s = Symbolizer::without_debug_dirs();
    s.add_symbols(
        APP,
        APP_ID,
        [
            (0x1000u64, 0x100u64, "main"),
            (0x1100, 0x100, "a"),
            (0x1200, 0x100, "b"),
            (0x1300, 0x100, "c"),
            (0x1400, 0x100, "_PyEval_EvalFrameDefault"),
        ],
    );
    s
}

fn f(name: &str) -> (u32, u64) {
    let off = match name {
        "main" => 0x1000,
        "a" => 0x1100,
        "b" => 0x1200,
        "c" => 0x1300,
        "py" => 0x1400,
        _ => unreachable!(),
    };
    (node_kind::NATIVE, BIAS + off + 0x10)
}

/// One process (pid 7, period 1 ms), threads 1 and 2; samples 1 ms apart:
/// t=0..4  main;a;b  (tid 1)        x5
/// t=5..7  main;a;c  (tid 1)        x3
/// t=8..9  main;c    (tid 2)        x2, the second with weight 3
/// t=10    main;py;a (tid 2)        x1  (interpreter tier)
fn profile() -> Profile {
    let mut w = LogWriter::new(Vec::new());
    w.process(&ProcessInfo {
        pid: 7,
        ppid: 1,
        start_unix_ns: 1_000_000_000,
        period_ns: 1_000_000,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 1000,
        max_depth: 64,
        exe: APP.into(),
        argv: vec!["tree-app".into()],
        agent_version: "test".into(),
    });
    w.module(&Module {
        id: 1,
        path: APP.into(),
        build_id: APP_ID.to_vec(),
        bias: BIAS,
        ranges: vec![(BIAS + 0x1000, BIAS + 0x2000)],
    });
    let mut t = 0u64;
    let mut sample = |w: &mut LogWriter<Vec<u8>>, tid, names: &[&str], weight| {
        let leaf = w.stacks.intern(names.iter().map(|n| f(n)));
        w.samples(
            tid,
            &[PendingSample {
                time_ns: t * 1_000_000,
                leaf,
                weight,
                flags: 0,
            }],
        );
        t += 1;
    };
    for _ in 0..5 {
        sample(&mut w, 1, &["main", "a", "b"], 1);
    }
    for _ in 0..3 {
        sample(&mut w, 1, &["main", "a", "c"], 1);
    }
    sample(&mut w, 2, &["main", "c"], 1);
    sample(&mut w, 2, &["main", "c"], 3);
    sample(&mut w, 2, &["main", "py", "a"], 1);
    read_profile(&w.into_inner().unwrap()).unwrap()
}

fn index() -> ProfileIndex {
    let p = profile();
    let a = analyze(&p, &mut symbolizer());
    ProfileIndex::new(&p, &a)
}

/// The tree as "path weight/total" lines, preorder.
fn lines(t: &CallTree) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for i in 0..t.parent.len() {
        let name = &t.functions[t.func[i] as usize].name;
        let path = if t.parent[i] < 0 {
            name.clone()
        } else {
            format!("{};{}", paths[t.parent[i] as usize], name)
        };
        paths.push(path);
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{p} {}/{}", t.self_[i], t.total_weight[i]))
        .collect()
}

#[test]
fn full_tree_in_preorder_heaviest_first() {
    let idx = index();
    let t = idx
        .tree(&Filter::default(), &TreeOptions::default(), None)
        .unwrap();
    assert_eq!(
        lines(&t),
        [
            "all 0/13",
            "all;main 0/13",
            "all;main;a 0/8",
            "all;main;a;b 5/5",
            "all;main;a;c 3/3",
            "all;main;c 4/4",
            "all;main;_PyEval_EvalFrameDefault 0/1",
            "all;main;_PyEval_EvalFrameDefault;a 1/1",
        ]
    );
    assert_eq!(t.total, 13);
    assert_eq!(t.folded_nodes, 0);
    assert_eq!(t.tiers.len(), t.parent.len() * TIERS);
    // The interpreter sample is classified by the eval-loop frame.
    let interp = tier_index(Tier::Interpreter);
    let native = tier_index(Tier::Native);
    assert_eq!(t.tiers[interp], 1);
    assert_eq!(t.tiers[native], 12);
    assert_eq!(idx.tier_totals()[interp], 1);
}

#[test]
fn filters_by_thread_tier_and_time() {
    let idx = index();
    let opts = TreeOptions::default();
    let t = idx
        .tree(
            &Filter {
                thread: Some(2),
                ..Filter::default()
            },
            &opts,
            None,
        )
        .unwrap();
    assert_eq!(t.total, 5);
    let t = idx
        .tree(
            &Filter {
                tiers: Some(vec![Tier::Interpreter]),
                ..Filter::default()
            },
            &opts,
            None,
        )
        .unwrap();
    assert_eq!(t.total, 1);
    // CPU axis: sample k starts at k ms of CPU, except the one after the weight-3
    // sample; [5 ms, 8 ms) holds the three main;a;c samples.
    let range = Filter {
        from_s: Some(0.005),
        to_s: Some(0.008),
        ..Filter::default()
    };
    let t = idx.tree(&range, &opts, None).unwrap();
    assert_eq!(
        lines(&t)[..3],
        ["all 0/3", "all;main 0/3", "all;main;a 0/3"]
    );
    // The py sample is at 12 ms of CPU time (9 ms + weight 3) but 10 ms of wall time.
    let cpu = Filter {
        from_s: Some(0.012),
        ..Filter::default()
    };
    assert_eq!(idx.tree(&cpu, &opts, None).unwrap().total, 1);
    let wall = Filter {
        from_s: Some(0.010),
        axis: Some(Axis::Wall),
        ..Filter::default()
    };
    assert_eq!(idx.tree(&wall, &opts, None).unwrap().total, 1);
    assert_eq!(
        idx.tree(
            &Filter {
                process: Some(8),
                ..Filter::default()
            },
            &opts,
            None
        )
        .unwrap_err(),
        QueryError::NoProcess(8)
    );
    assert_eq!(
        idx.tree(
            &Filter {
                thread: Some(99),
                ..Filter::default()
            },
            &opts,
            None
        )
        .unwrap_err(),
        QueryError::NoThread(99)
    );
    assert!(matches!(
        idx.tree(
            &Filter {
                from_s: Some(2.0),
                to_s: Some(1.0),
                ..Filter::default()
            },
            &opts,
            None
        ),
        Err(QueryError::BadRange(_))
    ));
}

#[test]
fn focus_and_invert() {
    let idx = index();
    let focus = Filter {
        focus: Some("a".into()),
        ..Filter::default()
    };
    let callees = idx.tree(&focus, &TreeOptions::default(), None).unwrap();
    assert_eq!(
        lines(&callees),
        ["all 0/9", "all;a 1/9", "all;a;b 5/5", "all;a;c 3/3"]
    );
    let callers = idx
        .tree(
            &focus,
            &TreeOptions {
                invert: true,
                ..TreeOptions::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(
        lines(&callers),
        [
            "all 0/9",
            "all;a 0/9",
            "all;a;main 8/8",
            "all;a;_PyEval_EvalFrameDefault 0/1",
            "all;a;_PyEval_EvalFrameDefault;main 1/1",
        ]
    );
    let bottom_up = idx
        .tree(
            &Filter::default(),
            &TreeOptions {
                invert: true,
                ..TreeOptions::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(lines(&bottom_up)[1], "all;c 0/7");
    assert_eq!(
        idx.tree(
            &Filter {
                focus: Some("nope".into()),
                ..Filter::default()
            },
            &TreeOptions::default(),
            None
        )
        .unwrap_err(),
        QueryError::NoFunction("nope".into())
    );
}

#[test]
fn node_budget_folds_into_other_and_keeps_totals() {
    let idx = index();
    for max in 2..=9 {
        let t = idx
            .tree(
                &Filter::default(),
                &TreeOptions {
                    invert: false,
                    max_nodes: max,
                },
                None,
            )
            .unwrap();
        assert!(t.parent.len() <= max, "{max}: {:?}", lines(&t));
        assert_eq!(t.total, 13);
        assert_eq!(
            t.folded_nodes as usize + t.parent.len(),
            8 + count_others(&t)
        );
        // Every node's total is its self plus its children's totals.
        for i in 0..t.parent.len() {
            let kids: u64 = (0..t.parent.len())
                .filter(|&j| t.parent[j] == i as i64)
                .map(|j| t.total_weight[j])
                .sum();
            assert_eq!(
                t.total_weight[i],
                t.self_[i] + kids,
                "{max}: {:?}",
                lines(&t)
            );
            let tier_sum: u64 = t.tiers[i * TIERS..(i + 1) * TIERS].iter().sum();
            assert_eq!(tier_sum, t.total_weight[i]);
        }
    }
    let t = idx
        .tree(
            &Filter::default(),
            &TreeOptions {
                invert: false,
                max_nodes: 5,
            },
            None,
        )
        .unwrap();
    assert_eq!(
        lines(&t),
        [
            "all 0/13",
            "all;main 0/13",
            "all;main;a 0/8",
            "all;main;a;[other] 8/8",
            "all;main;[other] 5/5",
        ]
    );
}

fn count_others(t: &CallTree) -> usize {
    t.func
        .iter()
        .filter(|&&f| t.functions[f as usize].name == OTHER_NAME)
        .count()
}

#[test]
fn search_weight() {
    let idx = index();
    let pred = |f: &Function| f.name == "c";
    let t = idx
        .tree(&Filter::default(), &TreeOptions::default(), Some(&pred))
        .unwrap();
    assert_eq!(t.matched, 7);
}

#[test]
fn timeline_buckets_add_up() {
    let idx = index();
    let tl = idx.timeline(&Filter::default(), 4).unwrap();
    assert_eq!(tl.axis, Axis::Cpu);
    assert_eq!(tl.buckets, 4);
    assert_eq!(tl.counts.len(), 4 * TIERS);
    assert!((tl.end_s - 0.013).abs() < 1e-9, "{}", tl.end_s);
    assert_eq!(tl.counts.iter().sum::<u64>(), 13);
    let interp = tier_index(Tier::Interpreter);
    assert_eq!(tl.counts[3 * TIERS + interp], 1);
    let tl = idx
        .timeline(
            &Filter {
                focus: Some("b".into()),
                from_s: Some(0.0),
                to_s: Some(0.004),
                ..Filter::default()
            },
            2,
        )
        .unwrap();
    assert_eq!(tl.counts.iter().sum::<u64>(), 4);
    assert!((tl.bucket_s - 0.002).abs() < 1e-12);
}

#[test]
fn function_table() {
    let idx = index();
    let rows = idx.functions(&Filter::default()).unwrap();
    let names: Vec<(&str, u64, u64)> = rows
        .iter()
        .map(|r| (r.function.name.as_str(), r.self_, r.total))
        .collect();
    assert_eq!(
        names,
        [
            ("c", 7, 7),
            ("b", 5, 5),
            ("a", 1, 9),
            ("main", 0, 13),
            ("_PyEval_EvalFrameDefault", 0, 1)
        ]
    );
    let a = &rows[2];
    assert_eq!(a.total_tiers[tier_index(Tier::Interpreter)], 1);
    assert_eq!(a.self_tiers[tier_index(Tier::Interpreter)], 1);
}

#[test]
fn empty_and_garbage_profiles() {
    let p = Profile::default();
    let a = analyze(&p, &mut symbolizer());
    let idx = ProfileIndex::new(&p, &a);
    let t = idx
        .tree(&Filter::default(), &TreeOptions::default(), None)
        .unwrap();
    assert_eq!(t.total, 0);
    assert_eq!(t.parent, [-1]);
    let tl = idx.timeline(&Filter::default(), 10).unwrap();
    assert_eq!(tl.counts.iter().sum::<u64>(), 0);
    assert!(idx.functions(&Filter::default()).unwrap().is_empty());
}

#[test]
fn code_only_is_the_plain_view_without_program_frames() {
    let idx = index();
    assert!(!idx.mostly_program_code());
    let hide = Filter {
        native: NativeMode::Hide,
        ..Filter::default()
    };
    let opts = TreeOptions::default();
    assert_eq!(
        lines(&idx.tree(&hide, &opts, None).unwrap()),
        lines(&idx.tree(&Filter::default(), &opts, None).unwrap())
    );
    assert_eq!(
        idx.functions(&hide).unwrap(),
        idx.functions(&Filter::default()).unwrap()
    );
}

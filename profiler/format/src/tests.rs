use super::*;
use crate::write::PendingSample;
use proptest::prelude::*;

fn sample_log() -> (Vec<u8>, usize) {
    let mut w = LogWriter::new(Vec::new());
    w.process(&ProcessInfo {
        pid: 42,
        ppid: 1,
        start_unix_ns: 1_700_000_000_000_000_000,
        period_ns: 1_001_001,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 100_000,
        max_depth: 256,
        exe: "/usr/bin/demo".into(),
        argv: vec!["demo".into(), "--x".into()],
        agent_version: "0.1.0".into(),
    });
    w.module(&Module {
        id: 0,
        path: "/usr/bin/demo".into(),
        build_id: vec![1, 2, 3, 4],
        bias: 0x5555_0000_0000,
        ranges: vec![(0x5555_0000_1000, 0x5555_0000_9000)],
    });
    w.thread(42, "demo");
    w.jit_code(&JitCode {
        start: 0x7f00_0000_1000,
        size: 0x2c0,
        time_ns: 5_000_000,
        source: JitSource::PerfMap,
        name: "JS:*hot /app.js:4:19".into(),
        nodes_before: 0,
    });
    w.jit_phase(&JitPhase {
        start_ns: 1_000,
        end_ns: 3_500,
        name: "jit-tracing".into(),
    });
    let mut n = 0;
    for batch in 0..5u64 {
        if batch == 2 {
            // Code replaced at the same address, after some nodes exist.
            w.jit_code(&JitCode {
                start: 0x7f00_0000_1000,
                size: 0x100,
                time_ns: 40_000_000,
                source: JitSource::PypyLog,
                name: "Loop 1 (f;/a.py:1-2~#4 FOR_ITER)".into(),
                nodes_before: 0,
            });
        }
        let mut ss = Vec::new();
        for i in 0..20u64 {
            let depth = 1 + (i % 4);
            let frames = (0..depth).map(|d| (0u32, 0x5555_0000_1000 + d * 0x40 + (i % 3)));
            let leaf = w.stacks.intern(frames);
            ss.push(PendingSample {
                time_ns: (batch * 20 + i) * 1_000_000,
                leaf,
                weight: 1 + (i % 7 == 0) as u32,
                flags: (i % 11 == 0) as u32,
            });
            n += 1;
        }
        w.samples(42, &ss);
        w.lost(batch);
    }
    // Markers: "request" around "db" on thread 42, an unclosed one on thread 43, and an end
    // whose begin was lost.
    w.marker_name(0, "request");
    w.marker_name(1, "db");
    let ev = |time_ns, cpu_ns, name| MarkerEvent {
        tid: 42,
        time_ns,
        cpu_ns,
        name,
        duration_ns: None,
    };
    w.markers(
        42,
        &[
            ev(10_000_000, 5_000, Some(0)),
            ev(12_000_000, 6_000, Some(1)),
            ev(15_000_000, 9_000, None),
            ev(30_000_000, 25_000, None),
        ],
    );
    let interval = MarkerEvent {
        duration_ns: Some(7_000_000),
        ..ev(41_000_000, 1, Some(1))
    };
    w.markers(
        43,
        &[
            ev(20_000_000, 0, None),
            ev(40_000_000, 1, Some(0)),
            interval,
        ],
    );
    w.end(&ProcessEnd {
        duration_ns: 100_000_000,
        cpu_user_ns: 99,
        cpu_system_ns: 1,
        signals: 100,
    });
    (w.into_inner().unwrap(), n)
}

#[test]
fn roundtrip() {
    let (bytes, n) = sample_log();
    let p = read_profile(&bytes).unwrap();
    assert!(!p.truncated);
    assert_eq!(p.processes.len(), 1);
    let pr = &p.processes[0];
    assert_eq!(pr.info.pid, 42);
    assert_eq!(pr.info.argv, vec!["demo", "--x"]);
    assert_eq!(
        pr.modules[0].ranges,
        vec![(0x5555_0000_1000, 0x5555_0000_9000)]
    );
    assert_eq!(pr.samples.len(), n);
    assert_eq!(pr.lost, 1 + 2 + 3 + 4);
    assert_eq!(pr.end.unwrap().signals, 100);
    assert_eq!(pr.jit_code.len(), 2);
    assert_eq!(pr.jit_code[0].name, "JS:*hot /app.js:4:19");
    assert_eq!(
        (
            pr.jit_code[0].start,
            pr.jit_code[0].size,
            pr.jit_code[0].time_ns
        ),
        (0x7f00_0000_1000, 0x2c0, 5_000_000)
    );
    assert_eq!(pr.jit_code[0].nodes_before, 0);
    assert_eq!(pr.jit_code[1].source, JitSource::PypyLog);
    assert!(pr.jit_code[1].nodes_before > 0);
    // Every distinct stack was interned in the first batch, before the replacement.
    assert_eq!(pr.jit_code[1].nodes_before as usize, pr.nodes.len() - 1);
    assert_eq!(
        pr.jit_phases,
        vec![JitPhase {
            start_ns: 1_000,
            end_ns: 3_500,
            name: "jit-tracing".into()
        }]
    );
    // Stacks decode back to the frames that were interned.
    for (k, s) in pr.samples.iter().enumerate() {
        let i = (k % 20) as u64;
        let depth = 1 + (i % 4);
        let frames: Vec<u64> = pr.stack(s.leaf).map(|n| n.value).collect();
        let want: Vec<u64> = (0..depth)
            .rev()
            .map(|d| 0x5555_0000_1000 + d * 0x40 + (i % 3))
            .collect();
        assert_eq!(frames, want);
        assert_eq!(s.weight, 1 + i.is_multiple_of(7) as u32);
        assert_eq!(s.time_ns, k as u64 * 1_000_000);
    }
}

#[test]
fn markers_pair_innermost_first() {
    let (bytes, _) = sample_log();
    let p = read_profile(&bytes).unwrap();
    let pr = &p.processes[0];
    assert_eq!(pr.marker_names, vec!["request", "db"]);
    assert_eq!(pr.marker_events.len(), 7);
    let m = pr.markers();
    let brief: Vec<_> = m
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.tid,
                m.start_ns,
                m.end_ns,
                m.cpu_ns,
                m.depth,
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            ("request", 42, 10_000_000, Some(30_000_000), Some(20_000), 0),
            ("db", 42, 12_000_000, Some(15_000_000), Some(3_000), 1),
            ("request", 43, 40_000_000, None, None, 0),
            ("db", 43, 41_000_000, Some(48_000_000), None, 0),
        ]
    );
}

#[test]
fn marker_events_naming_an_unknown_name_are_corruption() {
    let mut w = LogWriter::new(Vec::new());
    let (bytes, _) = sample_log();
    let pr = read_profile(&bytes).unwrap().processes.remove(0);
    w.process(&pr.info);
    w.markers(
        1,
        &[MarkerEvent {
            tid: 1,
            time_ns: 0,
            cpu_ns: 0,
            name: Some(0),
            duration_ns: None,
        }],
    );
    let bytes = w.into_inner().unwrap();
    assert!(matches!(read_profile(&bytes), Err(Error::Corrupt { .. })));
    let mut w = LogWriter::new(Vec::new());
    w.process(&pr.info);
    w.marker_name(1, "skips id 0");
    assert!(read_profile(&w.into_inner().unwrap()).is_err());
}

#[test]
fn steady_state_is_a_few_bytes_per_sample() {
    let mut w = LogWriter::new(Vec::new());
    let (bytes0, _) = sample_log();
    let _ = bytes0;
    w.process(&read_profile(&sample_log().0).unwrap().processes[0].info);
    let stacks: Vec<u32> = (0..8u64)
        .map(|k| {
            w.stacks
                .intern((0..20u64).map(|d| (0, 0x5555_0000_0000 + d * 0x100 + k)))
        })
        .collect();
    let before = w.pending();
    for batch in 0..100u64 {
        let ss: Vec<_> = (0..10u64)
            .map(|i| PendingSample {
                time_ns: (batch * 10 + i) * 1_000_000,
                leaf: stacks[((i * 7 + batch) % 8) as usize],
                weight: 1,
                flags: 0,
            })
            .collect();
        w.samples(7, &ss);
    }
    let per = (w.pending() - before) as f64 / 1000.0;
    assert!(per <= 4.0, "{per} bytes/sample");
}

#[test]
fn every_truncation_reads_a_prefix() {
    let (bytes, n) = sample_log();
    let full = read_profile(&bytes).unwrap();
    let boundaries: Vec<usize> = std::iter::once(HEADER_LEN)
        .chain(
            split_records(&bytes)
                .unwrap()
                .records
                .iter()
                .map(|r| r.offset + r.bytes.len()),
        )
        .collect();
    let mut last = 0;
    for cut in 0..bytes.len() {
        match read_profile(&bytes[..cut]) {
            Ok(p) => {
                assert_eq!(p.truncated, !boundaries.contains(&cut), "cut {cut}");
                let got: Vec<Sample> = p.processes.iter().flat_map(|p| p.samples.clone()).collect();
                assert!(got.len() >= last, "samples went backwards at {cut}");
                last = got.len();
                assert_eq!(&got[..], &full.processes[0].samples[..got.len()]);
            }
            Err(Error::TooShort(_)) => assert!(cut < HEADER_LEN),
            Err(e) => panic!("cut at {cut}: {e}"),
        }
    }
    assert_eq!(last, n);
}

#[test]
fn malformed_jit_records_are_corruption() {
    use crate::varint::{put_bytes, put_u64};
    let (good, _) = sample_log();
    let first = split_records(&good).unwrap().records[0].bytes.to_vec();
    let with = |kind: u8, payload: &[u8]| {
        let mut b = good[..HEADER_LEN].to_vec();
        b.extend_from_slice(&first);
        b.push(kind);
        put_u64(&mut b, payload.len() as u64);
        b.extend_from_slice(payload);
        read_profile(&b)
    };
    let mut p = Vec::new();
    put_u64(&mut p, u64::MAX - 1); // start + size overflows
    put_u64(&mut p, 2);
    put_u64(&mut p, 0);
    put_u64(&mut p, 0);
    put_bytes(&mut p, b"x");
    assert!(matches!(
        with(kind::JIT_CODE, &p),
        Err(Error::Corrupt { .. })
    ));
    let mut p = Vec::new();
    for v in [1, 2, 3, 9] {
        put_u64(&mut p, v); // source 9 is unknown
    }
    put_bytes(&mut p, b"x");
    assert!(matches!(
        with(kind::JIT_CODE, &p),
        Err(Error::Corrupt { .. })
    ));
    let mut p = Vec::new();
    put_u64(&mut p, u64::MAX);
    put_u64(&mut p, 5); // end overflows
    put_bytes(&mut p, b"gc-minor");
    assert!(matches!(
        with(kind::JIT_PHASE, &p),
        Err(Error::Corrupt { .. })
    ));
    let mut p = Vec::new();
    put_u64(&mut p, 1);
    put_u64(&mut p, 5);
    put_bytes(&mut p, b"gc-minor");
    p.push(0); // trailing byte
    assert!(matches!(
        with(kind::JIT_PHASE, &p),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn not_a_profile() {
    assert_eq!(
        read_profile(b"hello world, this is text").unwrap_err(),
        Error::BadMagic
    );
    assert_eq!(read_profile(b"").unwrap_err(), Error::TooShort(0));
    let mut b = sample_log().0;
    b[8] = 99;
    assert_eq!(read_profile(&b).unwrap_err(), Error::UnsupportedVersion(99));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&tail);
        let _ = read_profile(&b);
        let _ = read_profile(&tail);
    }

    #[test]
    fn mutated_logs_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (mut b, _) = sample_log();
        for (i, v) in flips {
            let i = HEADER_LEN + i % (b.len() - HEADER_LEN);
            b[i] = v;
        }
        let _ = read_profile(&b);
    }
}

#[test]
fn symbolic_frames_roundtrip() {
    let mut w = LogWriter::new(Vec::new());
    w.process(&ProcessInfo {
        pid: 7,
        ppid: 0,
        start_unix_ns: 0,
        period_ns: 1_000_000,
        mode: Mode::Cpu,
        timer: TimerSource::None,
        time_unit_ns: 1000,
        max_depth: 0,
        exe: "pypy".into(),
        argv: vec![],
        agent_version: "import".into(),
    });
    let frames = [
        SymFrame {
            id: 1,
            tier: tier_hint::INTERPRETER,
            name: "main".into(),
            module: "app.py".into(),
            file: "/src/app.py".into(),
            line: 3,
        },
        SymFrame {
            id: 2,
            tier: tier_hint::JIT,
            name: "fib".into(),
            module: "app.py".into(),
            file: String::new(),
            line: 0,
        },
    ];
    for f in &frames {
        w.frame(f);
    }
    let leaf = w
        .stacks
        .intern([(node_kind::FRAME, 1), (node_kind::FRAME, 2)]);
    w.samples(
        7,
        &[PendingSample {
            time_ns: 5000,
            leaf,
            weight: 3,
            flags: 0,
        }],
    );
    let bytes = w.into_inner().unwrap();
    let p = read_profile(&bytes).unwrap();
    let pr = &p.processes[0];
    assert_eq!(pr.frames, frames);
    let stack: Vec<(u32, u64)> = pr
        .stack(pr.samples[0].leaf)
        .map(|n| (n.kind, n.value))
        .collect();
    assert_eq!(stack, vec![(node_kind::FRAME, 2), (node_kind::FRAME, 1)]);
    // A FRAME record with bytes left over is corrupt.
    let mut bad = LogWriter::new(Vec::new()).into_inner().unwrap();
    let first = split_records(&bytes).unwrap().records[0].bytes.to_vec();
    bad.extend_from_slice(&first);
    bad.extend_from_slice(&[kind::FRAME, 8, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(read_profile(&bad), Err(Error::Corrupt { .. })));
}

#[test]
fn source_records_are_profile_level_and_checked() {
    let (mut bytes, _) = sample_log();
    bytes.extend(source_record("/app/main.py", "print('hi')\nx = 1\n"));
    let p = read_profile(&bytes).unwrap();
    assert_eq!(
        p.sources,
        vec![SourceFile {
            path: "/app/main.py".into(),
            text: "print('hi')\nx = 1\n".into()
        }]
    );
    // A payload with bytes after the text is corruption, not a guess.
    let (mut bad, _) = sample_log();
    let mut rec = source_record("a.py", "x");
    rec[1] += 1;
    rec.push(0);
    bad.extend(rec);
    assert!(matches!(read_profile(&bad), Err(Error::Corrupt { .. })));
}

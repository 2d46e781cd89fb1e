use proptest::prelude::*;

use super::*;
use crate::{analyze, Symbolizer};

fn testdata(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
    std::fs::read_to_string(format!("{path}{name}"))
        .unwrap_or_else(|e| panic!("reading testdata/{name}: {e}"))
}

fn analyze_bytes(bytes: &[u8]) -> (Imported, crate::Analysis) {
    let imp = import_bytes(bytes).unwrap_or_else(|e| panic!("import failed: {e}"));
    let a = analyze(&imp.profile, &mut Symbolizer::without_debug_dirs());
    (imp, a)
}

fn tier_of(a: &crate::Analysis, name: &str) -> TierCountsOf {
    let s = a.summary();
    let f = s
        .functions
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no function {name}: {:?}", s.functions));
    TierCountsOf(f.tiers)
}

struct TierCountsOf(crate::TierCounts);

// ---------------------------------------------------------------- folded stacks

#[test]
fn folded_stacks_round_trip_golden() {
    let input = testdata("folded.txt");
    let (imp, a) = analyze_bytes(input.as_bytes());
    assert_eq!(imp.format, InputFormat::Collapsed);
    assert_eq!(a.collapsed(), testdata("folded.expected"));
    let s = a.summary();
    assert_eq!(s.weight, 10 + 5 + 3 + 7 + 2);
    // `module`function` frames keep their module; `_[j]` and `_[k]` give tiers.
    let memcpy = s.functions.iter().find(|f| f.name == "memcpy").unwrap();
    assert_eq!(memcpy.module, "libc.so.6");
    assert_eq!(tier_of(&a, "hot_jitted").0.jit, 7);
    assert_eq!(tier_of(&a, "do_syscall_64").0.kernel, 2);
    // The log written for it reads back to the same profile.
    let again = prof_format::read_profile(&imp.log).unwrap();
    assert_eq!(again.processes[0].frames, imp.profile.processes[0].frames);
}

#[test]
fn folded_stack_errors_name_the_line() {
    let e = import_bytes(b"main;a 1\nmain;b 2\nmain;c lots\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "folded stacks, line 3: expected a sample count at the end of the line, found \"lots\""
    );
    let e = import_bytes(b"# only comments\n\n").unwrap_err();
    assert!(e.to_string().starts_with("not a prof profile"), "{e}");
    let e = import_bytes(b"main;a 0\n").unwrap_err();
    assert_eq!(e.to_string(), "folded stacks: no samples");
}

#[test]
fn fractional_and_huge_counts() {
    let (_, a) = analyze_bytes(b"a;b 0.4\na;c 2.6\na;d 10000000000\n");
    let s = a.summary();
    assert_eq!(s.weight, 1 + 3 + 10_000_000_000);
    let d = s.functions.iter().find(|f| f.name == "d").unwrap();
    assert_eq!(d.self_, 10_000_000_000);
}

// ---------------------------------------------------------------- perf script

#[test]
fn perf_script_golden() {
    let (imp, a) = analyze_bytes(testdata("perf-script.txt").as_bytes());
    assert_eq!(imp.format, InputFormat::PerfScript);
    assert_eq!(a.collapsed(), testdata("perf-script.expected"));
    let p = &imp.profile.processes[0];
    assert_eq!(
        p.info.period_ns, 1001001,
        "cpu-clock's period is the period"
    );
    assert_eq!(p.threads, vec![(15886, "hot".to_string())]);
    // Times are relative to the first sample, in order.
    let times: Vec<u64> = p.samples.iter().map(|s| s.time_ns).collect();
    assert_eq!(times[0], 0);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(times[1], 999_000);
    let s = a.summary();
    let main = s.functions.iter().find(|f| f.name == "main").unwrap();
    assert_eq!(main.module, "hot");
}

#[test]
fn perf_script_with_pid_tid_and_srclines() {
    let (_, a) = analyze_bytes(testdata("perf-script-srcline.txt").as_bytes());
    let s = a.summary();
    assert_eq!(s.processes.len(), 1);
    assert_eq!(s.processes[0].pid, 15886);
    let main = s.functions.iter().find(|f| f.name == "main").unwrap();
    assert_eq!(
        (main.file.as_deref(), main.line, main.self_),
        (Some("hot.c"), Some(2), 4)
    );
}

#[test]
fn perf_script_processes_kernel_frames_and_inline_frames() {
    let text = "\
# ========
# captured on: today
# ========
Web Content 100/101 [002] 50.000000:     250000 cycles:u:
\tffffffff81000000 do_syscall_64+0x10 ([kernel.kallsyms])
\t7f0000001000 read+0x5 (/usr/lib/libc.so.6)
\t400500 main+0x20 (/opt/app)

Web Content 100/102 [002] 50.000250:     250000 cycles:u:
\t400600 worker(int)+0x8 (/opt/app)
\t400500 main+0x20 (/opt/app)

other 200/200 [001] 50.000300: 250000 cycles:u:\t400700 lonely+0x1 (/opt/other)
";
    let (imp, a) = analyze_bytes(text.as_bytes());
    assert_eq!(imp.profile.processes.len(), 2);
    assert_eq!(
        imp.profile.processes[0].info.period_ns, 0,
        "cycles: no period"
    );
    let s = a.summary();
    assert_eq!(s.threads.len(), 3);
    assert!(s
        .threads
        .iter()
        .any(|t| t.name == "Web Content" && t.tid == 102));
    assert_eq!(tier_of(&a, "do_syscall_64").0.kernel, 1);
    assert!(a.collapsed().contains("main;worker(int) 1\n"));
    assert!(a.collapsed().contains("lonely 1\n"));
}

#[test]
fn perf_script_errors_name_the_line() {
    let text =
        "prog 1 1.000000: 1 cpu-clock:\n\t400500 main+0x20 (/opt/app)\n\tthis is not a frame\n";
    let e = import_bytes(text.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "perf script output, line 3: expected a stack frame `ADDRESS SYMBOL (DSO)`"
    );
}

// ---------------------------------------------------------------- vmprof

/// Builds vmprof logs as vmprof 0.6.0 / PyPy write them (64-bit little-endian).
struct VmLog {
    b: Vec<u8>,
}

impl VmLog {
    fn new(version: u16, mode: u8, interp: &str) -> VmLog {
        let mut v = VmLog { b: Vec::new() };
        for w in [0u64, 3, 0, 1000, 0] {
            v.word(w);
        }
        v.b.push(0x05);
        v.b.extend_from_slice(&version.to_be_bytes());
        v.b.push(mode);
        v.b.push(interp.len() as u8);
        v.b.extend_from_slice(interp.as_bytes());
        v.b.push(0x06);
        v.word(1_700_000_000);
        v.word(250_000);
        v.b.extend_from_slice(&[0; 8]);
        v.b.push(0x07);
        v.string("os");
        v.string("linux");
        v
    }
    fn word(&mut self, w: u64) {
        self.b.extend_from_slice(&w.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.word(s.len() as u64);
        self.b.extend_from_slice(s.as_bytes());
    }
    fn code(&mut self, id: u64, s: &str) {
        self.b.push(0x02);
        self.word(id);
        self.string(s);
    }
    /// `words` innermost first, as in the file.
    fn stack(&mut self, words: &[u64], thread: u64, time: Option<i64>) {
        self.b.push(0x01);
        self.word(1);
        self.word(words.len() as u64);
        for &w in words {
            self.word(w);
        }
        self.word(thread);
        if let Some(t) = time {
            self.word(t as u64);
        }
    }
    fn trailer(&mut self) {
        self.b.push(0x03);
        self.word(1_700_000_002);
        self.word(750_000);
        self.b.extend_from_slice(&[0; 8]);
    }
}

fn cpython_log() -> Vec<u8> {
    let mut v = VmLog::new(7, 0, "cpython");
    v.code(0x1000, "py:<module>:1:/app/run.py");
    v.code(0x2000, "py:main:10:/app/run.py");
    v.code(0x3000, "py:work:20:/app/run.py");
    v.code(0x4001, "n:memcpy:0:-");
    let tid = 0x7f00_1234_5678;
    let mut t = 5_000_000_000i64;
    for i in 0..10 {
        if i == 9 {
            // A native frame inside work, and a 4-period gap before it.
            t += 4_000_000;
            v.stack(&[0x4001, 0x3000, 0x2000, 0x1000], tid, Some(t));
        } else {
            t += 1_000_000;
            v.stack(&[0x3000, 0x2000, 0x1000], tid, Some(t));
        }
    }
    v.stack(&[0x2000, 0x1000], tid, Some(t + 1_000_000));
    v.trailer();
    v.b
}

#[test]
fn vmprof_cpython_log() {
    let (imp, a) = analyze_bytes(&cpython_log());
    assert_eq!(imp.format, InputFormat::Vmprof);
    let p = &imp.profile.processes[0];
    assert_eq!(p.info.period_ns, 1_000_000);
    assert_eq!(p.info.start_unix_ns, 1_700_000_000_250_000_000);
    assert_eq!(p.end.unwrap().duration_ns, 2_500_000_000);
    let s = a.summary();
    // 11 samples; the one after the gap stands for 4 periods.
    assert_eq!((s.samples, s.weight), (11, 14));
    let work = s.functions.iter().find(|f| f.name == "work").unwrap();
    assert_eq!((work.module.as_str(), work.line), ("run.py", Some(20)));
    assert_eq!(work.total, 13);
    assert_eq!(work.self_, 9);
    let memcpy = s.functions.iter().find(|f| f.name == "memcpy").unwrap();
    assert_eq!(memcpy.self_, 4);
    // CPython frames are interpreted code; the native leaf is classified through its caller.
    assert_eq!(s.tiers.interpreter, 14);
    assert_eq!(
        a.collapsed(),
        "<module>;main 1\n<module>;main;work 9\n<module>;main;work;memcpy 4\n"
    );
    assert!(s.notices[0].contains("vmprof log (format version 7, cpython)"));
}

#[test]
fn vmprof_gzipped_and_cut_logs() {
    let raw = cpython_log();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let (imp, a) = analyze_bytes(&gz.finish().unwrap());
    assert_eq!(imp.format, InputFormat::Vmprof);
    assert_eq!(a.summary().weight, 14);
    // Cut in the middle of the last stack record: the whole records before it remain.
    let cut = &raw[..raw.len() - 40];
    let (_, a) = analyze_bytes(cut);
    let s = a.summary();
    assert_eq!(s.samples, 10);
    assert!(s.notices.iter().any(|n| n.contains("ends inside a record")));
}

const CODE: u64 = 1;
const JITTED: u64 = 3;
const ASSEMBLER: u64 = 6;
const GC: u64 = 5;

fn pypy_log(blackhole: bool) -> Vec<u8> {
    let mut v = VmLog::new(6, 0x0c, "pypy");
    v.code(0x10, "py:main:1:/app/loop.py");
    v.code(0x20, "py:hot:5:/app/loop.py");
    v.code(0x30, "py:helper:9:/app/loop.py");
    // Warming up: hot interpreted (3 samples), then JIT-compiled (5 samples, one with an
    // inlined helper), then an interpreted helper called from jitted code, then GC.
    for _ in 0..3 {
        v.stack(&[CODE, 0x20, CODE, 0x10], 0, None);
    }
    for i in 0..5 {
        if i == 2 {
            v.stack(
                &[
                    ASSEMBLER, 0x7f00, JITTED, 0x30, JITTED, 0x20, CODE, 0x20, CODE, 0x10,
                ],
                0,
                None,
            );
        } else {
            v.stack(
                &[ASSEMBLER, 0x7f00, JITTED, 0x20, CODE, 0x20, CODE, 0x10],
                0,
                None,
            );
        }
    }
    v.stack(
        &[
            CODE, 0x30, ASSEMBLER, 0x7f00, JITTED, 0x20, CODE, 0x20, CODE, 0x10,
        ],
        0,
        None,
    );
    v.stack(&[GC, 0, CODE, 0x20, CODE, 0x10], 0, None);
    // hot interpreted again after it was compiled (a bridge not yet compiled).
    v.stack(&[CODE, 0x20, CODE, 0x10], 0, None);
    if blackhole {
        v.stack(&[2, 0, CODE, 0x20, CODE, 0x10], 0, None);
    }
    v.trailer();
    v.b
}

#[test]
fn vmprof_pypy_tags_become_tiers() {
    let (imp, a) = analyze_bytes(&pypy_log(false));
    let s = a.summary();
    assert_eq!(s.samples, 11);
    assert_eq!(s.tiers.jit, 5, "{:?}", s.tiers);
    assert_eq!(
        s.tiers.warmup, 3,
        "hot before it first ran jitted: {:?}",
        s.tiers
    );
    assert_eq!(s.tiers.interpreter, 2, "{:?}", s.tiers);
    assert_eq!(s.tiers.gc, 1, "{:?}", s.tiers);
    // A CODE entry and the JITTED entry of the same code are one frame; ASSEMBLER
    // entries are dropped; direct inlining shows as a call.
    let folded = a.collapsed();
    assert!(folded.contains("main;hot 8\n"), "{folded}");
    assert!(folded.contains("main;hot;helper 2\n"), "{folded}");
    assert!(folded.contains("main;hot;[pypy gc] 1\n"), "{folded}");
    let hot = tier_of(&a, "hot").0;
    assert_eq!((hot.jit, hot.warmup, hot.interpreter), (5, 3, 2));
    assert!(s
        .notices
        .iter()
        .any(|n| n.contains("no tracing or blackhole tags")));
    // The timeline starts with warmup and ends without it.
    let first = &s.timeline.buckets[0].tiers;
    assert!(first.warmup > 0, "{:?}", s.timeline);
    assert_eq!(imp.profile.processes[0].info.exe, "pypy");
}

#[test]
fn vmprof_pypy_blackhole_tags_are_warmup_and_disable_the_guess() {
    let (_, a) = analyze_bytes(&pypy_log(true));
    let s = a.summary();
    assert_eq!(
        s.tiers.warmup, 1,
        "only the blackhole sample: {:?}",
        s.tiers
    );
    assert_eq!(s.tiers.interpreter, 5, "{:?}", s.tiers);
    assert!(!s.notices.iter().any(|n| n.contains("no tracing")));
}

#[test]
fn vmprof_errors_say_where() {
    let mut v = VmLog::new(7, 0, "cpython");
    v.b.push(0x42);
    let e = import_bytes(&v.b).unwrap_err();
    assert!(
        matches!(&e, ImportError::Vmprof { what, .. } if what.contains("unknown record marker 0x42")),
        "{e}"
    );
    let v = VmLog::new(9, 0, "cpython");
    let e = import_bytes(&v.b).unwrap_err().to_string();
    assert!(e.contains("version 9 is newer"), "{e}");
    let v = VmLog::new(7, 0, "cpython");
    assert_eq!(
        import_bytes(&v.b).unwrap_err().to_string(),
        "vmprof log: no samples"
    );
    let e = import_bytes(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
    assert!(e.to_string().starts_with("gzip data:"), "{e}");
}

#[test]
fn a_gzip_bomb_stops_at_the_bound() {
    use std::io::Write;
    // 64 MiB of zeros compress to ~64 KiB; with a 1 MiB bound decompression stops there.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let e = import_bytes_limited(&bomb, 1 << 20).unwrap_err();
    assert_eq!(e, ImportError::GzipTooLarge { limit: 1 << 20 });
    assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
}

// ---------------------------------------------------------------- never panic

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn importers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = import_bytes(&bytes);
    }

    #[test]
    fn vmprof_never_panics_on_damage(
        cut in 0usize..2000,
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8),
        pypy in any::<bool>(),
    ) {
        let mut b = if pypy { pypy_log(false) } else { cpython_log() };
        for (at, v) in flips {
            let n = b.len();
            b[at % n] = v;
        }
        b.truncate(cut.min(b.len()));
        if let Ok(imp) = import_bytes(&b) {
            let _ = analyze(&imp.profile, &mut Symbolizer::without_debug_dirs()).summary();
        }
    }

    #[test]
    fn text_importers_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            "[ -~\t]{0,40}",
            "[a-z ]{1,8} [0-9]{1,6}(/[0-9]{1,6})? (\\[[0-9]{3}\\] )?[0-9]{1,5}\\.[0-9]{1,9}: [0-9]{0,7} [a-z-]{1,9}:[a-zA-Z]{0,4}: ?",
            "\t[0-9a-f]{1,12} [a-zA-Z_+0-9x]{0,20} [(][/a-z.]{0,12}[)]",
            "[a-z;`_\\[\\]]{1,30} [0-9.]{1,8}",
            "  [a-z]{1,5}\\.c:[0-9]{1,4}",
        ],
        0..30,
    )) {
        let text = lines.join("\n");
        if let Ok(imp) = import_bytes(text.as_bytes()) {
            let a = analyze(&imp.profile, &mut Symbolizer::without_debug_dirs());
            let _ = a.summary();
            let _ = a.collapsed();
        }
    }
}

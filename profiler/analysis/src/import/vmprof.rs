//! vmprof logs, as `python -m vmprof` (CPython) and PyPy's built-in `_vmprof` write them
//! (format versions up to 7; vmprof 0.6.0 and PyPy 7.3.11 write 6 and 7).
//!
//! Layout (native word size and byte order, little-endian only): a static header of five
//! words `0, 3, 0, period_us, win64_flag`, then records, each a one-byte marker:
//!
//! | marker | record |
//! |---|---|
//! | `0x05` header | u16 big-endian version, u8 mode flags (version ≥ 4: 1 memory, 2 lines, 4 native, 8 rpython, 16 real time), u8 name length, name (`cpython`, `pypy`) |
//! | `0x06` time | i64 seconds, i64 microseconds, 8 bytes of time zone |
//! | `0x07` meta | string key, string value (a string is a word length, then bytes) |
//! | `0x01` stack | word count, word depth, depth address words (innermost first), address thread id (version ≥ 1), address RSS in kB (memory mode), i64 ns timestamp (version ≥ 7) |
//! | `0x02` code | address id, string `py:name:line:file` |
//! | `0x08` native symbol | address, string `n:symbol:line:file` |
//! | `0x03` trailer | end time as in `0x06` (version ≥ 5); the log ends |
//!
//! CPython stacks hold code object ids, native addresses (odd) and, in lines mode, a
//! negated line number before each frame. PyPy's (RPython mode) hold (kind, value) pairs:
//! CODE 1, BLACKHOLE 2, JITTED 3, JITTING 4, GC 5, ASSEMBLER 6, NATIVE 7. A CODE entry
//! followed by a JITTED entry of the same code is one frame that entered JIT-compiled
//! code; ASSEMBLER entries only mark which piece of machine code ran and are dropped.
//!
//! Tiers (PyPy): JITTED → jit; BLACKHOLE and JITTING → warmup; GC → gc; CODE →
//! interpreter. PyPy 7.3.11 writes no BLACKHOLE or JITTING tags, so when a log has none,
//! interpreted samples of a function taken before that function first ran JIT-compiled
//! are counted as warmup (the time the JIT was still getting to it), and the profile
//! carries a notice saying so. Native frames are classified by the tier rules (PyPy's
//! `MetaInterp`/`blackhole` functions as warmup, its GC as gc). CPython frames are left to
//! the rules like prof's own Python frames (interpreter).
//!
//! Sample weights follow vmprof 0.6.0's reader: from version 7 on, a sample stands for
//! the time since the previous one (process-wide in CPU mode, per thread in real-time
//! mode) divided by the period, at least 1, gaps capped at 1 s; rounded to whole periods.

use std::collections::HashMap;

use prof_format::Mode;

use super::{ImportError, LogBuilder, ProcessDesc};
use crate::tiers::Tier;

const MARKER_STACKTRACE: u8 = 0x01;
const MARKER_VIRTUAL_IP: u8 = 0x02;
const MARKER_TRAILER: u8 = 0x03;
const MARKER_INTERP_NAME: u8 = 0x04;
const MARKER_HEADER: u8 = 0x05;
const MARKER_TIME_N_ZONE: u8 = 0x06;
const MARKER_META: u8 = 0x07;
const MARKER_NATIVE_SYMBOLS: u8 = 0x08;

const PROFILE_MEMORY: u8 = 1;
const PROFILE_LINES: u8 = 2;
const PROFILE_RPYTHON: u8 = 8;
const PROFILE_REAL_TIME: u8 = 16;

const CODE_TAG: u64 = 1;
const BLACKHOLE_TAG: u64 = 2;
const JITTED_TAG: u64 = 3;
const JITTING_TAG: u64 = 4;
const GC_TAG: u64 = 5;
const ASSEMBLER_TAG: u64 = 6;
const NATIVE_TAG: u64 = 7;

/// Newest format version understood.
pub const MAX_VERSION: u16 = 7;
/// Deepest stack accepted (vmprof's own reader's limit).
const MAX_DEPTH: u64 = 1 << 16;
/// Longest sample gap counted (vmprof's DEFAULT_MAX_SAMPLE_GAP).
const MAX_GAP_NS: u64 = 1_000_000_000;

/// Word and address sizes of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    word: usize,
    addr: usize,
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64)
}

/// Word sizes from the static header, if `bytes` start with one.
fn sizes(bytes: &[u8]) -> Option<Sizes> {
    let words = |w: usize| -> Option<[u64; 5]> {
        let b = bytes.get(..5 * w)?;
        let mut out = [0u64; 5];
        for (i, o) in out.iter_mut().enumerate() {
            *o = le(&b[i * w..(i + 1) * w]);
        }
        Some(out)
    };
    if let Some([0, 3, 0, _, 0 | 1]) = words(8) {
        return Some(Sizes { word: 8, addr: 8 });
    }
    if let Some([0, 3, 0, _, flag @ (0 | 1)]) = words(4) {
        let addr = if flag == 1 { 8 } else { 4 };
        return Some(Sizes { word: 4, addr });
    }
    None
}

/// Whether `bytes` start with a vmprof static header.
pub fn looks_like(bytes: &[u8]) -> bool {
    sizes(bytes).is_some()
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    sizes: Sizes,
}

/// A read past the end of the log: the log was cut.
struct Cut;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Cut> {
        let end = self.pos.checked_add(n).ok_or(Cut)?;
        let s = self.b.get(self.pos..end).ok_or(Cut)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Cut> {
        Ok(self.take(1)?[0])
    }
    fn word(&mut self) -> Result<u64, Cut> {
        let n = self.sizes.word;
        self.take(n).map(le)
    }
    fn addr(&mut self) -> Result<u64, Cut> {
        let n = self.sizes.addr;
        self.take(n).map(le)
    }
    fn i64(&mut self) -> Result<i64, Cut> {
        self.take(8).map(|b| le(b) as i64)
    }
}

/// A stack entry, innermost first as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A code object id (CPython) or a CODE entry (PyPy); the line if known.
    Code(u64, u32),
    Jitted(u64),
    Native(u64),
    /// BLACKHOLE, JITTING, GC (kind, value).
    Phase(u64, u64),
}

struct Sample {
    entries: Vec<Entry>,
    thread: u64,
    time_ns: Option<i64>,
    count: u64,
}

#[derive(Default)]
struct Log {
    period_us: u64,
    version: u16,
    mode: u8,
    interp: String,
    meta: Vec<(String, String)>,
    start: Option<(i64, i64)>,
    end: Option<(i64, i64)>,
    ips: HashMap<u64, String>,
    samples: Vec<Sample>,
    /// The log ended inside a record.
    cut: bool,
}

fn corrupt(offset: usize, what: impl Into<String>) -> ImportError {
    ImportError::Vmprof {
        offset,
        what: what.into(),
    }
}

fn string(c: &mut Cursor, at: usize) -> Result<Result<String, Cut>, ImportError> {
    let len = match c.word() {
        Ok(l) => l,
        Err(Cut) => return Ok(Err(Cut)),
    };
    if len > (c.b.len() - c.pos.min(c.b.len())) as u64 {
        // Longer than what is left: a cut log, unless absurd.
        if len > c.b.len() as u64 {
            return Err(corrupt(
                at,
                format!("string length {len} is larger than the log"),
            ));
        }
        return Ok(Err(Cut));
    }
    Ok(c.take(len as usize)
        .map(|b| String::from_utf8_lossy(b).into_owned()))
}

fn parse(bytes: &[u8]) -> Result<Log, ImportError> {
    let sizes = sizes(bytes)
        .ok_or_else(|| corrupt(0, "expected the vmprof header (words 0, 3, 0, period, 0|1)"))?;
    let mut c = Cursor {
        b: bytes,
        pos: 0,
        sizes,
    };
    let mut log = Log::default();
    for i in 0..5 {
        let w = c.word().map_err(|_| corrupt(0, "header cut short"))?;
        if i == 3 {
            log.period_us = w;
        }
    }
    // vmprof refuses intervals of a second or more; anything larger is not a period.
    if log.period_us == 0 || log.period_us >= 1_000_000 {
        return Err(corrupt(
            3 * sizes.word,
            format!(
                "sampling period of {} µs is not a vmprof period",
                log.period_us
            ),
        ));
    }
    let mut seen_header = false;
    loop {
        let at = c.pos;
        let Ok(marker) = c.u8() else {
            break; // no trailer: the process did not stop the profiler cleanly
        };
        let step: Result<bool, Cut> = (|| -> Result<Result<bool, Cut>, ImportError> {
            macro_rules! get {
                ($e:expr) => {
                    match $e {
                        Ok(v) => v,
                        Err(Cut) => return Ok(Err(Cut)),
                    }
                };
            }
            match marker {
                MARKER_HEADER => {
                    if seen_header {
                        return Err(corrupt(at, "a second header record"));
                    }
                    seen_header = true;
                    let v = get!(c.take(2));
                    let version = u16::from_be_bytes([v[0], v[1]]);
                    if version > MAX_VERSION {
                        return Err(corrupt(
                            at,
                            format!(
                                "vmprof format version {version} is newer than this reader knows ({MAX_VERSION})"
                            ),
                        ));
                    }
                    log.version = version;
                    if version >= 4 {
                        log.mode = get!(c.u8());
                    } else if version == 3 {
                        log.mode = PROFILE_MEMORY;
                    }
                    let n = get!(c.u8()) as usize;
                    log.interp = String::from_utf8_lossy(get!(c.take(n))).into_owned();
                    if log.interp == "pypy" {
                        log.mode |= PROFILE_RPYTHON;
                    }
                }
                MARKER_META => {
                    let k = get!(string(&mut c, at)?);
                    let v = get!(string(&mut c, at)?);
                    log.meta.push((k, v));
                }
                MARKER_TIME_N_ZONE | MARKER_TRAILER => {
                    if marker == MARKER_TRAILER && log.version < 5 {
                        return Ok(Ok(false));
                    }
                    let s = get!(c.i64());
                    let us = get!(c.i64());
                    get!(c.take(8));
                    if marker == MARKER_TRAILER {
                        log.end = Some((s, us));
                        return Ok(Ok(false));
                    }
                    log.start = Some((s, us));
                }
                MARKER_VIRTUAL_IP | MARKER_NATIVE_SYMBOLS => {
                    let id = get!(c.addr());
                    let name = get!(string(&mut c, at)?);
                    log.ips.insert(id, name);
                }
                MARKER_STACKTRACE => {
                    if !seen_header {
                        return Err(corrupt(at, "a stack record before the header record"));
                    }
                    let count = get!(c.word());
                    let depth = get!(c.word());
                    if depth > MAX_DEPTH {
                        return Err(corrupt(at, format!("stack depth {depth} is too large")));
                    }
                    let left = (c.b.len() - c.pos) as u64;
                    if depth.saturating_mul(c.sizes.addr as u64) > left {
                        return Ok(Err(Cut));
                    }
                    let mut entries = Vec::with_capacity(depth as usize);
                    if log.mode & PROFILE_RPYTHON != 0 {
                        if depth % 2 != 0 {
                            return Err(corrupt(at, "odd depth in a PyPy (kind, value) stack"));
                        }
                        for _ in 0..depth / 2 {
                            let kind = get!(c.addr());
                            let v = get!(c.addr());
                            entries.push(match kind {
                                CODE_TAG => Entry::Code(v, 0),
                                JITTED_TAG => Entry::Jitted(v),
                                NATIVE_TAG => Entry::Native(v),
                                ASSEMBLER_TAG => continue,
                                BLACKHOLE_TAG | JITTING_TAG | GC_TAG => Entry::Phase(kind, v),
                                k => {
                                    return Err(corrupt(at, format!("unknown stack entry kind {k}")))
                                }
                            });
                        }
                    } else {
                        let lines = log.mode & PROFILE_LINES != 0;
                        let mut pending_line = 0u32;
                        for i in 0..depth {
                            let v = get!(c.addr());
                            if lines && i % 2 == 0 {
                                // A negated line number for the frame that follows.
                                pending_line = u32::try_from((v as i64).unsigned_abs()).unwrap_or(0);
                                continue;
                            }
                            let signed = v as i64;
                            entries.push(if signed > 0 && v & 1 == 1 {
                                Entry::Native(v)
                            } else {
                                Entry::Code(v, pending_line)
                            });
                            pending_line = 0;
                        }
                    }
                    let thread = if log.version >= 1 { get!(c.addr()) } else { 0 };
                    if log.mode & PROFILE_MEMORY != 0 {
                        get!(c.addr());
                    }
                    let time_ns = if log.version >= 7 {
                        Some(get!(c.i64()))
                    } else {
                        None
                    };
                    if count > 0 {
                        log.samples.push(Sample {
                            entries,
                            thread,
                            time_ns,
                            count,
                        });
                    }
                }
                MARKER_INTERP_NAME => {
                    return Err(corrupt(
                        at,
                        "marker 0x04 (interpreter name) of vmprof logs before format version 2 is not supported",
                    ))
                }
                m => return Err(corrupt(at, format!("unknown record marker {m:#04x}"))),
            }
            Ok(Ok(true))
        })()?;
        match step {
            Ok(true) => {}
            Ok(false) => break,
            Err(Cut) => {
                log.cut = true;
                break;
            }
        }
    }
    if !seen_header {
        return Err(corrupt(c.pos, "no header record (0x05) in the log"));
    }
    Ok(log)
}

/// `lang:name:line:file` → (name, line, file).
fn split_ip(s: &str) -> (&str, u32, &str) {
    let mut it = s.splitn(4, ':');
    let _lang = it.next();
    let name = it.next().unwrap_or(s);
    let line = it.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let file = it.next().unwrap_or("");
    (name, line, if file == "-" { "" } else { file })
}

fn basename(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// The frame of a Python code entry.
fn code_frame(
    b: &mut LogBuilder,
    ips: &HashMap<u64, String>,
    id: u64,
    line: u32,
    tier: Option<Tier>,
) -> u32 {
    match ips.get(&id) {
        Some(s) => {
            let (name, first, file) = split_ip(s);
            let module = match basename(file) {
                "" => "[python]",
                m => m,
            };
            b.frame(
                name,
                module,
                file,
                if line > 0 { line } else { first },
                tier,
            )
        }
        None => b.frame(&format!("<code {id:#x}>"), "[python]", "", line, tier),
    }
}

fn native_frame(b: &mut LogBuilder, ips: &HashMap<u64, String>, addr: u64) -> u32 {
    match ips.get(&addr) {
        Some(s) => {
            let (name, line, file) = split_ip(s);
            b.frame(name, "", file, line, None)
        }
        None => b.frame(&format!("{addr:#x}"), "[unknown]", "", 0, None),
    }
}

fn secs_to_ns((s, us): (i64, i64)) -> Option<u64> {
    let s = u64::try_from(s).ok()?;
    let us = u64::try_from(us).ok()?;
    s.checked_mul(1_000_000_000)?
        .checked_add(us.checked_mul(1000)?)
}

/// Converts a vmprof log (not gzipped) into a prof log.
pub fn convert(bytes: &[u8]) -> Result<Vec<u8>, ImportError> {
    let log = parse(bytes)?;
    if log.samples.is_empty() {
        return Err(ImportError::Empty("vmprof log"));
    }
    let rpython = log.mode & PROFILE_RPYTHON != 0;
    let real_time = log.mode & PROFILE_REAL_TIME != 0;
    let period_ns = log.period_us.saturating_mul(1000);
    let start = log.start.and_then(secs_to_ns).unwrap_or(0);
    let argv: Vec<String> = log
        .meta
        .iter()
        .find(|(k, _)| k == "argv")
        .map(|(_, v)| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let interp = if log.interp.is_empty() {
        "python".to_string()
    } else {
        log.interp.clone()
    };

    let mut b = LogBuilder::new();
    b.process(&ProcessDesc {
        pid: 0,
        start_unix_ns: start,
        period_ns,
        mode: if real_time { Mode::Wall } else { Mode::Cpu },
        exe: interp.clone(),
        argv,
        origin: format!("import: vmprof log version {} ({interp})", log.version),
    });
    b.notice(&format!(
        "imported from a vmprof log (format version {}, {interp})",
        log.version
    ));
    if log.cut {
        b.notice("the vmprof log ends inside a record (the profiler was not stopped cleanly); the whole records before it are shown");
    }
    if let (Some(s), Some(e)) = (log.start.and_then(secs_to_ns), log.end.and_then(secs_to_ns)) {
        b.set_duration(e.saturating_sub(s));
    }

    // Threads: vmprof's ids are pthread_t values; small ones are kept, others numbered.
    let mut tids: HashMap<u64, u32> = HashMap::new();
    let mut next_tid = 1u32;
    for s in &log.samples {
        if tids.contains_key(&s.thread) {
            continue;
        }
        let tid = match u32::try_from(s.thread) {
            Ok(t) if !tids.values().any(|&v| v == t) => t,
            _ => {
                while tids.values().any(|&v| v == next_tid) {
                    next_tid += 1;
                }
                next_tid
            }
        };
        tids.insert(s.thread, tid);
        let name = if s.thread == 0 {
            "main".to_string()
        } else {
            format!("thread {:#x}", s.thread)
        };
        b.thread(tid, &name);
    }

    // PyPy without tracing tags: first sample index at which each code ran JIT-compiled.
    let has_phase_tags = log.samples.iter().any(|s| {
        s.entries
            .iter()
            .any(|e| matches!(e, Entry::Phase(BLACKHOLE_TAG | JITTING_TAG, _)))
    });
    let warmup_heuristic = rpython && !has_phase_tags;
    let mut first_jitted: HashMap<u64, usize> = HashMap::new();
    if warmup_heuristic {
        for (i, s) in log.samples.iter().enumerate() {
            for e in &s.entries {
                if let Entry::Jitted(id) = *e {
                    first_jitted.entry(id).or_insert(i);
                }
            }
        }
        b.notice("PyPy's vmprof log has no tracing or blackhole tags (PyPy 7.3.11 writes only CODE, JITTED, ASSEMBLER and NATIVE entries): interpreted samples of a function taken before it first ran JIT-compiled are counted as warmup");
    }

    // Sample times and weights.
    let mut prev: HashMap<u64, i64> = HashMap::new();
    let mut t0: Option<i64> = None;
    let mut ids: Vec<u32> = Vec::new();
    for (i, s) in log.samples.iter().enumerate() {
        let (time_ns, weight) = match s.time_ns {
            Some(t) => {
                let base = *t0.get_or_insert(t);
                let key = if real_time { s.thread } else { 0 };
                let w = match prev.get(&key) {
                    Some(&p) if period_ns > 0 => {
                        let gap = (t.saturating_sub(p)).clamp(0, MAX_GAP_NS as i64) as u64;
                        ((gap as f64 / period_ns as f64).round() as u64).max(1)
                    }
                    _ => 1,
                };
                if !matches!(prev.get(&key), Some(&p) if t <= p) {
                    prev.insert(key, t);
                }
                (t.saturating_sub(base).max(0) as u64, w)
            }
            // Version 6 and older: no timestamps; one period per sample, in file order.
            None => (i as u64 * period_ns, 1),
        };

        // Root first; a CODE entry followed (innermost-wards) by a JITTED entry of the
        // same code is one frame.
        ids.clear();
        let entries: Vec<Entry> = s.entries.iter().rev().copied().collect();
        let innermost_code = entries
            .iter()
            .rposition(|e| !matches!(e, Entry::Native(_)))
            .filter(|&k| matches!(entries[k], Entry::Code(..)));
        let mut k = 0;
        while k < entries.len() {
            let e = entries[k];
            k += 1;
            let id = match e {
                Entry::Code(code, line) => {
                    if let Some(Entry::Jitted(j)) = entries.get(k) {
                        if *j == code {
                            k += 1;
                            ids.push(code_frame(&mut b, &log.ips, code, line, Some(Tier::Jit)));
                            continue;
                        }
                    }
                    let tier = if !rpython {
                        None
                    } else if warmup_heuristic
                        && Some(k - 1) == innermost_code
                        && first_jitted.get(&code).is_some_and(|&f| i < f)
                    {
                        Some(Tier::Warmup)
                    } else {
                        Some(Tier::Interpreter)
                    };
                    code_frame(&mut b, &log.ips, code, line, tier)
                }
                Entry::Jitted(code) => code_frame(&mut b, &log.ips, code, 0, Some(Tier::Jit)),
                Entry::Native(addr) => native_frame(&mut b, &log.ips, addr),
                Entry::Phase(kind, v) => {
                    let (label, tier) = match kind {
                        BLACKHOLE_TAG => ("[pypy blackhole interpreter]", Tier::Warmup),
                        JITTING_TAG => ("[pypy tracing]", Tier::Warmup),
                        _ => ("[pypy gc]", Tier::Gc),
                    };
                    match log.ips.get(&v) {
                        Some(_) => code_frame(&mut b, &log.ips, v, 0, Some(tier)),
                        None => b.frame(label, "[pypy]", "", 0, Some(tier)),
                    }
                }
            };
            ids.push(id);
        }
        let tid = tids.get(&s.thread).copied().unwrap_or(0);
        // vmprof writes a count of 1; a damaged one must not stand for billions.
        let weight = weight.saturating_mul(s.count).min(u32::MAX as u64);
        b.sample(tid, time_ns, &ids, weight);
    }
    Ok(b.finish())
}

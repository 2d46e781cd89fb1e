//! JIT code capture (issue 5): the writer thread tails what runtimes publish about the
//! code they generate, and records it in the log before the samples that may run it.
//!
//! - `/tmp/perf-PID.map` (`START SIZE name` per line): V8 `--perf-basic-prof`, CPython
//!   3.12+ `PYTHONPERFSUPPORT=1`, HotSpot `-XX:+DumpPerfMapAtExit` (written once, at exit,
//!   before the agent's final flush). Read from the last offset, whole lines only.
//! - PyPy's JIT log, when `PYPYLOG` names a file and asks for `jit-backend-addr`: compiled
//!   loops and bridges with their addresses; its `{section ... section}` timestamps (the
//!   CPU's TSC) give the intervals spent tracing, blackhole-interpreting and collecting
//!   garbage, recorded as JIT_PHASE records in the log's clock.
//! - Anonymous executable mappings in `/proc/self/maps` (JIT code no map names), rescanned
//!   every [`ANON_EVERY`], at the first and last write, and as soon as a sample has a
//!   frame in memory that was not executable at the last scan (at most every
//!   [`RESCAN_MIN`]). The writer also finds modules' aliases in the same text
//!   (modules.rs: V8's embedded builtins, mapped again at run time).
//!
//! When an entry covers addresses an earlier entry already covered (code replaced), the
//! stack interner stops reusing nodes at those addresses, so a stack node never stands for
//! two different pieces of code; the reader pairs each node with the entries recorded
//! before it (docs/FORMAT.md).
//!
//! Ordinary Rust on the writer thread; never called from the signal handler.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use prof_format::{JitCode, JitPhase, JitSource, LogWriter};

use crate::{state, sys};

/// How often anonymous executable mappings are looked for.
const ANON_EVERY: Duration = Duration::from_millis(500);
/// The shortest time between two scans asked for by samples in unknown memory.
const RESCAN_MIN: Duration = Duration::from_millis(20);
/// Bytes of a stale map's beginning kept to tell an append from a rewrite.
const PREFIX: usize = 4096;

/// Everything JIT-related the writer thread tails.
pub struct Jit {
    perf_map: Tail,
    pypy_log: Option<Tail>,
    pypy: PypyLog,
    /// [issue 17] PyPy's loops: start -> (end, name), to name the bridges that jump back
    /// into them.
    pypy_loops: BTreeMap<u64, (u64, String)>,
    /// Named code seen so far, start -> end, to notice replacements.
    named: BTreeMap<u64, u64>,
    /// Anonymous executable mappings already recorded.
    anon: HashSet<(u64, u64)>,
    last_anon: Option<Instant>,
    /// Every executable mapping of the last scan, sorted: memory outside them is new.
    exec: Vec<(u64, u64)>,
    /// A sample ran in memory outside `exec`: scan again soon.
    unknown_seen: bool,
    /// The text of `/proc/self/maps` at the last scan, until [`Jit::take_maps`].
    maps: Option<String>,
}

impl Jit {
    pub fn new(pid: i32) -> Jit {
        Jit {
            perf_map: Tail::new(format!("/tmp/perf-{pid}.map")),
            pypy_log: std::env::var("PYPYLOG")
                .ok()
                .and_then(|v| pypylog_path(&v, pid))
                .map(Tail::new),
            pypy: PypyLog::new(),
            pypy_loops: BTreeMap::new(),
            named: BTreeMap::new(),
            anon: HashSet::new(),
            last_anon: None,
            exec: Vec::new(),
            unknown_seen: false,
            maps: None,
        }
    }

    /// Notes the addresses of a sample's native frames: one in memory that was not
    /// executable at the last scan asks for a new scan.
    pub fn note_frames(&mut self, addrs: &[u64]) {
        if self.unknown_seen {
            return;
        }
        let known = |a: u64| {
            let i = self.exec.partition_point(|&(s, _)| s <= a);
            i > 0 && a < self.exec[i - 1].1
        };
        // Return addresses may point just past the end of a mapping (a call as its last
        // instruction): look up address - 1 for those, as symbolization does.
        let mut it = addrs.iter().enumerate();
        self.unknown_seen = it.any(|(i, &a)| a != 0 && !known(if i == 0 { a } else { a - 1 }));
    }

    /// The text of `/proc/self/maps` read by the last scan, once.
    pub fn take_maps(&mut self) -> Option<String> {
        self.maps.take()
    }

    /// Reads what is new and writes it to `log`. `all`: the first or last write of the
    /// process (rescan the mappings whatever the time).
    pub fn poll<W: std::io::Write>(&mut self, log: &mut LogWriter<W>, all: bool) {
        let now = now_ns();
        let mut lines = Vec::new();
        self.perf_map.read_lines(&mut lines);
        for line in &lines {
            if let Some((start, size, name)) = parse_perf_map_line(line) {
                self.named_code(log, start, size, name, JitSource::PerfMap, now);
            }
        }
        if let Some(tail) = &mut self.pypy_log {
            if self.pypy.calibrated() {
                lines.clear();
                tail.read_lines(&mut lines);
                let mut found = Vec::new();
                for line in &lines {
                    self.pypy.line(line, &mut found);
                }
                if all {
                    // The last write: a bridge whose trace never came keeps its bare name.
                    self.pypy.emit_bridge(&mut found);
                }
                for ev in found {
                    match ev {
                        PypyEvent::Code {
                            start,
                            end,
                            name,
                            ops_end,
                        } => {
                            let name = if name.starts_with("Loop") {
                                self.pypy_loops.insert(start, (end, name.clone()));
                                name
                            } else {
                                self.name_bridge(name, start, ops_end)
                            };
                            self.named_code(log, start, end - start, &name, JitSource::PypyLog, now)
                        }
                        PypyEvent::Phase(p) => log.jit_phase(&p),
                    }
                }
            }
        }
        let since = self.last_anon.map(|t| t.elapsed());
        if all
            || since.is_none_or(|t| t >= ANON_EVERY)
            || (self.unknown_seen && since.is_none_or(|t| t >= RESCAN_MIN))
        {
            self.last_anon = Some(Instant::now());
            self.unknown_seen = false;
            self.scan_anon(log, now);
        }
    }

    /// [issue 17] PyPy's log names a bridge only `bridge out of Guard 0x…`. A bridge ends by
    /// jumping back into a loop (just before its operations end): it belongs
    /// to that loop's Python function, so it is named `bridge out of Guard 0x… (f;…)` with
    /// the loop's description. The code is read through the kernel (it may be gone).
    fn name_bridge(&self, name: String, start: u64, ops_end: u64) -> String {
        if name.contains('(') || ops_end <= start {
            return name;
        }
        let from = ops_end.saturating_sub(64).max(start);
        let mut buf = vec![0u8; (ops_end - from) as usize];
        if crate::sys::safe_read(from, &mut buf) != buf.len() {
            return name;
        }
        for k in (0..buf.len().saturating_sub(4)).rev() {
            // `movabs $target, %r11; jmp *%r11` (how PyPy's x86-64 backend jumps between
            // pieces of code), or `jmp rel32`.
            let target = if buf[k..].starts_with(&[0x49, 0xbb])
                && buf.get(k + 10..k + 13) == Some(&[0x41, 0xff, 0xe3])
            {
                let mut t = [0u8; 8];
                t.copy_from_slice(&buf[k + 2..k + 10]);
                u64::from_le_bytes(t)
            } else if buf[k] == 0xe9 {
                let rel = i32::from_le_bytes([buf[k + 1], buf[k + 2], buf[k + 3], buf[k + 4]]);
                (from + k as u64 + 5).wrapping_add(rel as i64 as u64)
            } else {
                continue;
            };
            let hit = self
                .pypy_loops
                .range(..=target)
                .next_back()
                .filter(|(_, (end, _))| target < *end);
            if let Some((_, (_, loop_name))) = hit {
                if let Some(i) = loop_name.find('(') {
                    return format!("{name} {}", &loop_name[i..]);
                }
            }
        }
        name
    }

    /// At exit: node 20 writes a V8 log (`isolate-0xADDR-PID-v8.log`, in its working
    /// directory) whenever `--perf-basic-prof` is on, and NODE_OPTIONS may not carry
    /// `--logfile`. When `prof run` added the flag (`PROF_V8_LOG=remove`) and this
    /// process's command line asked for no V8 log of its own, the file is prof's
    /// by-product: remove it.
    pub fn at_exit(&self) {
        if std::env::var_os("PROF_V8_LOG").is_none_or(|v| v != "remove") {
            return;
        }
        if crate::state::argv()
            .iter()
            .any(|a| a.starts_with("--prof") || a.starts_with("--log") || a.starts_with("--perf"))
        {
            return;
        }
        // SAFETY: getpid cannot fail.
        let suffix = format!("-{}-v8.log", unsafe { libc::getpid() });
        let Ok(dir) = std::fs::read_dir(".") else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with("isolate-0x") || !name.ends_with(&suffix) {
                continue;
            }
            let mut head = [0u8; 10];
            let v8 = File::open(e.path())
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok_and(|()| &head == b"v8-version");
            if v8 {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn named_code<W: std::io::Write>(
        &mut self,
        log: &mut LogWriter<W>,
        start: u64,
        size: u64,
        name: &str,
        source: JitSource,
        now: u64,
    ) {
        let end = start.saturating_add(size.max(1));
        // Entries overlapping [start, end): code that this entry replaces. The map's
        // entries never overlap each other, so scanning down from `end` can stop at the
        // first one that ends before `start`.
        let overlapping: Vec<u64> = self
            .named
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, _)| s)
            .collect();
        if !overlapping.is_empty() {
            for s in overlapping {
                self.named.remove(&s);
            }
            // Return addresses can equal `end` (a call as the last instruction).
            log.stacks.retire_values(start, end);
        }
        self.named.insert(start, end);
        log.jit_code(&JitCode {
            start,
            size: end - start,
            time_ns: now,
            source,
            name: name.to_string(),
            nodes_before: 0,
        });
    }

    fn scan_anon<W: std::io::Write>(&mut self, log: &mut LogWriter<W>, now: u64) {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        self.exec = exec_ranges(&maps);
        for (start, end) in anon_exec_ranges(&maps) {
            if self.anon.insert((start, end)) {
                log.jit_code(&JitCode {
                    start,
                    size: end - start,
                    time_ns: now,
                    source: JitSource::AnonExec,
                    name: String::new(),
                    nodes_before: 0,
                });
            }
        }
        self.maps = Some(maps);
    }
}

fn now_ns() -> u64 {
    sys::monotonic_ns().saturating_sub(state::start_ns())
}

/// `START SIZE name`: hexadecimal start and size, with or without `0x` (V8 writes none,
/// HotSpot writes `0x` and leading zeros), then the name, which may contain spaces.
pub fn parse_perf_map_line(line: &str) -> Option<(u64, u64, &str)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ').unwrap_or((rest, ""));
    let hex = |s: &str| {
        let s = s.strip_prefix("0x").unwrap_or(s);
        u64::from_str_radix(s, 16).ok()
    };
    let start = hex(start)?;
    let size = hex(size)?;
    start.checked_add(size)?;
    Some((start, size, name.trim()))
}

/// The file PyPy writes its log to, if `PYPYLOG` (`CATEGORIES:FILE`) asks for the
/// `jit-backend-addr` section (a category is a prefix of section names) and names a file
/// (`%d` in it is the pid).
pub fn pypylog_path(value: &str, pid: i32) -> Option<String> {
    let (cats, file) = value.split_once(':')?;
    let cats = cats.strip_prefix('+').unwrap_or(cats);
    if file.is_empty() || file == "-" {
        return None;
    }
    if !cats
        .split(',')
        .any(|c| !c.is_empty() && "jit-backend-addr".starts_with(c))
    {
        return None;
    }
    Some(file.replace("%d", &pid.to_string()))
}

/// Anonymous executable mappings (`/proc/PID/maps` lines with `x` permission and no
/// path; `[vdso]` and other bracketed pseudo files are not anonymous code).
pub fn anon_exec_ranges(maps: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // offset, device, inode, then the path if any.
        let path = f.nth(3);
        if path.is_some() || perms.as_bytes().get(2).is_none_or(|&b| b != b'x') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            if a < b {
                out.push((a, b));
            }
        }
    }
    out
}

/// Every executable mapping (`x` permission, file-backed or not), sorted by start.
pub fn exec_ranges(maps: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            if perms.as_bytes().get(2) != Some(&b'x') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    out.sort_unstable();
    out
}

/// A file read incrementally, whole lines only. A file that existed before the process
/// started (a stale map of an earlier process with the same pid) is skipped unless it
/// grows from what it was (appended to); a rewrite (shorter, different beginning, new
/// inode) is read from its start.
struct Tail {
    path: String,
    file: Option<File>,
    ino: u64,
    offset: u64,
    partial: Vec<u8>,
    /// (inode, size, first bytes) of a file already there when tailing began.
    stale: Option<(u64, u64, Vec<u8>)>,
}

impl Tail {
    fn new(path: String) -> Tail {
        let stale = File::open(&path).ok().and_then(|mut f| {
            let md = f.metadata().ok()?;
            let mut prefix = vec![0; PREFIX.min(md.len() as usize)];
            f.read_exact(&mut prefix).ok()?;
            Some((md.ino(), md.len(), prefix))
        });
        Tail {
            path,
            file: None,
            ino: 0,
            offset: 0,
            partial: Vec::new(),
            stale,
        }
    }

    /// Appends the complete lines added since the last call to `out`.
    fn read_lines(&mut self, out: &mut Vec<String>) {
        if self.file.is_none() {
            let Ok(f) = File::open(&self.path) else {
                return;
            };
            self.file = Some(f);
        }
        let Some(f) = &mut self.file else { return };
        let Ok(md) = f.metadata() else { return };
        if let Some((ino, size, prefix)) = &self.stale {
            if md.ino() == *ino && md.len() == *size {
                return; // Untouched: nothing of this process's yet.
            }
            let mut now = vec![0; prefix.len()];
            let appended = md.ino() == *ino
                && md.len() > *size
                && f.seek(SeekFrom::Start(0)).is_ok()
                && f.read_exact(&mut now).is_ok()
                && now == *prefix;
            self.offset = if appended { *size } else { 0 };
            self.ino = md.ino();
            self.stale = None;
        }
        // Replaced by a new file of the same name: reopen and start over.
        if let Ok(path_md) = std::fs::metadata(&self.path) {
            if path_md.ino() != md.ino() {
                if let Ok(nf) = File::open(&self.path) {
                    *f = nf;
                    self.offset = 0;
                    self.partial.clear();
                }
            }
        }
        let Ok(md) = f.metadata() else { return };
        if md.len() < self.offset {
            // Truncated and rewritten in place.
            self.offset = 0;
            self.partial.clear();
        }
        self.ino = md.ino();
        if md.len() == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.take(64 << 20).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        if let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(last + 1);
            for l in self.partial.split(|&b| b == b'\n') {
                if !l.is_empty() {
                    out.push(String::from_utf8_lossy(l).into_owned());
                }
            }
            self.partial = rest;
        }
    }
}

/// What a PyPy log line told.
#[derive(Debug, PartialEq)]
enum PypyEvent {
    /// `ops_end`: for a bridge, where its operations' code ends (its closing jump back into
    /// a loop lies just before), else 0.
    Code {
        start: u64,
        end: u64,
        name: String,
        ops_end: u64,
    },
    Phase(JitPhase),
}

/// PyPy's log sections that are recorded as phases (the outermost one of a nest).
const PYPY_PHASES: [&str; 4] = [
    "jit-tracing",
    "jit-blackhole",
    "gc-minor",
    "gc-collect-step",
];

/// Parser of PyPy's JIT log, and the clock to convert its TSC timestamps.
struct PypyLog {
    /// Open sections: (name, TSC at open).
    open: Vec<(String, u64)>,
    /// The loop or bridge being described: (start, end, name), and where its operations end.
    code: Option<(u64, u64, String)>,
    ops_end: u64,
    /// [issue 17] A bridge waiting for its `jit-log-opt-bridge` section, whose first
    /// outermost `debug_merge_point` names the Python function the bridge belongs to.
    bridge: Option<(u64, u64, String, u64)>,
    /// (TSC, ns since process start) when the agent started and now.
    clock0: (u64, u64),
    clock1: (u64, u64),
}

fn tsc() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

impl PypyLog {
    fn new() -> PypyLog {
        let c = (tsc().unwrap_or(0), now_ns());
        PypyLog {
            open: Vec::new(),
            code: None,
            ops_end: 0,
            bridge: None,
            clock0: c,
            clock1: c,
        }
    }

    /// True once TSC and clock have run apart long enough (5 ms) to convert between them.
    fn calibrated(&mut self) -> bool {
        let Some(t) = tsc() else { return false };
        let now = (t, now_ns());
        if now.1.saturating_sub(self.clock0.1) >= 5_000_000 && now.0 > self.clock0.0 {
            self.clock1 = now;
            true
        } else {
            false
        }
    }

    fn ns(&self, t: u64) -> u64 {
        let (t0, n0) = self.clock0;
        let (t1, n1) = self.clock1;
        let rate = (n1 - n0) as f64 / (t1 - t0) as f64;
        let d = (t as f64 - t0 as f64) * rate;
        (n0 as f64 + d).max(0.0) as u64
    }

    fn line(&mut self, line: &str, out: &mut Vec<PypyEvent>) {
        if let Some(rest) = line.strip_prefix('[') {
            let Some((ts, what)) = rest.split_once("] ") else {
                return;
            };
            let Ok(t) = u64::from_str_radix(ts, 16) else {
                return;
            };
            if let Some(name) = what.strip_prefix('{') {
                let name = name.trim();
                if name != "jit-log-opt-bridge" {
                    self.emit_bridge(out);
                }
                self.open.push((name.to_string(), t));
            } else if let Some(name) = what.trim().strip_suffix('}') {
                let Some(i) = self.open.iter().rposition(|(n, _)| n == name) else {
                    return;
                };
                let (name, t0) = self.open.remove(i);
                self.open.truncate(i);
                if name == "jit-backend-addr" {
                    if let Some((start, end, name)) = self.code.take() {
                        if name.starts_with("bridge") {
                            self.emit_bridge(out);
                            self.bridge = Some((start, end, name, self.ops_end));
                        } else {
                            out.push(PypyEvent::Code {
                                start,
                                end,
                                name,
                                ops_end: 0,
                            });
                        }
                    }
                    return;
                }
                if name == "jit-log-opt-bridge" {
                    self.emit_bridge(out);
                    return;
                }
                let outermost = !self.open.iter().any(|(n, _)| is_phase(n));
                if is_phase(&name) && outermost && t >= t0 {
                    out.push(PypyEvent::Phase(JitPhase {
                        start_ns: self.ns(t0),
                        end_ns: self.ns(t),
                        name,
                    }));
                }
            }
            return;
        }
        let l = line.trim();
        // debug_merge_point(0, 0, 'kernel;/app.py:2-4~#30 LOAD_CONST') in a bridge's
        // optimized trace: depth 0 is the function of the loop the bridge extends.
        if let Some(rest) = l.strip_prefix("debug_merge_point(") {
            let mut args = rest.splitn(3, ", ");
            let (_, depth, repr) = (args.next(), args.next(), args.next());
            if let (Some("0"), Some(repr), Some(b)) = (depth, repr, &mut self.bridge) {
                let repr = repr.trim_end_matches(')').trim_matches('\'');
                if repr.contains(';') {
                    b.2 = format!("{} ({repr})", b.2);
                    self.emit_bridge(out);
                }
            }
            return;
        }
        // Loop 1 (kernel;/app.py:2-4~#12 FOR_ITER) has address 0xA to 0xB (bootstrap 0xC)
        // bridge out of Guard 0xG has address 0xA to 0xB
        if let Some(i) = l.find(" has address ") {
            let what = &l[..i];
            let mut f = l[i + 13..].split_whitespace();
            let a = f.next().and_then(hex);
            let b = f.nth(1).and_then(hex);
            let boot = f.nth(1).map(|s| s.trim_end_matches(')')).and_then(hex);
            if let (Some(a), Some(b)) = (a, b) {
                let start = boot.map_or(a, |c| c.min(a));
                if start < b {
                    self.code = Some((start, b, what.to_string()));
                    self.ops_end = b;
                }
            }
        } else if let Some(e) = l.strip_prefix("end: ").and_then(hex) {
            if let Some(c) = &mut self.code {
                if e > c.0 {
                    c.1 = c.1.max(e);
                }
            }
        }
    }
}

impl PypyLog {
    fn emit_bridge(&mut self, out: &mut Vec<PypyEvent>) {
        if let Some((start, end, name, ops_end)) = self.bridge.take() {
            out.push(PypyEvent::Code {
                start,
                end,
                name,
                ops_end,
            });
        }
    }
}

fn is_phase(name: &str) -> bool {
    PYPY_PHASES.contains(&name)
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_lines() {
        assert_eq!(
            parse_perf_map_line("7f74e77e52c0 2c0 JS:*hotKernel /tmp/js_jit.js:4:19"),
            Some((0x7f74e77e52c0, 0x2c0, "JS:*hotKernel /tmp/js_jit.js:4:19"))
        );
        assert_eq!(
            parse_perf_map_line(
                "0x00007fda6cec7600 0x0000000000000318 int Hot.hotKernel(int, int)"
            ),
            Some((0x7fda6cec7600, 0x318, "int Hot.hotKernel(int, int)"))
        );
        assert_eq!(parse_perf_map_line("garbage"), None);
        assert_eq!(parse_perf_map_line("zz 10 x"), None);
        assert_eq!(parse_perf_map_line("ffffffffffffffff 10 x"), None);
    }

    #[test]
    fn pypylog_setting() {
        assert_eq!(
            pypylog_path("jit-backend-addr:/d/pypy-%d.log", 42).as_deref(),
            Some("/d/pypy-42.log")
        );
        assert_eq!(
            pypylog_path("gc,jit:/d/x", 1).as_deref(),
            Some("/d/x"),
            "the jit category includes jit-backend-addr"
        );
        assert_eq!(pypylog_path("gc-minor:/d/x", 1), None);
        assert_eq!(pypylog_path("jit-backend-addr:-", 1), None);
        assert_eq!(pypylog_path("/just/a/file", 1), None);
    }

    #[test]
    fn anonymous_executable_mappings() {
        let maps = "\
562f6cf41000-562f6cf42000 r-xp 00001000 fe:00 10199043                   /usr/bin/pypy3.9
7fe04165a000-7fe04175a000 rwxp 00000000 00:00 0 
7fe04175a000-7fe04185a000 rw-p 00000000 00:00 0 
7fe0545d7000-7fe0545d9000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        assert_eq!(
            anon_exec_ranges(maps),
            vec![(0x7fe04165a000, 0x7fe04175a000)]
        );
        assert_eq!(
            exec_ranges(maps),
            vec![
                (0x562f6cf41000, 0x562f6cf42000),
                (0x7fe04165a000, 0x7fe04175a000),
                (0x7fe0545d7000, 0x7fe0545d9000),
                (0xffffffffff600000, 0xffffffffff601000)
            ]
        );
        let mut j = Jit::new(0);
        j.exec = exec_ranges(maps);
        j.note_frames(&[0x7fe04165a000, 0x562f6cf42000, 0x7fe04175a000]);
        assert!(!j.unknown_seen, "return addresses may end a mapping");
        j.note_frames(&[0x7fe04175a000]);
        assert!(j.unknown_seen, "a leaf just past a mapping is unknown");
    }

    #[test]
    fn pypy_log_sections() {
        let mut p = PypyLog::new();
        p.clock0 = (0x1000, 0);
        p.clock1 = (0x3000, 0x1000); // 2 ticks per ns (timestamps are hexadecimal)
        let mut out = Vec::new();
        for l in [
            "[1400] {jit-tracing",
            "kernel;/t/loop.py:2-4~#12 FOR_ITER",
            "[1500] {gc-minor",
            "[1600] gc-minor}",
            "[1700] {jit-backend-addr",
            "Loop 1 (kernel;/t/loop.py:2-4~#12 FOR_ITER) has address 0x7f00a5b to 0x7f00c20 (bootstrap 0x7f009d0)",
            "       gc table: 0x7f00950",
            "            end: 0x7f00dd7",
            "[1800] jit-backend-addr}",
            "[2000] jit-tracing}",
            "[2200] {gc-minor",
            "[2204] {gc-minor-walkroots",
            "[2206] gc-minor-walkroots}",
            "[2400] gc-minor}",
            "[2500] {jit-backend-addr",
            "bridge out of Guard 0x7f5805fca020 has address 0x7f00e60 to 0x7f00f70",
            "            end: 0x7f01010",
            "[2600] jit-backend-addr}",
            "[2610] {jit-log-opt-bridge",
            "# bridge out of Guard 0x7f5805fca020 with 44 ops",
            "+62: i9 = int_add_ovf(i6, i7)",
            "debug_merge_point(0, 0, 'kernel;/t/loop.py:2-3~#30 LOAD_CONST')",
            "debug_merge_point(0, 1, 'inner;/t/loop.py:9-9~#0 LOAD_FAST')",
            "[2620] jit-log-opt-bridge}",
            "[2700] {jit-backend-addr",
            "bridge out of Guard 0x7f5805fca0a0 has address 0x7f01100 to 0x7f01200",
            "[2800] jit-backend-addr}",
            "[2900] {gc-minor",
        ] {
            p.line(l, &mut out);
        }
        assert_eq!(
            out,
            vec![
                PypyEvent::Code {
                    start: 0x7f009d0,
                    end: 0x7f00dd7,
                    name: "Loop 1 (kernel;/t/loop.py:2-4~#12 FOR_ITER)".into(),
                    ops_end: 0,
                },
                PypyEvent::Phase(JitPhase {
                    start_ns: 0x200,
                    end_ns: 0x800,
                    name: "jit-tracing".into()
                }),
                PypyEvent::Phase(JitPhase {
                    start_ns: 0x900,
                    end_ns: 0xa00,
                    name: "gc-minor".into()
                }),
                PypyEvent::Code {
                    start: 0x7f00e60,
                    end: 0x7f01010,
                    name:
                        "bridge out of Guard 0x7f5805fca020 (kernel;/t/loop.py:2-3~#30 LOAD_CONST)"
                            .into(),
                    ops_end: 0x7f00f70,
                },
                // No jit-log-opt-bridge section: the writer names it from its jump.
                PypyEvent::Code {
                    start: 0x7f01100,
                    end: 0x7f01200,
                    name: "bridge out of Guard 0x7f5805fca0a0".into(),
                    ops_end: 0x7f01200,
                },
            ]
        );
    }

    #[test]
    fn bridges_are_named_after_the_loop_they_jump_to() {
        crate::sys::set_pid();
        let mut j = Jit::new(0);
        j.pypy_loops.insert(
            0x7000,
            (0x7400, "Loop 3 (kernel;/t/loop.py:6-8~#12 FOR_ITER)".into()),
        );
        // movabs $0x7100, %r11; jmp *%r11; nopw — as a bridge of PyPy 7.3.11 ends.
        let mut code = vec![0x90u8; 40];
        code.extend_from_slice(&[0x49, 0xbb, 0x00, 0x71, 0, 0, 0, 0, 0, 0, 0x41, 0xff, 0xe3]);
        code.extend_from_slice(&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        let start = code.as_ptr() as u64;
        let end = start + code.len() as u64;
        let named = j.name_bridge("bridge out of Guard 0x1".into(), start, end);
        assert_eq!(
            named,
            "bridge out of Guard 0x1 (kernel;/t/loop.py:6-8~#12 FOR_ITER)"
        );
        // A bridge that returns (`finish`) jumps nowhere: its name stays.
        let ret = [0x48u8, 0x81, 0xc4, 0xb8, 0, 0, 0, 0xc3];
        let s = ret.as_ptr() as u64;
        let bare = j.name_bridge("bridge out of Guard 0x2".into(), s, s + ret.len() as u64);
        assert_eq!(bare, "bridge out of Guard 0x2");
    }

    #[test]
    fn tail_reads_whole_lines_and_skips_stale_files() {
        let d = std::env::temp_dir().join(format!("prof-jit-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("perf.map");
        std::fs::write(&p, "1 2 stale\n").unwrap();
        let mut t = Tail::new(p.display().to_string());
        let mut out = Vec::new();
        t.read_lines(&mut out);
        assert!(out.is_empty(), "stale content is skipped");
        // Appended to: only the new lines.
        std::fs::write(&p, "1 2 stale\n3 4 new\n5 6 par").unwrap();
        t.read_lines(&mut out);
        assert_eq!(out, vec!["3 4 new"]);
        out.clear();
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"tial\n").unwrap();
        t.read_lines(&mut out);
        assert_eq!(out, vec!["5 6 partial"]);
        out.clear();
        // Rewritten (shorter): from the start.
        std::fs::write(&p, "7 8 again\n").unwrap();
        t.read_lines(&mut out);
        assert_eq!(out, vec!["7 8 again"]);
        // A stale file rewritten by the process: all of it.
        std::fs::write(&p, "1 2 stale\n").unwrap();
        let mut t = Tail::new(p.display().to_string());
        std::fs::write(&p, "9 a fresh start, longer than before\n").unwrap();
        out.clear();
        t.read_lines(&mut out);
        assert_eq!(out, vec!["9 a fresh start, longer than before"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! `perf script` output: a header line per sample, then its call chain, innermost frame
//! first, one frame per indented line, and a blank line:
//!
//! ```text
//! hot 15886  2769.138403:    1001001 cpu-clock:pppH:
//!                 1172 main+0x39 (/tmp/hot)
//!                2724a __libc_start_call_main+0x7a (/usr/lib/x86_64-linux-gnu/libc.so.6)
//! ```
//!
//! The header is `COMM TID` or `COMM PID/TID` (COMM may contain spaces), an optional
//! `[CPU]`, the timestamp `SECONDS.FRACTION:`, an optional period, and the event name
//! ending in `:`; without `-g` the only frame follows the event on the same line. A frame
//! is `ADDRESS SYMBOL[+0xOFFSET] (DSO)`; a `FILE:LINE` line after a frame (`-F +srcline`)
//! gives its source location. Every sample weighs 1 (as stackcollapse-perf counts them);
//! for the clock events (`cpu-clock`, `task-clock`) the period, in ns, becomes the
//! profile's sampling period. Frames in `[kernel.kallsyms]` are given the kernel tier.

use std::collections::BTreeMap;

use prof_format::Mode;

use super::{ImportError, LogBuilder, ProcessDesc};
use crate::tiers::Tier;

/// A parsed sample header.
#[derive(Debug, Clone, PartialEq)]
struct Header<'a> {
    comm: &'a str,
    pid: Option<u32>,
    tid: u32,
    time_ns: u64,
    period: Option<u64>,
    event: Option<&'a str>,
    /// A frame on the header line itself (no call chain recorded).
    inline_frame: Option<&'a str>,
}

/// A parsed frame line.
#[derive(Debug, Clone, PartialEq)]
struct PerfFrame<'a> {
    name: &'a str,
    dso: &'a str,
}

/// Whether the first non-comment line of `text` is a `perf script` sample header.
pub fn looks_like(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .is_some_and(|l| !l.starts_with(char::is_whitespace) && parse_header(l).is_some())
}

/// `SECONDS.FRACTION:` as ns.
fn parse_time(tok: &str) -> Option<u64> {
    let t = tok.strip_suffix(':')?;
    let (s, frac) = t.split_once('.')?;
    if s.is_empty()
        || frac.is_empty()
        || frac.len() > 9
        || !s.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = s.parse().ok()?;
    let mut ns: u64 = frac.parse().ok()?;
    for _ in frac.len()..9 {
        ns *= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn parse_ids(tok: &str) -> Option<(Option<u32>, u32)> {
    match tok.split_once('/') {
        Some((p, t)) => Some((Some(p.parse().ok()?), t.parse().ok()?)),
        None => Some((None, tok.parse().ok()?)),
    }
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    // Token spans, so the comm (which may hold spaces) and the trailing frame keep their
    // original text.
    let mut toks: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                toks.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        toks.push((s, &line[s..]));
    }
    let ti = toks.iter().position(|(_, t)| parse_time(t).is_some())?;
    let time_ns = parse_time(toks[ti].1)?;
    let mut k = ti.checked_sub(1)?;
    if toks[k].1.starts_with('[') && toks[k].1.ends_with(']') {
        k = k.checked_sub(1)?;
    }
    let (pid, tid) = parse_ids(toks[k].1)?;
    let comm = if k == 0 { "" } else { line[..toks[k].0].trim() };
    let mut j = ti + 1;
    let mut period = None;
    if let Some(p) = toks.get(j).and_then(|(_, t)| t.parse::<u64>().ok()) {
        period = Some(p);
        j += 1;
    }
    let mut event = None;
    if let Some((_, t)) = toks.get(j).filter(|(_, t)| t.ends_with(':')) {
        event = Some(t.trim_end_matches(':'));
        j += 1;
    }
    let inline_frame = toks
        .get(j)
        .map(|&(s, _)| line[s..].trim())
        .filter(|s| !s.is_empty());
    Some(Header {
        comm,
        pid,
        tid,
        time_ns,
        period,
        event,
        inline_frame,
    })
}

/// `ADDRESS SYMBOL[+0xOFF] (DSO)`.
fn parse_frame(line: &str) -> Option<PerfFrame<'_>> {
    let line = line.trim();
    let (addr, rest) = line.split_once(char::is_whitespace)?;
    if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = rest.trim();
    let (sym, dso) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((sym, dso)) => (sym.trim(), dso),
        None if rest.starts_with('(') && rest.ends_with(')') => ("", &rest[1..rest.len() - 1]),
        None => (rest, ""),
    };
    let name = match sym.rsplit_once("+0x") {
        Some((n, off)) if !n.is_empty() && off.bytes().all(|b| b.is_ascii_hexdigit()) => n,
        _ => sym,
    };
    let name = if name.is_empty() { "[unknown]" } else { name };
    Some(PerfFrame { name, dso })
}

/// `FILE:LINE` (a `-F +srcline` line).
fn parse_srcline(line: &str) -> Option<(&str, u32)> {
    let (file, n) = line.trim().rsplit_once(':')?;
    if file.is_empty() || file.contains(char::is_whitespace) {
        return None;
    }
    Some((file, n.parse().ok()?))
}

fn module_of(dso: &str) -> &str {
    if dso.starts_with('[') {
        return dso;
    }
    dso.rsplit('/').next().unwrap_or(dso)
}

struct PendingSample<'a> {
    header: Header<'a>,
    /// (frame, source location), innermost first.
    frames: Vec<(PerfFrame<'a>, Option<(&'a str, u32)>)>,
}

/// Converts `perf script` output into a prof log: one process per pid (or one process
/// for all threads when the output shows thread ids only).
pub fn convert(text: &str) -> Result<Vec<u8>, ImportError> {
    let mut samples: Vec<PendingSample> = Vec::new();
    let mut cur: Option<PendingSample> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| ImportError::PerfScript {
            line: i + 1,
            what: what.to_string(),
        };
        if line.starts_with('#') && cur.is_none() {
            continue;
        }
        if line.trim().is_empty() {
            samples.extend(cur.take());
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            samples.extend(cur.take());
            let header = parse_header(line).ok_or_else(|| {
                err("expected a sample header `COMM [PID/]TID [CPU] SECONDS: [PERIOD] EVENT:`")
            })?;
            let mut frames = Vec::new();
            if let Some(f) = header.inline_frame {
                let f = parse_frame(f)
                    .ok_or_else(|| err("expected `ADDRESS SYMBOL (DSO)` after the event"))?;
                frames.push((f, None));
            }
            cur = Some(PendingSample { header, frames });
            continue;
        }
        let Some(s) = cur.as_mut() else {
            return Err(err("a stack frame before any sample header"));
        };
        if let Some(f) = parse_frame(line) {
            s.frames.push((f, None));
        } else if let (Some(loc), Some(last)) = (parse_srcline(line), s.frames.last_mut()) {
            last.1 = Some(loc);
        } else {
            return Err(err("expected a stack frame `ADDRESS SYMBOL (DSO)`"));
        }
    }
    samples.extend(cur.take());
    if samples.is_empty() {
        return Err(ImportError::Empty("perf script output"));
    }

    // Processes by pid (0: pids not shown), in order of first appearance.
    let mut by_pid: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let pid = s.header.pid.unwrap_or(0);
        by_pid
            .entry(pid)
            .or_insert_with(|| {
                order.push(pid);
                Vec::new()
            })
            .push(i);
    }
    let mut b = LogBuilder::new();
    let mut ids = Vec::new();
    for pid in order {
        let idx = &by_pid[&pid];
        let first = &samples[idx[0]].header;
        let t0 = idx
            .iter()
            .map(|&i| samples[i].header.time_ns)
            .min()
            .unwrap_or(0);
        let clock = first
            .event
            .is_some_and(|e| e.starts_with("cpu-clock") || e.starts_with("task-clock"));
        let period_ns = if clock { first.period.unwrap_or(0) } else { 0 };
        let exe = if first.comm.is_empty() {
            "perf script".to_string()
        } else {
            first.comm.to_string()
        };
        b.process(&ProcessDesc {
            pid,
            start_unix_ns: 0,
            period_ns,
            mode: Mode::Cpu,
            exe,
            argv: Vec::new(),
            origin: format!(
                "import: perf script ({})",
                first.event.unwrap_or("unknown event")
            ),
        });
        let mut named: Vec<u32> = Vec::new();
        for &i in idx {
            let s = &samples[i];
            if !named.contains(&s.header.tid) {
                named.push(s.header.tid);
                b.thread(s.header.tid, s.header.comm);
            }
            ids.clear();
            for (f, loc) in s.frames.iter().rev() {
                let module = module_of(f.dso);
                let tier = (module.starts_with("[kernel") || module.starts_with("[guest.kernel"))
                    .then_some(Tier::Kernel);
                let (file, line) = loc.unwrap_or(("", 0));
                ids.push(b.frame(f.name, module, file, line, tier));
            }
            b.sample(s.header.tid, s.header.time_ns - t0, &ids, 1);
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let h = parse_header("hot 15886  2769.138403:    1001001 cpu-clock:pppH: ").unwrap();
        assert_eq!(h.comm, "hot");
        assert_eq!((h.pid, h.tid), (None, 15886));
        assert_eq!(h.time_ns, 2_769_138_403_000);
        assert_eq!(h.period, Some(1001001));
        assert_eq!(h.event, Some("cpu-clock:pppH"));
        assert_eq!(h.inline_frame, None);
        let h = parse_header(
            "Web Content 12/13 [003] 10.5: 250000 cycles:u:  4005d6 fib+0x16 (/tmp/a out)",
        )
        .unwrap();
        assert_eq!(h.comm, "Web Content");
        assert_eq!((h.pid, h.tid), (Some(12), 13));
        assert_eq!(h.time_ns, 10_500_000_000);
        assert_eq!(h.inline_frame, Some("4005d6 fib+0x16 (/tmp/a out)"));
        assert!(parse_header("hello world").is_none());
        assert!(parse_header("1.5: x").is_none());
    }

    #[test]
    fn frames() {
        let f = parse_frame("\t 2724a __libc_start_call_main+0x7a (/usr/lib/libc.so.6)").unwrap();
        assert_eq!(
            (f.name, f.dso),
            ("__libc_start_call_main", "/usr/lib/libc.so.6")
        );
        let f = parse_frame(" 7f00 std::vector<int>::push_back(int const&)+0x10 (/x/app)").unwrap();
        assert_eq!(f.name, "std::vector<int>::push_back(int const&)");
        let f = parse_frame(" ffffffff [unknown] ([unknown])").unwrap();
        assert_eq!((f.name, f.dso), ("[unknown]", "[unknown]"));
        let f = parse_frame(" 1234 (/tmp/x)").unwrap();
        assert_eq!((f.name, f.dso), ("[unknown]", "/tmp/x"));
        assert!(parse_frame("  hot.c:12").is_none());
        assert_eq!(parse_srcline("  hot.c:12"), Some(("hot.c", 12)));
    }
}

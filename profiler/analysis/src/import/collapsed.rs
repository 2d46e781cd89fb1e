//! Folded ("collapsed") stacks: one line per stack, frames outermost first separated by
//! `;`, then whitespace and a count — the input of flamegraph.pl and inferno, and what
//! `prof report --format collapsed` writes:
//!
//! ```text
//! main;parse;memcpy 12
//! main;compute 30
//! ```
//!
//! Blank lines and `#` comments are skipped. A frame `module`function` (DTrace) is split
//! into its module and name; flamegraph.pl's annotations `_[j]` (JIT-compiled) and `_[k]`
//! (kernel) set the frame's tier, `_[i]` (inlined) and `_[w]` are dropped. Counts may be
//! fractional (rounded; a positive count never rounds to nothing).

use prof_format::Mode;

use super::{ImportError, LogBuilder, ProcessDesc};
use crate::tiers::Tier;

/// Whether the first line of `text` (comments aside) looks like a folded stack.
pub fn looks_like(text: &str) -> bool {
    text.lines()
        .find(|l| !skip(l))
        .is_some_and(|l| parse_line(l).is_ok())
}

fn skip(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// `(stack, count)` of one line.
fn parse_line(line: &str) -> Result<(&str, u64), String> {
    let line = line.trim_end();
    let Some((stack, count)) = line.rsplit_once(|c: char| c.is_whitespace()) else {
        return Err("expected `frame;frame;... COUNT`, found no count".into());
    };
    let stack = stack.trim();
    if stack.is_empty() {
        return Err("expected `frame;frame;... COUNT`, found no frames".into());
    }
    Ok((stack, parse_count(count)?))
}

/// Largest count of one line (2^40: over 30 years of samples at 1 kHz).
pub const MAX_COUNT: u64 = 1 << 40;

fn parse_count(s: &str) -> Result<u64, String> {
    let n = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                let n = f.round() as u64;
                if n == 0 && f > 0.0 {
                    1
                } else {
                    n
                }
            }
            _ => {
                return Err(format!(
                    "expected a sample count at the end of the line, found {:?}",
                    s.chars().take(40).collect::<String>()
                ))
            }
        },
    };
    if n > MAX_COUNT {
        return Err(format!("count {n} is larger than {MAX_COUNT}"));
    }
    Ok(n)
}

/// `(name, module, tier)` of one folded frame.
fn parse_frame(raw: &str) -> (&str, &str, Option<Tier>) {
    let mut name = raw.trim();
    let mut tier = None;
    for (suffix, t) in [
        ("_[j]", Some(Tier::Jit)),
        ("_[k]", Some(Tier::Kernel)),
        ("_[i]", None),
        ("_[w]", None),
    ] {
        if let Some(n) = name.strip_suffix(suffix) {
            name = n;
            tier = t;
            break;
        }
    }
    match name.split_once('`') {
        Some((module, func)) if !module.is_empty() && !func.is_empty() => (func, module, tier),
        _ => (name, "", tier),
    }
}

/// Converts folded stacks into a prof log.
pub fn convert(text: &str) -> Result<Vec<u8>, ImportError> {
    let mut b = LogBuilder::new();
    b.process(&ProcessDesc {
        pid: 0,
        start_unix_ns: 0,
        period_ns: 0,
        mode: Mode::Cpu,
        exe: "folded stacks".into(),
        argv: Vec::new(),
        origin: "import: folded stacks".into(),
    });
    b.thread(0, "");
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if skip(line) {
            continue;
        }
        let (stack, count) =
            parse_line(line).map_err(|what| ImportError::Collapsed { line: i + 1, what })?;
        if count == 0 {
            continue;
        }
        ids.clear();
        for raw in stack.split(';') {
            let (name, module, tier) = parse_frame(raw);
            if name.is_empty() {
                continue;
            }
            ids.push(b.frame(name, module, "", 0, tier));
        }
        b.sample(0, 0, &ids, count);
    }
    if b.sample_count == 0 {
        return Err(ImportError::Empty("folded stacks"));
    }
    Ok(b.finish())
}

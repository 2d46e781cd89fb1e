//! [issue 14] Request markers from programs that cannot call the agent's C ABI without a
//! native add-on (node, Java): `prof run` sets `PROF_MARKER_FILE`, the program appends one
//! line per finished marker, and the lines become MARKER_NAME/MARKERS records of the
//! process that wrote them when the logs are merged.
//!
//! A line: `PID TID START_UNIX_NS END_UNIX_NS NAME` (wall-clock ns since the epoch: node's
//! `process.hrtime.bigint()` is not, `BigInt(Date.now()) * 1000000n` or
//! `performance.timeOrigin + performance.now()` are; Java's `Instant.now()`). Lines under
//! 4 KiB appended with O_APPEND never interleave. Malformed lines are counted and skipped.

use std::collections::HashMap;

use prof_format::{LogWriter, MarkerEvent, HEADER_LEN};

use crate::merge::Section;

/// The file's name in the run's log directory.
pub const FILE_NAME: &str = "markers.txt";

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub pid: u32,
    pub tid: u32,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub name: String,
}

/// Parses the file; returns the good lines and how many were malformed.
pub fn parse(text: &str) -> (Vec<Line>, usize) {
    let mut good = Vec::new();
    let mut bad = 0;
    for raw in text.lines() {
        if raw.trim().is_empty() {
            continue;
        }
        let mut it = raw.splitn(5, ' ');
        let mut num = || it.next().and_then(|v| v.trim().parse::<u64>().ok());
        let (pid, tid, start, end) = (num(), num(), num(), num());
        let name = it.next().map(|n| n.trim_end_matches('\r').to_string());
        match (pid, tid, start, end, name) {
            (Some(pid), Some(tid), Some(s), Some(e), Some(name))
                if pid <= u32::MAX as u64 && tid <= u32::MAX as u64 && e >= s =>
            {
                good.push(Line {
                    pid: pid as u32,
                    tid: tid as u32,
                    start_unix_ns: s,
                    end_unix_ns: e,
                    name: name.chars().take(200).collect(),
                })
            }
            _ => bad += 1,
        }
    }
    (good, bad)
}

/// Appends each line's marker to the section of its process (the image of that pid that
/// was running at the marker's start). Returns how many lines found no section.
pub fn attach(sections: &mut [Section], lines: Vec<Line>) -> usize {
    let mut per_section: HashMap<usize, Vec<Line>> = HashMap::new();
    let mut orphans = 0;
    for l in lines {
        let owner = sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pid == l.pid && s.start_unix_ns <= l.start_unix_ns)
            .max_by_key(|(_, s)| s.start_unix_ns)
            .map(|(i, _)| i);
        match owner {
            Some(i) => per_section.entry(i).or_default().push(l),
            None => orphans += 1,
        }
    }
    for (i, mut lines) in per_section {
        let s = &mut sections[i];
        lines.sort_by_key(|l| (l.tid, l.start_unix_ns));
        let mut w = LogWriter::new(Vec::new());
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut by_tid: Vec<(u32, Vec<MarkerEvent>)> = Vec::new();
        for l in lines {
            let next = (s.marker_names + names.len()) as u32;
            let id = *names.entry(l.name.clone()).or_insert_with(|| {
                w.marker_name(next, &l.name);
                next
            });
            let ev = MarkerEvent {
                tid: l.tid,
                time_ns: l.start_unix_ns - s.start_unix_ns,
                cpu_ns: 0,
                name: Some(id),
                duration_ns: Some(l.end_unix_ns - l.start_unix_ns),
            };
            match by_tid.last_mut() {
                Some((t, v)) if *t == l.tid => v.push(ev),
                _ => by_tid.push((l.tid, vec![ev])),
            }
        }
        s.marker_names += names.len();
        for (tid, events) in &by_tid {
            w.markers(*tid, events);
        }
        if let Ok(bytes) = w.into_inner() {
            s.records.extend_from_slice(&bytes[HEADER_LEN..]);
        }
    }
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_bad_ones_are_counted() {
        let (good, bad) = parse(
            "10 11 1000 3000 GET /a b\n\nnot a line\n10 11 5 4 end before start\n12 12 7 9 x\r\n",
        );
        assert_eq!(bad, 2);
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].name, "GET /a b");
        assert_eq!((good[0].pid, good[0].tid), (10, 11));
        assert_eq!(good[1].name, "x");
    }
}

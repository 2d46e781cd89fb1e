//! Merging the per-process logs the agent wrote into one profile file.
//!
//! The merged file is one header followed by the whole records of every log, log after log
//! in process-start order. Each log starts with its PROCESS record, so its records stay a
//! self-contained process section. A log that is corrupt midway keeps the records before
//! the corruption (and says so in a NOTICE record and on stderr); a log cut inside a record
//! (a killed process) keeps its whole records.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prof_format::{read_profile, split_records, Error as FormatError, LogWriter, HEADER_LEN};

/// One per-process log, validated.
#[derive(Debug)]
pub struct Section {
    pub path: PathBuf,
    pub pid: u32,
    pub start_unix_ns: u64,
    /// The whole records to copy (everything after the header up to the last good record).
    pub records: Vec<u8>,
    /// Why part of the log was dropped, for a NOTICE record.
    pub notice: Option<String>,
}

/// What merging found.
#[derive(Debug, Default)]
pub struct Merged {
    pub bytes: Vec<u8>,
    pub logs: usize,
    /// One-line warnings for the user (logs skipped or cut).
    pub warnings: Vec<String>,
}

/// Reads and validates one log. `Err` carries why the whole log was skipped.
pub fn load_section(path: &Path, bytes: &[u8]) -> Result<Section, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = bytes.len();
    let mut notice = None;
    let profile = loop {
        match read_profile(&bytes[..cut]) {
            Ok(p) => break p,
            Err(FormatError::Corrupt { offset, what }) if offset > HEADER_LEN && offset < cut => {
                notice = Some(format!(
                    "log {name} is corrupt at byte {offset} ({what}); kept the records before it"
                ));
                cut = offset;
            }
            Err(FormatError::Corrupt { offset, what }) => {
                return Err(format!("log {name} is corrupt at byte {offset} ({what})"));
            }
            Err(FormatError::TooShort(0)) => return Err(format!("log {name} is empty")),
            Err(e) => return Err(format!("log {name}: {e}")),
        }
    };
    let Some(first) = profile.processes.first() else {
        return Err(format!("log {name} has no process record"));
    };
    let outcome = split_records(&bytes[..cut]).map_err(|e| format!("log {name}: {e}"))?;
    let end = outcome
        .records
        .last()
        .map(|r| r.offset + r.bytes.len())
        .unwrap_or(HEADER_LEN);
    if outcome.truncated && notice.is_none() {
        notice = Some(format!(
            "log {name} (pid {}) ends inside a record: the process was killed; kept its {} whole records",
            first.info.pid,
            outcome.records.len()
        ));
    }
    Ok(Section {
        path: path.to_path_buf(),
        pid: first.info.pid,
        start_unix_ns: first.info.start_unix_ns,
        records: bytes[HEADER_LEN..end].to_vec(),
        notice,
    })
}

/// Encodes a NOTICE record (kind, length, payload) by the format crate's own writer.
fn notice_record(text: &str) -> Result<Vec<u8>> {
    let mut w = LogWriter::new(Vec::new());
    w.notice(text);
    let mut v = w.into_inner()?;
    Ok(v.split_off(HEADER_LEN))
}

/// The header of a merged file: the same as every log's.
fn header() -> Result<Vec<u8>> {
    Ok(LogWriter::new(Vec::new()).into_inner()?)
}

/// Merges every `*.plog` file in `dir`.
pub fn merge_dir(dir: &Path) -> Result<Merged> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "plog") {
            paths.push(path);
        }
    }
    let mut merged = Merged::default();
    let mut sections = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        match load_section(&path, &bytes) {
            Ok(s) => sections.push(s),
            Err(why) => merged.warnings.push(format!("skipped {why}")),
        }
    }
    merged.bytes = merge_sections(&mut sections, &mut merged.warnings)?;
    merged.logs = sections.len();
    Ok(merged)
}

/// Concatenates sections in process-start order under one header.
pub fn merge_sections(sections: &mut [Section], warnings: &mut Vec<String>) -> Result<Vec<u8>> {
    sections
        .sort_by(|a, b| (a.start_unix_ns, a.pid, &a.path).cmp(&(b.start_unix_ns, b.pid, &b.path)));
    let mut out = header()?;
    for s in sections.iter() {
        out.extend_from_slice(&s.records);
        if let Some(text) = &s.notice {
            out.extend_from_slice(&notice_record(&format!("prof run: {text}"))?);
            warnings.push(text.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prof_format::{Mode, PendingSample, ProcessEnd, ProcessInfo, TimerSource};

    fn log(pid: u32, start: u64, nsamples: u64, end: bool) -> Vec<u8> {
        let mut w = LogWriter::new(Vec::new());
        w.process(&ProcessInfo {
            pid,
            ppid: 1,
            start_unix_ns: start,
            period_ns: 1_001_001,
            mode: Mode::Cpu,
            timer: TimerSource::PerfEvent,
            time_unit_ns: 1000,
            max_depth: 256,
            exe: "/bin/x".into(),
            argv: vec!["x".into()],
            agent_version: "test".into(),
        });
        w.thread(pid, "x");
        let leaf = w.stacks.intern([(0u32, 0x1000u64), (0, 0x2000)]);
        let ss: Vec<_> = (0..nsamples)
            .map(|i| PendingSample {
                time_ns: i * 1_000_000,
                leaf,
                weight: 1,
                flags: 0,
            })
            .collect();
        w.samples(pid, &ss);
        if end {
            w.end(&ProcessEnd::default());
        }
        w.into_inner().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn merges_in_start_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-a.plog", &log(20, 2_000, 3, true));
        write(d.path(), "10-a.plog", &log(10, 1_000, 5, true));
        write(d.path(), "ignored.txt", b"not a log");
        let m = merge_dir(d.path()).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.logs, 2);
        let p = read_profile(&m.bytes).unwrap();
        assert!(!p.truncated);
        let pids: Vec<_> = p.processes.iter().map(|p| p.info.pid).collect();
        assert_eq!(pids, vec![10, 20]);
        assert_eq!(p.processes[0].samples.len(), 5);
        assert_eq!(p.processes[1].samples.len(), 3);
    }

    #[test]
    fn keeps_records_of_a_cut_or_corrupt_log() {
        let d = tempfile::tempdir().unwrap();
        let good = log(10, 1_000, 5, true);
        // Killed mid-record: cut inside the PROCESS_END record.
        write(d.path(), "10-a.plog", &good[..good.len() - 2]);
        // Corrupt: a bad SAMPLES payload after valid PROCESS and THREAD records.
        let mut bad = log(30, 3_000, 4, false);
        let whole = split_records(&bad).unwrap();
        let samples = whole
            .records
            .iter()
            .find(|r| r.kind == prof_format::kind::SAMPLES)
            .unwrap();
        let at = samples.offset + samples.bytes.len() - 1;
        bad[at] = 0xff; // a varint that never ends inside the payload
        write(d.path(), "30-a.plog", &bad);
        write(d.path(), "40-a.plog", b"");
        write(d.path(), "50-a.plog", b"garbage garbage garbage");
        let m = merge_dir(d.path()).unwrap();
        assert_eq!(m.logs, 2);
        assert_eq!(m.warnings.len(), 4, "{:?}", m.warnings);
        let p = read_profile(&m.bytes).unwrap();
        assert_eq!(p.processes.len(), 2);
        assert_eq!(p.processes[0].samples.len(), 5);
        assert!(p.processes[0].end.is_none());
        assert!(p.processes[0].notices[0]
            .text
            .contains("ends inside a record"));
        assert_eq!(p.processes[1].samples.len(), 0);
        assert!(p.processes[1].notices[0].text.contains("corrupt"));
    }

    #[test]
    fn empty_dir_merges_to_nothing() {
        let d = tempfile::tempdir().unwrap();
        let m = merge_dir(d.path()).unwrap();
        assert_eq!(m.logs, 0);
    }
}

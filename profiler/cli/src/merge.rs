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
    pub ppid: u32,
    pub start_unix_ns: u64,
    /// The command line, space-joined.
    pub command: String,
    /// Sample weight × period: the CPU time the samples stand for, ns.
    pub sampled_ns: u64,
    /// CPU time (user + system) from the end record, if the process ended normally.
    pub cpu_ns: Option<u64>,
    /// MARKER_NAME records in the section (marker-file names are numbered after them).
    pub marker_names: usize,
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
    let weight: u64 = first.samples.iter().map(|s| s.weight as u64).sum();
    Ok(Section {
        path: path.to_path_buf(),
        pid: first.info.pid,
        ppid: first.info.ppid,
        start_unix_ns: first.info.start_unix_ns,
        command: first.info.argv.join(" "),
        sampled_ns: weight.saturating_mul(first.info.period_ns),
        cpu_ns: first
            .end
            .map(|e| e.cpu_user_ns.saturating_add(e.cpu_system_ns)),
        marker_names: first.marker_names.len(),
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
    let marker_file = dir.join(crate::marker_file::FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&marker_file) {
        let (lines, bad) = crate::marker_file::parse(&text);
        let orphans = crate::marker_file::attach(&mut sections, lines);
        if bad + orphans > 0 {
            merged.warnings.push(format!(
                "{} of the lines in $PROF_MARKER_FILE were skipped ({bad} malformed, {orphans} from no profiled process); a line is `PID TID START_UNIX_NS END_UNIX_NS NAME`",
                bad + orphans
            ));
        }
    }
    let folded = fold_launchers(&mut sections);
    merged.bytes = merge_sections(&mut sections, &mut merged.warnings)?;
    if let Some(text) = folded {
        // After the first section's records: the notice belongs to the program's process.
        let at = first_section_end(&merged.bytes);
        let rec = notice_record(&format!("prof run: {text}"))?;
        merged.bytes.splice(at..at, rec);
    }
    merged.logs = sections.len();
    Ok(merged)
}

/// A launcher image that did more than this much CPU work of its own before it exec'd is a
/// program in its own right (it worked, then handed over), not a launcher.
const LAUNCHER_MAX_OWN_NS: u64 = 1_000_000_000;
/// A root process that forked one child and used at most this much CPU is its waiting
/// launcher (`sh -c`).
const WAITER_MAX_OWN_NS: u64 = 20_000_000;

/// [issue 14] Folds launchers away: a process image that only exec'd another program
/// (a pyenv shim, `env`, `sh -c`, a virtualenv launcher) and the helper processes it forked
/// before its exec (pyenv's `readlink`, `pyenv-version-name`…) are not processes of the
/// profile: the profile is the program finally run. Returns a one-line notice saying what
/// was folded, when anything was.
pub fn fold_launchers(sections: &mut Vec<Section>) -> Option<String> {
    sections
        .sort_by(|a, b| (a.start_unix_ns, a.pid, &a.path).cmp(&(b.start_unix_ns, b.pid, &b.path)));
    let n = sections.len();
    // The image of the same pid that replaced each section by exec, if any.
    let next_image: Vec<Option<usize>> = (0..n)
        .map(|i| (i + 1..n).find(|&j| sections[j].pid == sections[i].pid))
        .collect();
    let mut fold = vec![false; n];
    for i in 0..n {
        let Some(j) = next_image[i] else { continue };
        if sections[i].sampled_ns > LAUNCHER_MAX_OWN_NS {
            continue;
        }
        fold[i] = true;
        // Children it forked before the exec, and theirs (in start order, so a parent's
        // fate is known before its children's).
        let (pid, until) = (sections[i].pid, sections[j].start_unix_ns);
        let mut helpers = vec![pid];
        for k in i + 1..n {
            let s = &sections[k];
            // The launcher's own children count until its exec; their descendants always.
            let forked_by_launcher = s.ppid == pid && s.start_unix_ns < until;
            let descends = s.ppid != pid && helpers.contains(&s.ppid);
            if s.pid != pid && (forked_by_launcher || descends) {
                fold[k] = true;
                if !helpers.contains(&s.pid) {
                    helpers.push(s.pid);
                }
            }
        }
    }
    // Never fold everything: a run whose every image exec'd keeps its last one.
    if fold.iter().all(|&f| f) {
        return None;
    }
    // A root that only forked the program and waited (`sh -c 'python3 app.py'`, a
    // supervisor shell): next to no CPU of its own and one child left.
    while let Some(root) = (0..n).find(|&i| !fold[i]) {
        let r = &sections[root];
        let light =
            r.sampled_ns <= WAITER_MAX_OWN_NS && r.cpu_ns.is_none_or(|c| c <= WAITER_MAX_OWN_NS);
        let children: Vec<usize> = (root + 1..n)
            .filter(|&k| !fold[k] && sections[k].ppid == r.pid && sections[k].pid != r.pid)
            .collect();
        let others = (root + 1..n).any(|k| !fold[k] && sections[k].pid == r.pid);
        if !light || children.len() != 1 || others {
            break;
        }
        fold[root] = true;
    }
    let count = fold.iter().filter(|&&f| f).count();
    if count == 0 {
        return None;
    }
    let mut pids: Vec<u32> = Vec::new();
    let mut cpu_ns = 0u64;
    let mut first_cmd = None;
    for (s, _) in sections.iter().zip(&fold).filter(|(_, &f)| f) {
        if !pids.contains(&s.pid) {
            pids.push(s.pid);
        }
        cpu_ns = cpu_ns.saturating_add(s.cpu_ns.unwrap_or(s.sampled_ns));
        first_cmd.get_or_insert_with(|| s.command.clone());
    }
    let mut k = 0;
    sections.retain(|_| {
        k += 1;
        !fold[k - 1]
    });
    let program = sections
        .first()
        .map(|s| s.command.clone())
        .unwrap_or_default();
    let first_cmd = first_cmd.unwrap_or_default();
    // A program that re-exec'd itself before doing anything (PyPy does) had no launcher
    // worth a word: nothing of it was sampled and the program is the same.
    if pids.len() == 1 && cpu_ns == 0 && first_cmd == program {
        return None;
    }
    Some(format!(
        "folded away the launcher `{}` ({} process{}, {:.2} s CPU) that started `{}`",
        prof_analysis::clip(&first_cmd, 60),
        pids.len(),
        if pids.len() == 1 { "" } else { "es" },
        cpu_ns as f64 / 1e9,
        prof_analysis::clip(&program, 60),
    ))
}

/// Where the first process section of a merged file ends (its records' end).
fn first_section_end(bytes: &[u8]) -> usize {
    let Ok(outcome) = split_records(bytes) else {
        return bytes.len();
    };
    let mut seen_process = false;
    for r in &outcome.records {
        if r.kind == prof_format::kind::PROCESS {
            if seen_process {
                return r.offset;
            }
            seen_process = true;
        }
    }
    bytes.len()
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

    fn sec(pid: u32, ppid: u32, start: u64, command: &str, sampled_ms: u64) -> Section {
        Section {
            path: PathBuf::from(format!("{pid}-{start}.plog")),
            pid,
            ppid,
            start_unix_ns: start,
            command: command.into(),
            sampled_ns: sampled_ms * 1_000_000,
            cpu_ns: None,
            marker_names: 0,
            records: Vec::new(),
            notice: None,
        }
    }

    fn commands(s: &[Section]) -> Vec<&str> {
        s.iter().map(|s| s.command.as_str()).collect()
    }

    #[test]
    fn a_pyenv_shim_and_its_helpers_fold_into_the_program() {
        let mut s = vec![
            sec(10, 1, 100, "/usr/bin/env bash /shims/python3 app.py", 0),
            sec(10, 1, 110, "bash /shims/python3 app.py", 30),
            sec(11, 10, 120, "bash /shims/python3 app.py", 5), // subshell
            sec(12, 11, 130, "/usr/bin/readlink pyenv", 1),    // its child
            sec(10, 1, 200, "python3.12 app.py", 900),
            sec(13, 10, 300, "python3.12 -c worker", 400), // the program's own child
            sec(14, 12, 301, "late grandchild of a helper", 1),
        ];
        let note = fold_launchers(&mut s).unwrap();
        assert_eq!(
            commands(&s),
            vec!["python3.12 app.py", "python3.12 -c worker"]
        );
        assert!(note.contains("4 processes"), "{note}");
        assert!(note.contains("started `python3.12 app.py`"), "{note}");
    }

    #[test]
    fn a_bare_re_exec_folds_without_a_notice() {
        let mut s = vec![
            sec(60, 1, 100, "pypy3 app.py", 0),
            sec(60, 1, 110, "pypy3 app.py", 900),
        ];
        assert_eq!(fold_launchers(&mut s), None);
        assert_eq!(commands(&s), vec!["pypy3 app.py"]);
    }

    #[test]
    fn sh_c_waiting_for_its_one_child_folds_away() {
        let mut s = vec![
            sec(20, 1, 100, "sh -c python3 app.py", 1),
            sec(21, 20, 110, "python3 app.py", 500),
        ];
        assert!(fold_launchers(&mut s).is_some());
        assert_eq!(commands(&s), vec!["python3 app.py"]);
    }

    #[test]
    fn real_parents_and_programs_that_worked_before_exec_stay() {
        // A shell running two programs: both stay, and so does the shell.
        let mut s = vec![
            sec(30, 1, 100, "sh -c a; b", 1),
            sec(31, 30, 110, "a", 300),
            sec(32, 30, 120, "b", 300),
        ];
        assert!(fold_launchers(&mut s).is_none());
        assert_eq!(s.len(), 3);
        // A program that worked for 2 s and then exec'd itself (a restart) is no launcher.
        let mut s = vec![
            sec(40, 1, 100, "server --old", 2_000),
            sec(40, 1, 200, "server --new", 100),
        ];
        assert!(fold_launchers(&mut s).is_none());
        // A busy parent with one child is no waiter.
        let mut s = vec![
            sec(50, 1, 100, "make", 400),
            sec(51, 50, 110, "cc x.c", 300),
        ];
        assert!(fold_launchers(&mut s).is_none());
    }
}

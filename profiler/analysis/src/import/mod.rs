//! Importers: profiles written by other tools, turned into a prof log (and so into a
//! [`Profile`] that everything downstream reads like one `prof run` wrote).
//!
//! - vmprof logs (`python -m vmprof`, PyPy's built-in `_vmprof`), gzipped or not, with
//!   PyPy's JIT tags mapped to tiers: [`vmprof`];
//! - `perf script` text output: [`perf_script`];
//! - folded ("collapsed") stacks, as flamegraph.pl, inferno and `prof report --format
//!   collapsed` write them: [`collapsed`].
//!
//! [`detect`] tells the formats apart by their bytes, never by a file name, and
//! [`import_bytes`] converts. Importers never panic on any input; an input they cannot
//! read is an [`ImportError`] that says what was expected and where it went wrong.
//!
//! Frames of imported profiles have names, not addresses: they are written as FRAME
//! records (docs/FORMAT.md), which can carry the tier the source itself gave a frame.

pub mod collapsed;
pub mod perf_script;
pub mod vmprof;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use prof_format::{
    node_kind, tier_hint, LogWriter, Mode, PendingSample, Process, ProcessEnd, ProcessInfo,
    Profile, SymFrame, TimerSource,
};

use crate::symbolize::Frame;
use crate::tiers::Tier;

/// The input formats [`detect`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A prof log (`PROFLOG\0` magic).
    Prof,
    /// A vmprof log (CPython's `vmprof` module or PyPy's `_vmprof`), possibly gzipped.
    Vmprof,
    /// The text `perf script` prints.
    PerfScript,
    /// Folded stacks: `main;f;g 42` per line.
    Collapsed,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Prof => "prof log",
            InputFormat::Vmprof => "vmprof log",
            InputFormat::PerfScript => "perf script output",
            InputFormat::Collapsed => "folded stacks",
        }
    }
}

/// Why an input could not be imported.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("not a prof profile, nor a vmprof log, `perf script` output or folded stacks ({0})")]
    Unrecognized(String),
    #[error("corrupt vmprof log at byte {offset}: {what}")]
    Vmprof { offset: usize, what: String },
    #[error("perf script output, line {line}: {what}")]
    PerfScript { line: usize, what: String },
    #[error("folded stacks, line {line}: {what}")]
    Collapsed { line: usize, what: String },
    #[error("gzip data: {0}")]
    Gzip(String),
    /// The gzip data expands past the caller's bound (a gzip bomb is refused, not
    /// expanded: decompression stops at the bound).
    #[error("gzip data expands to more than {limit} bytes, the most accepted")]
    GzipTooLarge { limit: u64 },
    #[error("{0}: no samples")]
    Empty(&'static str),
    #[error("{0}")]
    Format(#[from] prof_format::Error),
}

/// An imported profile.
#[derive(Debug, Clone)]
pub struct Imported {
    pub format: InputFormat,
    pub profile: Profile,
    /// The same profile as prof log bytes (what `read_profile` turned into `profile`),
    /// for storing or uploading.
    pub log: Vec<u8>,
}

/// Largest gzip expansion [`import_bytes`] accepts (a gzip bomb is refused, not
/// expanded); [`import_bytes_limited`] takes another bound.
pub const MAX_GUNZIPPED: u64 = 256 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Which format `bytes` are in, judged from their content. None: none prof can read.
/// Gzipped vmprof logs are recognized from the gzip magic (vmprof is the only gzipped
/// input).
pub fn detect(bytes: &[u8]) -> Option<InputFormat> {
    if bytes.starts_with(prof_format::MAGIC) {
        return Some(InputFormat::Prof);
    }
    if bytes.starts_with(&GZIP_MAGIC) || vmprof::looks_like(bytes) {
        return Some(InputFormat::Vmprof);
    }
    let text = std::str::from_utf8(&bytes[..text_prefix(bytes)]).ok()?;
    if perf_script::looks_like(text) {
        return Some(InputFormat::PerfScript);
    }
    if collapsed::looks_like(text) {
        return Some(InputFormat::Collapsed);
    }
    None
}

/// Length of a prefix of `bytes` (up to 64 KiB) that ends on a character boundary.
fn text_prefix(bytes: &[u8]) -> usize {
    let mut n = bytes.len().min(64 * 1024);
    while n > 0 && n < bytes.len() && (bytes[n] & 0xc0) == 0x80 {
        n -= 1;
    }
    n
}

/// Detects the format of `bytes` and converts them. A prof log is read as is (strictly:
/// corruption is an error).
pub fn import_bytes(bytes: &[u8]) -> Result<Imported, ImportError> {
    import_bytes_limited(bytes, MAX_GUNZIPPED)
}

/// [`import_bytes`] with gzip input expanded to at most `max_gunzipped` bytes: the
/// decompressor's output is counted as it streams and stops one byte past the bound, so
/// memory stays bounded whatever the compression ratio.
pub fn import_bytes_limited(bytes: &[u8], max_gunzipped: u64) -> Result<Imported, ImportError> {
    let format = detect(bytes).ok_or_else(|| ImportError::Unrecognized(describe(bytes)))?;
    let log = match format {
        InputFormat::Prof => bytes.to_vec(),
        InputFormat::Vmprof => {
            if bytes.starts_with(&GZIP_MAGIC) {
                vmprof::convert(&gunzip(bytes, max_gunzipped)?)?
            } else {
                vmprof::convert(bytes)?
            }
        }
        InputFormat::PerfScript => perf_script::convert(&String::from_utf8_lossy(bytes))?,
        InputFormat::Collapsed => collapsed::convert(&String::from_utf8_lossy(bytes))?,
    };
    let profile = prof_format::read_profile(&log)?;
    Ok(Imported {
        format,
        profile,
        log,
    })
}

/// What an unrecognized input starts with, for the error message.
fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the input is empty".into();
    }
    if bytes.starts_with(b"\x7fELF") {
        return "it is an ELF file".into();
    }
    let head = &bytes[..text_prefix(bytes)];
    match std::str::from_utf8(head) {
        Ok(text) => {
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let shown: String = line.chars().take(40).collect();
            format!(
                "text whose first line {shown:?} is neither a `perf script` sample header nor `frame;frame COUNT`"
            )
        }
        Err(_) => "binary data without the prof or vmprof header".into(),
    }
}

fn gunzip(bytes: &[u8], max: u64) -> Result<Vec<u8>, ImportError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ImportError::Gzip(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(ImportError::GzipTooLarge { limit: max });
    }
    Ok(out)
}

/// The frame a FRAME node names (`value`: the FRAME record's id).
pub(crate) fn sym_frame(p: &Process, value: u64) -> Frame {
    match find_frame(p, value) {
        Some(f) => Frame {
            name: f.name.clone(),
            module: f.module.clone(),
            file: (!f.file.is_empty()).then(|| f.file.clone()),
            line: (f.line > 0).then_some(f.line),
            inlined: false,
        },
        None => Frame::bare(format!("[unknown frame {value}]"), ""),
    }
}

fn find_frame(p: &Process, value: u64) -> Option<&SymFrame> {
    // Importers number frames 1, 2, 3... in order; anything else is searched.
    let by_index = usize::try_from(value)
        .ok()
        .and_then(|v| v.checked_sub(1))
        .and_then(|i| p.frames.get(i))
        .filter(|f| f.id as u64 == value);
    by_index.or_else(|| p.frames.iter().find(|f| f.id as u64 == value))
}

/// Whether any FRAME record of the process carries a tier.
pub(crate) fn has_tier_hints(p: &Process) -> bool {
    p.frames.iter().any(|f| hint_tier(f.tier).is_some())
        || p.nodes.iter().any(|n| {
            n.kind == prof_format::node_kind::PYPY || n.kind == prof_format::node_kind::PYPY_JIT
        })
}

/// The tier a FRAME node's record gives, if any.
pub(crate) fn frame_hint(p: &Process, value: u64) -> Option<Tier> {
    find_frame(p, value).and_then(|f| hint_tier(f.tier))
}

/// Tier of a [`tier_hint`] code (None for `NONE` and unknown codes).
pub fn hint_tier(code: u32) -> Option<Tier> {
    match code {
        tier_hint::INTERPRETER => Some(Tier::Interpreter),
        tier_hint::WARMUP => Some(Tier::Warmup),
        tier_hint::JIT => Some(Tier::Jit),
        tier_hint::NATIVE => Some(Tier::Native),
        tier_hint::GC => Some(Tier::Gc),
        tier_hint::KERNEL => Some(Tier::Kernel),
        _ => None,
    }
}

/// The [`tier_hint`] code of a tier.
pub fn tier_code(t: Option<Tier>) -> u32 {
    match t {
        None => tier_hint::NONE,
        Some(Tier::Interpreter) => tier_hint::INTERPRETER,
        Some(Tier::Warmup) => tier_hint::WARMUP,
        Some(Tier::Jit) => tier_hint::JIT,
        Some(Tier::Native) => tier_hint::NATIVE,
        Some(Tier::Gc) => tier_hint::GC,
        Some(Tier::Kernel) => tier_hint::KERNEL,
    }
}

/// A process of an imported profile, as the importers describe it.
#[derive(Debug, Clone)]
pub(crate) struct ProcessDesc {
    pub pid: u32,
    pub start_unix_ns: u64,
    pub period_ns: u64,
    pub mode: Mode,
    pub exe: String,
    pub argv: Vec<String>,
    /// Which importer wrote it (shown where prof shows the agent's version).
    pub origin: String,
}

/// Builds a prof log from symbolic stacks, one process section at a time.
pub(crate) struct LogBuilder {
    w: LogWriter<Vec<u8>>,
    open: bool,
    frames: HashMap<(String, String, String, u32, u32), u32>,
    samples: BTreeMap<u32, Vec<PendingSample>>,
    last_time: u64,
    end_ns: Option<u64>,
    path: Vec<(u32, u64)>,
    pub sample_count: u64,
}

/// Time unit of imported sample times: 1 µs.
const TIME_UNIT_NS: u64 = 1000;

impl LogBuilder {
    pub fn new() -> LogBuilder {
        LogBuilder {
            w: LogWriter::new(Vec::new()),
            open: false,
            frames: HashMap::new(),
            samples: BTreeMap::new(),
            last_time: 0,
            end_ns: None,
            path: Vec::new(),
            sample_count: 0,
        }
    }

    /// Starts a process section (ending the previous one).
    pub fn process(&mut self, d: &ProcessDesc) {
        self.close();
        self.w.stacks.clear();
        self.frames.clear();
        self.w.process(&ProcessInfo {
            pid: d.pid,
            ppid: 0,
            start_unix_ns: d.start_unix_ns,
            period_ns: d.period_ns,
            mode: d.mode,
            timer: TimerSource::None,
            time_unit_ns: TIME_UNIT_NS,
            max_depth: 0,
            exe: d.exe.clone(),
            argv: d.argv.clone(),
            agent_version: d.origin.clone(),
        });
        self.open = true;
        self.last_time = 0;
        self.end_ns = None;
    }

    /// The id of a frame (written as a FRAME record the first time).
    pub fn frame(
        &mut self,
        name: &str,
        module: &str,
        file: &str,
        line: u32,
        tier: Option<Tier>,
    ) -> u32 {
        let tier = tier_code(tier);
        let key = (
            name.to_string(),
            module.to_string(),
            file.to_string(),
            line,
            tier,
        );
        if let Some(&id) = self.frames.get(&key) {
            return id;
        }
        let id = self.frames.len() as u32 + 1;
        self.w.frame(&SymFrame {
            id,
            tier,
            name: key.0.clone(),
            module: key.1.clone(),
            file: key.2.clone(),
            line,
        });
        self.frames.insert(key, id);
        id
    }

    pub fn thread(&mut self, tid: u32, name: &str) {
        self.w.thread(tid, name);
    }

    pub fn notice(&mut self, text: &str) {
        self.w.notice(text);
    }

    /// The process ran this long (else: until its last sample).
    pub fn set_duration(&mut self, ns: u64) {
        self.end_ns = Some(ns);
    }

    /// One sample: frame ids root first, `time_ns` since the process start. A weight over
    /// `u32::MAX` becomes several samples (importers bound it: folded stacks at 2^40).
    pub fn sample(&mut self, tid: u32, time_ns: u64, root_first: &[u32], weight: u64) {
        self.path.clear();
        self.path
            .extend(root_first.iter().map(|&id| (node_kind::FRAME, id as u64)));
        let leaf = self.w.stacks.intern(self.path.iter().copied());
        self.last_time = self.last_time.max(time_ns);
        let list = self.samples.entry(tid).or_default();
        let mut left = weight.max(1);
        while left > 0 {
            let w = left.min(u32::MAX as u64);
            left -= w;
            list.push(PendingSample {
                time_ns,
                leaf,
                weight: w as u32,
                flags: 0,
            });
            self.sample_count += 1;
        }
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        for (tid, mut list) in std::mem::take(&mut self.samples) {
            list.sort_by_key(|s| s.time_ns);
            for chunk in list.chunks(4096) {
                self.w.samples(tid, chunk);
            }
        }
        let duration_ns = self.end_ns.unwrap_or(self.last_time).max(self.last_time);
        self.w.end(&ProcessEnd {
            duration_ns,
            cpu_user_ns: 0,
            cpu_system_ns: 0,
            signals: 0,
        });
        self.open = false;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.close();
        self.w.into_inner().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;

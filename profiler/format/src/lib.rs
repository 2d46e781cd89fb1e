//! The prof log: a versioned header followed by length-prefixed records.
//!
//! The byte-level specification is docs/FORMAT.md; this crate is its reference
//! implementation. [`LogWriter`] streams records (the agent's writer thread uses it),
//! [`read_profile`] decodes a whole file into a [`Profile`] and never panics: a file cut
//! anywhere yields every whole record before the cut, and corrupt bytes yield an error.

pub mod pyline;
mod read;
mod varint;
mod write;

pub use read::{read_profile, split_records, Process, Profile, RawRecord, ReadOutcome};
pub use write::{source_record, LogWriter, PendingSample, StackInterner};

/// The 8 bytes every prof log starts with.
pub const MAGIC: &[u8; 8] = b"PROFLOG\0";
/// The format version this crate writes. Readers accept versions up to this one.
pub const VERSION: u16 = 1;
/// Magic + version (u16 LE) + flags (u16 LE).
pub const HEADER_LEN: usize = 12;

/// Record kinds (the first byte of every record).
pub mod kind {
    pub const PROCESS: u8 = 1;
    pub const MODULE: u8 = 2;
    pub const MODULE_UNLOAD: u8 = 3;
    pub const THREAD: u8 = 4;
    pub const NODES: u8 = 5;
    pub const SAMPLES: u8 = 6;
    pub const LOST: u8 = 7;
    pub const PROCESS_END: u8 = 8;
    pub const NOTICE: u8 = 9;
    pub const PY_CODE: u8 = 10;
    pub const JIT_CODE: u8 = 11;
    pub const JIT_PHASE: u8 = 12;
    pub const FRAME: u8 = 13;
    pub const SOURCE: u8 = 14;
    /// A marker name (request markers): id and text; MARKERS events name it by id.
    pub const MARKER_NAME: u8 = 15;
    /// Marker begin/end events of one thread (`prof_marker_begin` / `prof_marker_end`).
    pub const MARKERS: u8 = 16;
}

/// Sample flags (bit set in [`Sample::flags`]).
pub mod flags {
    /// The unwinder stopped at the depth limit: outer frames are missing.
    pub const TRUNCATED: u32 = 1;
    /// The unwinder stopped at a frame it could not unwind past (bad frame pointer,
    /// unknown code) before reaching the thread's entry.
    pub const UNWIND_STOPPED: u32 = 2;
    /// Wall mode: the thread was blocked/sleeping, not running, when sampled.
    pub const OFF_CPU: u32 = 4;
    /// Python frames could not be matched one-to-one with the interpreter's native
    /// evaluation frames; both were kept (Python frames after the outermost one).
    pub const MERGE_MISMATCH: u32 = 8;
}

/// Node kinds: what a stack frame is.
pub mod node_kind {
    /// A native instruction address (the leaf's pc, or a return address).
    pub const NATIVE: u32 = 0;
    /// A synthetic leaf frame for time in the kernel: `value` is the syscall number the
    /// thread was blocked in (wall mode, off-CPU) or spent CPU time in (cpu time in the
    /// kernel), or [`super::UNKNOWN_SYSCALL`] for kernel time whose syscall is unknown.
    pub const SYSCALL: u32 = 1;
    /// A Python frame: `value` = (PY_CODE id << 32) | instruction index in its bytecode.
    pub const PYTHON: u32 = 2;
    /// A symbolic frame: `value` is the id of a FRAME record (imported profiles).
    pub const FRAME: u32 = 3;
    /// A PyPy Python frame: `value` = (PY_CODE id << 8) | tier ([`tier_hint`]: 1
    /// interpreted, 3 the function whose JIT-compiled loop runs in the node after it).
    pub const PYPY: u32 = 4;
    /// PyPy JIT-compiled code: `value` = an address in it (bits 0-61), bit 62 set when it is
    /// the interrupted instruction rather than a return address, bit 63 set when the code
    /// is the loop of the `PYPY` frame just before it. Named from PyPy's JIT log.
    pub const PYPY_JIT: u32 = 5;
}

/// `SYSCALL` node value for CPU time spent in the kernel outside any known syscall (a page
/// fault, an interrupt, a syscall whose number could not be read): shown as `[kernel]`.
pub const UNKNOWN_SYSCALL: u64 = u32::MAX as u64;

/// FRAME record: a frame known by name rather than by address, as imported profiles
/// (vmprof, perf script, folded stacks) give them. Referenced by [`node_kind::FRAME`] nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymFrame {
    /// Unique within the process section.
    pub id: u32,
    /// The tier the source itself gave this frame ([`tier_hint`]); `tier_hint::NONE`
    /// leaves it to the tier rules.
    pub tier: u32,
    pub name: String,
    /// File name of the module, or a pseudo module (`[jit]`); may be empty.
    pub module: String,
    /// Source file; empty when unknown.
    pub file: String,
    /// Source line; 0 when unknown.
    pub line: u32,
}

/// Tier codes of [`SymFrame::tier`]. Unknown codes read as `NONE`.
pub mod tier_hint {
    pub const NONE: u32 = 0;
    pub const INTERPRETER: u32 = 1;
    pub const WARMUP: u32 = 2;
    pub const JIT: u32 = 3;
    pub const NATIVE: u32 = 4;
    pub const GC: u32 = 5;
    pub const KERNEL: u32 = 6;
}

/// PY_CODE record: a Python code object, recorded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyCode {
    /// Referenced by PYTHON nodes; unique within the process section.
    pub id: u32,
    pub qualname: String,
    pub filename: String,
    pub firstlineno: u32,
    /// CPython minor version (3.x): says how to decode `linetable`.
    pub python_minor: u32,
    /// `co_linetable` bytes (the 3.11+ location table).
    pub linetable: Vec<u8>,
}

/// Where a [`JitCode`] entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JitSource {
    /// A line of the runtime's perf map, `/tmp/perf-PID.map` (`START SIZE name`).
    PerfMap,
    /// A `jit-backend-addr` section of PyPy's JIT log (`PYPYLOG`): a compiled loop or bridge.
    PypyLog,
    /// An anonymous executable memory mapping (no file behind it) seen in
    /// `/proc/self/maps`: code generated at run time that no map names.
    AnonExec,
}

impl JitSource {
    pub fn code(self) -> u64 {
        match self {
            JitSource::PerfMap => 0,
            JitSource::PypyLog => 1,
            JitSource::AnonExec => 2,
        }
    }
    pub fn from_code(c: u64) -> Option<JitSource> {
        match c {
            0 => Some(JitSource::PerfMap),
            1 => Some(JitSource::PypyLog),
            2 => Some(JitSource::AnonExec),
            _ => None,
        }
    }
}

/// JIT_CODE record: a range of run-time generated code and its name, as the agent read it
/// from a JIT's map while the process ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitCode {
    /// First byte of the code (runtime address).
    pub start: u64,
    /// Length in bytes (`start + size` is one past the last byte).
    pub size: u64,
    /// When the agent read the entry, ns since the process started.
    pub time_ns: u64,
    pub source: JitSource,
    /// The name as the runtime wrote it (`JS:*fib /app.js:3:13`, `int Hot.work(int)`).
    pub name: String,
    /// Set by the reader, not written: how many stack nodes the process section had
    /// defined when this record was read. Nodes with a higher id were interned after the
    /// agent knew this entry (see docs/FORMAT.md, "JIT code that replaces older code").
    pub nodes_before: u32,
}

/// JIT_PHASE record: an interval in which a runtime reported itself busy with something
/// other than running the program (PyPy's JIT log: tracing, blackhole interpretation,
/// garbage collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitPhase {
    /// Start and end, ns since the process started (`start_ns <= end_ns`).
    pub start_ns: u64,
    pub end_ns: u64,
    /// The runtime's name for the phase (`jit-tracing`, `gc-minor`).
    pub name: String,
}

/// Sampling mode recorded in the process record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cpu,
    Wall,
}

impl Mode {
    pub fn code(self) -> u64 {
        match self {
            Mode::Cpu => 0,
            Mode::Wall => 1,
        }
    }
    pub fn from_code(c: u64) -> Option<Mode> {
        match c {
            0 => Some(Mode::Cpu),
            1 => Some(Mode::Wall),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cpu => "cpu",
            Mode::Wall => "wall",
        }
    }
}

/// Which timer delivered the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerSource {
    /// Per-thread perf_event_open software cpu-clock, signalled as SIGPROF.
    PerfEvent,
    /// Per-thread timer_create(CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID).
    PosixTimer,
    /// No timer could be armed.
    None,
}

impl TimerSource {
    pub fn code(self) -> u64 {
        match self {
            TimerSource::PerfEvent => 0,
            TimerSource::PosixTimer => 1,
            TimerSource::None => 2,
        }
    }
    pub fn from_code(c: u64) -> Option<TimerSource> {
        match c {
            0 => Some(TimerSource::PerfEvent),
            1 => Some(TimerSource::PosixTimer),
            2 => Some(TimerSource::None),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TimerSource::PerfEvent => "perf_event cpu-clock",
            TimerSource::PosixTimer => "POSIX thread CPU timer",
            TimerSource::None => "none",
        }
    }
}

/// PROCESS record: starts a process section; every following record belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Wall-clock start (Unix epoch, ns).
    pub start_unix_ns: u64,
    /// Requested sampling period (ns).
    pub period_ns: u64,
    pub mode: Mode,
    pub timer: TimerSource,
    /// Unit of sample timestamps (ns per tick).
    pub time_unit_ns: u64,
    /// Depth limit of the unwinder.
    pub max_depth: u32,
    pub exe: String,
    pub argv: Vec<String>,
    pub agent_version: String,
}

/// MODULE record: a loaded ELF object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub id: u32,
    pub path: String,
    /// GNU build id (empty when the object has none).
    pub build_id: Vec<u8>,
    /// Load bias: runtime address = file virtual address + bias.
    pub bias: u64,
    /// Executable address ranges [start, end) at runtime.
    pub ranges: Vec<(u64, u64)>,
}

/// A deduplicated stack frame: stacks form a tree, a sample names its leaf node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    /// Parent node id; 0 is the (virtual) root, so a node with parent 0 is an outermost frame.
    pub parent: u32,
    pub kind: u32,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub tid: u32,
    /// Time since process start, in ns (a multiple of the process's time unit).
    pub time_ns: u64,
    /// Leaf node id (0 = empty stack).
    pub leaf: u32,
    /// How many sampling periods this sample stands for (>= 1).
    pub weight: u32,
    pub flags: u32,
}

/// PROCESS_END record: written when the process exits normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessEnd {
    /// Time since process start, ns.
    pub duration_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Timer signals the handler received.
    pub signals: u64,
}

/// The text of one of the program's source files (SOURCE records, written by `prof run`
/// after the program exited, for the source view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the profile's frames name it (a Python code object's `co_filename`,
    /// a JS function's script path).
    pub path: String,
    pub text: String,
}

/// One `prof_marker_begin` (`name: Some`, `duration_ns: None`), `prof_marker_end`
/// (`name: None`) or `prof_marker_interval` (`name` and `duration_ns`: a whole interval,
/// not nested by thread, e.g. one request of an event loop) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerEvent {
    pub tid: u32,
    /// ns since process start (the samples' clock); an interval's start.
    pub time_ns: u64,
    /// The thread's CPU clock (user + system) at the call, ns.
    pub cpu_ns: u64,
    /// Index into `Process::marker_names` for a begin or an interval; `None` for an end.
    pub name: Option<u32>,
    /// An interval's length.
    pub duration_ns: Option<u64>,
}

/// A marked interval of one thread: a begin paired with its end (innermost first, like
/// brackets), or an interval given whole. `end_ns` is `None` when the process ended
/// inside the marker; `cpu_ns` also for an interval given whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    /// CPU time the thread used between begin and end.
    pub cpu_ns: Option<u64>,
    /// 0 for an outermost marker, 1 for one inside it, ...
    pub depth: u32,
}

/// A one-line message from the agent for the user (e.g. "perf_event_open refused").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not a prof profile (bad magic bytes)")]
    BadMagic,
    #[error("the file is too short to be a prof profile ({0} bytes)")]
    TooShort(usize),
    #[error("unsupported prof log version {0} (this build reads up to {VERSION})")]
    UnsupportedVersion(u16),
    #[error("corrupt record at byte {offset}: {what}")]
    Corrupt { offset: usize, what: &'static str },
}

#[cfg(test)]
mod tests;

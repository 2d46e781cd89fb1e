//! The writer thread: drains the ring every few milliseconds, deduplicates stacks, and
//! appends records to this process's log. Ordinary (allocating, locking) Rust: it never
//! runs inside the signal handler.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use rustc_hash::FxHashMap as HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prof_format::{
    flags, node_kind, LogWriter, MarkerEvent, PendingSample, ProcessEnd, ProcessInfo, PyCode,
};

use crate::logfile::LogFile;
use crate::python::{self, Python};
use crate::ring::{SampleData, NO_SYSCALL};
use crate::state::{self, warn, LOST, SIGNALS};
use crate::{modules, real, sys, threads};

/// How often the ring is drained: often while samples pour in or threads start (a new
/// Python thread's frames are read only once the writer has mapped its thread state),
/// less often when calm, since every wakeup costs CPU time on the program's machine
/// (10 ms drains cost ~1.4% of a CPU here, 50 ms ones ~0.6%). The ring holds 512 samples:
/// at the slow period, past ~2,500 samples a second the fast one takes over.
const DRAIN_FAST: Duration = Duration::from_millis(10);
const DRAIN_SLOW: Duration = Duration::from_millis(50);
const BUSY_SAMPLES: usize = 128;
/// Stay fast this long after the last sign of activity.
const CALM_AFTER: Duration = Duration::from_millis(100);
/// How often the log reaches the file.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Time unit of sample timestamps in the log.
const TIME_UNIT_NS: u64 = 100_000;

struct Writer {
    log: LogWriter<LogFile>,
    modules: modules::Tracker,
    per_thread: HashMap<u32, Vec<PendingSample>>,
    names: HashMap<u32, (String, Instant)>,
    lost_written: u64,
    last_write: Instant,
    failed: bool,
    finished: bool,
    /// Notices not yet written to the log.
    notices: Vec<String>,
    /// Messages already shown to the user.
    said: Vec<String>,
    /// Last sign of activity (see DRAIN_FAST).
    last_busy: Instant,
    /// How long the writer thread sleeps before the next step.
    next_drain: Duration,
    codes: CodeTable,
    /// Scratch: one merged stack, root first.
    frames: Vec<(u32, u64)>,
    /// [issue 5] JIT maps and logs tailed before each drain (jit.rs).
    jit: crate::jit::Jit,
    /// [issue 17] PyPy's code names, once PyPy is detected.
    pypy_names: Option<crate::pypy_names::Names>,
    /// [issue 17] Samples that carried PyPy frames.
    pypy_samples: u64,
    /// Each thread's last stack with CPU time in the kernel, else its last stack with a
    /// `[kernel]` leaf added: where an exiting thread's remaining kernel time goes
    /// (kernel.rs). (leaf node, is it a kernel stack?)
    last_kernel: HashMap<u32, (u32, bool)>,
    /// [issue 14] Marker events per thread not yet written, and the marker names logged.
    markers: MarkerTable,
}

/// [issue 14] Request markers seen by the writer (markers.rs makes the events).
#[derive(Default)]
struct MarkerTable {
    ids: HashMap<Vec<u8>, u32>,
    /// Names interned since the last write (MARKER_NAME records precede their events).
    fresh: Vec<(u32, String)>,
    per_thread: HashMap<u32, Vec<MarkerEvent>>,
    lost_said: u64,
}

impl MarkerTable {
    fn push(&mut self, d: &crate::markers::MarkerSlot) {
        use crate::markers::{BEGIN, INTERVAL};
        let name = (d.kind == BEGIN || d.kind == INTERVAL).then(|| {
            let bytes = d.name();
            let next = self.ids.len() as u32;
            if let Some(&id) = self.ids.get(bytes) {
                return id;
            }
            // A name cut at MAX_NAME may end inside a UTF-8 sequence: keep what is valid.
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t.to_string(),
                Err(e) if e.error_len().is_none() => {
                    String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
                }
                Err(_) => String::from_utf8_lossy(bytes).into_owned(),
            };
            self.ids.insert(bytes.to_vec(), next);
            self.fresh.push((next, text));
            next
        });
        self.per_thread.entry(d.tid).or_default().push(MarkerEvent {
            tid: d.tid,
            time_ns: d.time_ns,
            cpu_ns: d.cpu_ns,
            name,
            duration_ns: (d.kind == INTERVAL).then_some(d.duration_ns),
        });
    }

    /// Takes every marker event out of the marker ring.
    fn drain(&mut self) {
        if let Some(ring) = crate::markers::ring() {
            while ring.pop(|d| self.push(d)).is_some() {}
            crate::markers::drained();
        }
    }

    fn write(&mut self, log: &mut LogWriter<crate::logfile::LogFile>) {
        for (id, name) in self.fresh.drain(..) {
            log.marker_name(id, &name);
        }
        for (&tid, events) in self.per_thread.iter_mut() {
            // Stable: begins and ends keep their order; a whole interval, recorded when it
            // ended, moves back to its start.
            events.sort_by_key(|e| e.time_ns);
            log.markers(tid, events);
            events.clear();
        }
    }
}

/// Python code objects recorded so far: (address, fingerprint) -> PY_CODE id.
#[derive(Default)]
struct CodeTable {
    ids: HashMap<(u64, u64), u32>,
    fresh: Vec<PyCode>,
    next: u32,
    /// Line tables by code id, and (code id, instruction) -> first instruction of its line.
    tables: HashMap<u32, (Vec<u8>, u32)>,
    line_starts: HashMap<(u32, u32), u32>,
    /// Ids of interpreter-internal shim code objects, whose frames are left out.
    shims: rustc_hash::FxHashSet<u32>,
}

impl CodeTable {
    /// One instruction per source line: samples on the same line share a stack node.
    fn line_start(&mut self, id: u32, offset: u32) -> u32 {
        let Some((table, first)) = self.tables.get(&id) else {
            return offset;
        };
        *self
            .line_starts
            .entry((id, offset))
            .or_insert_with(|| prof_format::pyline::line_start(table, *first, offset))
    }

    fn id(&mut self, py: &Python, code: u64, fp: u64) -> u32 {
        if let Some(&id) = self.ids.get(&(code, fp)) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        // A code object freed since the sample: the code watcher may have read it.
        let read = python::read_code(py, code, fp).or_else(|| crate::code_watch::take(code, fp));
        let c = match read {
            Some(i) => {
                self.ids.insert((code, fp), id);
                if python::is_shim(&i) {
                    self.shims.insert(id);
                }
                self.tables.insert(id, (i.linetable.clone(), i.firstlineno));
                PyCode {
                    id,
                    qualname: i.qualname,
                    filename: i.filename,
                    firstlineno: i.firstlineno,
                    python_minor: py.layout.minor,
                    linetable: i.linetable,
                }
            }
            // Freed (maybe reused) since the sample: never guess a name, and do not
            // remember the address (a later code object there is a different one).
            None => PyCode {
                id,
                qualname: "<freed code object>".into(),
                filename: String::new(),
                firstlineno: 0,
                python_minor: py.layout.minor,
                linetable: Vec::new(),
            },
        };
        self.fresh.push(c);
        id
    }
}

/// The sample's stack, root first, with each native `_PyEval_EvalFrameDefault` frame
/// followed by the Python frames it was running. Returns extra sample flags.
fn merged_stack(
    d: &SampleData,
    py: Option<&Python>,
    codes: &mut CodeTable,
    out: &mut Vec<(u32, u64)>,
) -> u32 {
    out.clear();
    let native = d.native();
    let npy = d.py_frames().len();
    let mut extra = 0;
    match py.filter(|_| npy > 0) {
        None => out.extend(native.iter().rev().map(|&a| (node_kind::NATIVE, a))),
        Some(py) => {
            // Python frames grouped by C-level evaluation, innermost group first (a group
            // may be empty: an evaluation whose frame is being torn down).
            let pyf = d.py_frames();
            let mut groups: Vec<&[python::PyFrame]> = Vec::new();
            let mut start = 0;
            for (i, f) in pyf.iter().enumerate() {
                if f.entry != 0 {
                    groups.push(&pyf[start..=i]);
                    start = i + 1;
                }
            }
            if start < npy {
                groups.push(&pyf[start..]);
            }
            let is_eval = |i: usize, a: u64| {
                let a = if i == 0 { a } else { a.wrapping_sub(1) };
                a >= py.eval_start && a < py.eval_end
            };
            let evals = native
                .iter()
                .enumerate()
                .filter(|&(i, &a)| is_eval(i, a))
                .count();
            // Appends Python frames (given innermost first) outermost first.
            let push_py =
                |codes: &mut CodeTable, frames: &[python::PyFrame], out: &mut Vec<(u32, u64)>| {
                    for f in frames.iter().rev().filter(|f| !f.is_empty_group()) {
                        let id = codes.id(py, f.code, f.fingerprint);
                        if codes.shims.contains(&id) {
                            continue;
                        }
                        let at = codes.line_start(id, f.offset);
                        out.push((node_kind::PYTHON, ((id as u64) << 32) | at as u64));
                    }
                };
            // Root first, pairing evaluation frames with groups from the innermost: the
            // j-th innermost evaluation frame runs groups[j]; with `outer_first`, groups
            // no evaluation frame runs (the native root was lost) come first.
            let pair = |codes: &mut CodeTable,
                        groups: &[&[python::PyFrame]],
                        outer_first: bool,
                        out: &mut Vec<(u32, u64)>| {
                if outer_first {
                    for g in groups.iter().skip(evals).rev() {
                        push_py(codes, g, out);
                    }
                }
                let mut j = evals;
                for (i, &a) in native.iter().enumerate().rev() {
                    out.push((node_kind::NATIVE, a));
                    if is_eval(i, a) && j > 0 {
                        j -= 1;
                        if let Some(g) = groups.get(j) {
                            push_py(codes, g, out);
                        }
                    }
                }
            };
            let leaf_eval = native.first().is_some_and(|&a| is_eval(0, a));
            let root_lost = d.flags & (flags::TRUNCATED | flags::UNWIND_STOPPED) != 0;
            // The walk stopped at its frame limit: the outermost groups are missing.
            let py_cut = npy >= d.py.len();
            if evals == groups.len() {
                pair(codes, &groups, false, out);
            } else if evals == groups.len() + 1 && leaf_eval {
                // The sample fell in the innermost evaluation itself before it linked its
                // frame, or after it unlinked it (its prologue and epilogue): it runs none.
                groups.insert(0, &[]);
                pair(codes, &groups, false, out);
            } else if evals > groups.len() && py_cut {
                // The outer evaluations' Python frames are beyond the walk's limit.
                pair(codes, &groups, false, out);
                extra = flags::TRUNCATED;
            } else if evals > 0 && evals < groups.len() && root_lost {
                // The native stack lost its root (depth limit, or the unwinder stopped):
                // its evaluation frames are the innermost ones, and the outer groups'
                // frames come first, where the lost native frames were.
                pair(codes, &groups, true, out);
            } else {
                // Keep both: the native stack, and every Python frame after the
                // outermost evaluation frame (or at the end).
                extra = flags::MERGE_MISMATCH;
                // Without any evaluation frame the native part is only the innermost
                // fragment of the stack: the Python frames go before it.
                let outer = native
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|&(i, &a)| is_eval(i, a))
                    .map(|(i, _)| i);
                if outer.is_none() {
                    push_py(codes, pyf, out);
                }
                for (i, &a) in native.iter().enumerate().rev() {
                    out.push((node_kind::NATIVE, a));
                    if Some(i) == outer {
                        push_py(codes, pyf, out);
                    }
                }
            }
        }
    }
    if d.syscall != NO_SYSCALL {
        out.push((node_kind::SYSCALL, d.syscall));
    }
    extra
}

static WRITER: AtomicPtr<Mutex<Writer>> = AtomicPtr::new(core::ptr::null_mut());
static STOP: AtomicBool = AtomicBool::new(false);

fn writer() -> Option<&'static Mutex<Writer>> {
    // SAFETY: WRITER is null or a leaked Box that is never freed.
    unsafe { WRITER.load(Ordering::Acquire).as_ref() }
}

/// Opens `DIR/PID-NANOS.plog`, writes the process header and modules, starts the thread.
pub fn start(dir: &str, start_unix_ns: u64) -> std::io::Result<()> {
    // SAFETY: getpid/getppid cannot fail.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    let path = format!("{dir}/{pid}-{start_unix_ns}.plog");
    // Created at a high descriptor number (the program's own keep the numbers they would
    // have without prof) and guarded against the program closing it (see logfile.rs).
    let file = LogFile::create(&path)?;
    let mut log = LogWriter::new(file);
    log.process(&ProcessInfo {
        pid: pid as u32,
        ppid: ppid as u32,
        start_unix_ns,
        period_ns: state::period_ns(),
        mode: state::mode(),
        timer: state::source(),
        time_unit_ns: TIME_UNIT_NS,
        max_depth: state::max_depth() as u32,
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        argv: state::argv(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    });
    let notices = state::take_notices();
    let mut w = Writer {
        log,
        modules: modules::Tracker::default(),
        per_thread: HashMap::default(),
        names: HashMap::default(),
        lost_written: 0,
        last_write: Instant::now(),
        failed: false,
        finished: false,
        notices,
        said: Vec::new(),
        last_busy: Instant::now(),
        next_drain: DRAIN_FAST,
        codes: CodeTable {
            next: 1,
            ..Default::default()
        },
        frames: Vec::new(),
        jit: crate::jit::Jit::new(pid), // [issue 5]
        pypy_names: None,
        pypy_samples: 0,
        last_kernel: HashMap::default(),
        markers: MarkerTable::default(),
    };
    w.step(true);
    if w.failed {
        return Err(std::io::Error::other("write failed"));
    }
    WRITER.store(Box::into_raw(Box::new(Mutex::new(w))), Ordering::Release);
    STOP.store(false, Ordering::Release);
    if !real::spawn_internal(c"prof-writer", writer_main) {
        warn("cannot start the writer thread; samples are written at exit only");
    }
    Ok(())
}

/// The writer thread's start routine.
extern "C" fn writer_main(_: *mut c_void) -> *mut c_void {
    state::guard("the writer thread", || (), write_loop);
    core::ptr::null_mut()
}

fn write_loop() {
    state::set_writer_thread();
    let mut period = DRAIN_FAST;
    while !STOP.load(Ordering::Acquire) {
        std::thread::park_timeout(period);
        let Some(w) = writer() else { break };
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        if w.finished {
            break;
        }
        w.step(false);
        period = w.next_drain;
    }
}

/// The writer lock, waiting at most `limit` (polling every `poll`): the agent must never
/// make the program hang on it.
fn lock_within(
    m: &Mutex<Writer>,
    limit: Duration,
    poll: Duration,
) -> Option<std::sync::MutexGuard<'_, Writer>> {
    let deadline = Instant::now() + limit;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(poll)
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// Final drain at exit, from the exiting thread. The writer thread may be mid-step: wait
/// for it briefly, never forever (exit must not hang because of prof).
pub fn finish() {
    STOP.store(true, Ordering::Release);
    let Some(m) = writer() else { return };
    let Some(mut guard) = lock_within(m, Duration::from_millis(500), Duration::from_millis(1))
    else {
        return;
    };
    if guard.finished {
        return;
    }
    // SAFETY: rusage is plain C data, for which all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    if let Some(note) = crate::registration::blocked_note(tv(ru.ru_utime) + tv(ru.ru_stime)) {
        guard.say(&note);
    }
    guard.step(true);
    guard.jit.at_exit(); // [issue 5]
    guard.finish_pypy(); // [issue 17]
    guard.log.end(&ProcessEnd {
        duration_ns: sys::monotonic_ns().saturating_sub(state::start_ns()),
        cpu_user_ns: tv(ru.ru_utime),
        cpu_system_ns: tv(ru.ru_stime),
        signals: SIGNALS.load(Ordering::Relaxed),
    });
    guard.write();
    guard.finished = true;
}

/// A library was just loaded (the interposed dlopen): record it and publish its unwind
/// tables now, before the program calls into it. Left to the writer thread, a library
/// used right after dlopen would run for up to a drain period with no unwind tables, and its
/// samples (without frame pointers) would stop at their leaf.
pub fn modules_changed() {
    let Some(w) = writer() else { return };
    // Never wait for long: a dlopen nested in a library constructor holds the loader lock
    // that the writer thread, mid-scan, may be waiting for. A writer step takes well under
    // a millisecond, so a short bounded wait almost always gets the lock (giving up at
    // once lost the new library's stacks for a drain period about once in 50 dlopens);
    // past it, the writer rescans anyway within one drain period.
    let Some(mut w) = lock_within(w, Duration::from_millis(5), Duration::from_micros(50)) else {
        return;
    };
    if !w.finished && !w.failed {
        w.refresh_modules();
    }
}

/// After fork: the parent's writer (and its lock, maybe held by a thread that no longer
/// exists) is abandoned; the child starts a fresh one.
pub fn forget() {
    WRITER.store(core::ptr::null_mut(), Ordering::Release);
}

impl Writer {
    fn step(&mut self, force_write: bool) {
        if self.failed {
            // Keep the ring empty so the handler stays cheap; the samples are gone.
            if let Some(ring) = state::ring() {
                while ring.pop(|_| ()).is_some() {}
            }
            return;
        }
        // [issue 5] JIT code entries first, so they precede the samples that may run it.
        self.jit.poll(&mut self.log, force_write);
        if let Some(maps) = self.jit.take_maps() {
            self.alias_modules(&maps);
        }
        self.drain();
        if force_write
            || self.last_write.elapsed() >= WRITE_EVERY
            || self.log.pending() > 256 * 1024
        {
            self.write();
        }
    }

    fn drain(&mut self) {
        crate::timer::rearm_closed(state::period_ns());
        let ev = state::SIGPROF_EVENTS.swap(0, Ordering::Relaxed);
        // PyPy's _vmprof, turned on by prof's own start-up hook, installs a handler too.
        let pypy_handler = crate::pypy::get().is_some_and(|pp| {
            let h = state::PREV_HANDLER.load(Ordering::Relaxed) as u64;
            pp.text.iter().any(|&(s, e)| h >= s && h < e)
        });
        if ev & state::EV_OWN_HANDLER != 0 && !pypy_handler {
            self.say("the program installed its own SIGPROF handler: prof keeps sampling with its own timers and passes the program's other SIGPROF signals to that handler");
        }
        self.refresh_modules();
        self.notices.extend(state::take_notices());
        for n in std::mem::take(&mut self.notices) {
            self.log.notice(&n);
        }
        if let Some(msg) = python::detect() {
            self.say(&msg);
        }
        crate::code_watch::request();
        if let Some(msg) = crate::pypy::detect() {
            self.say(&msg);
        }
        let pp = crate::pypy::get();
        if pp.is_some() && self.pypy_names.is_none() {
            // SAFETY: getpid cannot fail.
            let pid = unsafe { libc::getpid() };
            self.pypy_names = Some(crate::pypy_names::Names::new(pid, &state::dir()));
        }
        if let Some(n) = &mut self.pypy_names {
            n.poll();
        }
        let py = python::get();
        if let Some(py) = py {
            for (tid, tstate) in python::thread_states(py) {
                if let Some(e) = threads::lookup(tid as i32) {
                    e.py_tstate.store(tstate, Ordering::Relaxed);
                }
            }
        }
        if let Some(ring) = state::ring() {
            let log = &mut self.log;
            let per_thread = &mut self.per_thread;
            let codes = &mut self.codes;
            let frames = &mut self.frames;
            let jit = &mut self.jit;
            let pypy_names = &mut self.pypy_names;
            let pypy_samples = &mut self.pypy_samples;
            let ranges = modules::exec_ranges();
            let in_module = |a: u64| ranges.iter().any(|&(s, e)| a >= s && a < e);
            let last_kernel = &mut self.last_kernel;
            let mut popped = 0usize;
            while ring
                .pop(|d| {
                    popped += 1;
                    jit.note_frames(d.native());
                    let (leaf, flags) = if d.syscall == crate::kernel::REPEAT_LAST_KERNEL {
                        let leaf = match last_kernel.get(&d.tid) {
                            Some(&(leaf, true)) => leaf,
                            other => log.stacks.intern_under(
                                other.map_or(0, |&(leaf, _)| leaf),
                                [(node_kind::SYSCALL, prof_format::UNKNOWN_SYSCALL)],
                            ),
                        };
                        (leaf, d.flags)
                    } else {
                        let flags = match (pp, pypy_names.as_mut()) {
                            (Some(pp), Some(names)) => {
                                *pypy_samples += (d.npy > 0) as u64;
                                crate::pypy_names::merged_stack(d, pp, names, in_module, frames)
                            }
                            _ => d.flags | merged_stack(d, py, codes, frames),
                        };
                        let leaf = log.stacks.intern(frames.iter().copied());
                        // A user stack is a fallback only if a kernel leaf fits under
                        // the depth limit.
                        let fits = frames.len() < state::max_depth();
                        if d.flags & flags::OFF_CPU == 0 && (fits || d.syscall != NO_SYSCALL) {
                            let kernel = d.syscall != NO_SYSCALL;
                            let e = last_kernel.entry(d.tid).or_insert((leaf, kernel));
                            if kernel || !e.1 {
                                *e = (leaf, kernel);
                            }
                        }
                        (leaf, flags)
                    };
                    per_thread.entry(d.tid).or_default().push(PendingSample {
                        time_ns: d.time_ns,
                        leaf,
                        weight: d.weight.max(1),
                        flags,
                    });
                })
                .is_some()
            {}
            for c in self.codes.fresh.drain(..) {
                self.log.py_code(&c);
            }
            if let Some(n) = &mut self.pypy_names {
                for c in n.fresh.drain(..) {
                    self.log.py_code(&c);
                }
            }
            if popped >= BUSY_SAMPLES || state::take_thread_started() {
                self.last_busy = Instant::now();
            }
        }
        self.next_drain = if self.last_busy.elapsed() < CALM_AFTER {
            DRAIN_FAST
        } else {
            DRAIN_SLOW
        };
        let now = Instant::now();
        for (&tid, samples) in self.per_thread.iter_mut() {
            if samples.is_empty() {
                continue;
            }
            let stale = self
                .names
                .get(&tid)
                .is_none_or(|(_, t)| now.duration_since(*t) > Duration::from_millis(500));
            if stale {
                let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default();
                let changed = self
                    .names
                    .get(&tid)
                    .is_none_or(|(n, _)| *n != name && !name.is_empty());
                if changed {
                    self.log.thread(tid, &name);
                }
                let keep = if name.is_empty() {
                    self.names
                        .get(&tid)
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default()
                } else {
                    name
                };
                self.names.insert(tid, (keep, now));
            }
            samples.sort_by_key(|s| s.time_ns);
            self.log.samples(tid, samples);
            samples.clear();
        }
        self.markers.drain();
        self.markers.write(&mut self.log);
        let lost_markers = crate::markers::LOST_EVENTS.load(Ordering::Relaxed);
        // Said when first seen and then each time the count doubles: no notice per drain.
        if lost_markers > self.markers.lost_said.saturating_mul(2) {
            self.markers.lost_said = lost_markers;
            self.log.notice(&format!(
                "{lost_markers} marker events were lost (the sample ring was full): some markers may be unpaired"
            ));
        }
        let lost = LOST.load(Ordering::Relaxed);
        if lost > self.lost_written {
            self.log.lost(lost - self.lost_written);
            self.lost_written = lost;
        }
    }

    /// Rescans the loaded modules: records new and unloaded ones, and publishes the unwind
    /// tables of the current set to the signal handler.
    fn refresh_modules(&mut self) {
        let (added, removed) = self.modules.refresh();
        for m in &added {
            self.log.module(m);
        }
        for id in removed {
            self.log.module_unload(id);
        }
    }

    /// Modules' aliases (modules.rs) in the text of `/proc/self/maps`.
    fn alias_modules(&mut self, maps: &str) {
        let (added, removed) = self.modules.aliases(maps);
        for m in &added {
            self.log.module(m);
        }
        for id in removed {
            self.log.module_unload(id);
        }
    }

    /// [issue 17] Names that arrived late (PyPy flushes the last ones when the hook turns
    /// vmprof off at exit), placeholders for the rest.
    fn finish_pypy(&mut self) {
        let Some(n) = &mut self.pypy_names else {
            return;
        };
        n.finish();
        let silent = n.silent();
        for c in n.fresh.drain(..) {
            self.log.py_code(&c);
        }
        if silent && self.pypy_samples > 0 {
            let msg = "PyPy did not name its code objects (was it started with -E, -I or -S, or is PROF_PYPY_HOOK=0 set?): Python frames read <unnamed PyPy code>";
            warn(msg);
            self.log.notice(msg);
        }
    }

    /// Tells the user once per message (stderr and a NOTICE record).
    fn say(&mut self, text: &str) {
        if !self.said.iter().any(|s| s == text) {
            warn(text);
            self.said.push(text.to_string());
            self.notices.push(text.to_string());
        }
    }

    fn write(&mut self) {
        self.last_write = Instant::now();
        if let Err(e) = self.log.flush() {
            self.failed = true;
            warn(&format!(
                "writing the profile failed: {e}; profiling stops, the program continues"
            ));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.log.flush();
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::{Layout, PyFrame};
    use crate::ring::MAX_FRAMES;

    /// Evaluation frames are addresses in [0x1000, 0x2000), other native frames 0x5000+.
    fn python() -> Python {
        Python {
            layout: Layout::default(),
            runtime: 0,
            code_type: 0,
            unicode_type: 0,
            bytes_type: 0,
            eval_start: 0x1000,
            eval_end: 0x2000,
        }
    }

    /// A Python frame named by its instruction offset (its code object cannot be read, so
    /// the offset is what identifies it in the merged stack).
    fn pf(n: u32, entry: bool) -> PyFrame {
        PyFrame {
            code: 0x10_0000 + n as u64 * 0x100,
            fingerprint: 0,
            offset: n,
            entry: entry as u32,
        }
    }

    /// Merges `native` (leaf first) and `py` (innermost first); the stack root first as
    /// `E` (evaluation frame), `nADDR` (other native frame) and `pN` (Python frame N).
    fn merge(native: &[u64], py: &[PyFrame], flags: u32) -> (String, u32) {
        let mut d = SampleData {
            tid: 1,
            flags,
            weight: 1,
            depth: native.len() as u32,
            time_ns: 0,
            syscall: NO_SYSCALL,
            frames: [0; MAX_FRAMES],
            npy: py.len() as u32,
            py: [PyFrame::default(); python::MAX_PY_FRAMES],
        };
        d.frames[..native.len()].copy_from_slice(native);
        d.py[..py.len()].copy_from_slice(py);
        let mut codes = CodeTable::default();
        let mut out = Vec::new();
        let extra = merged_stack(&d, Some(&python()), &mut codes, &mut out);
        let s: Vec<String> = out
            .iter()
            .map(|&(kind, v)| match kind {
                node_kind::PYTHON => format!("p{}", v as u32),
                _ if (0x1000..0x2000).contains(&v) => "E".into(),
                _ => format!("n{v:x}"),
            })
            .collect();
        (s.join(" "), extra)
    }

    #[test]
    fn evaluations_and_python_groups_pair_from_the_innermost() {
        // Two evaluations: A (outer, runs p1) and B (runs p2, p3).
        let native = [0x5001, 0x1500, 0x5002, 0x1501, 0x5003];
        let py = [pf(3, false), pf(2, true), pf(1, true)];
        assert_eq!(
            merge(&native, &py, 0),
            ("n5003 E p1 n5002 E p2 p3 n5001".into(), 0)
        );
        // 3.12+: the innermost evaluation tears its returned frame down (the walk met its
        // entry shim first and recorded an empty group).
        let native = [0x5001, 0x1500, 0x5002, 0x1501, 0x5003, 0x1502, 0x5004];
        let py = [PyFrame::EMPTY_GROUP, pf(2, true), pf(1, true)];
        assert_eq!(
            merge(&native, &py, 0),
            ("n5004 E p1 n5003 E p2 n5002 E n5001".into(), 0)
        );
        // The leaf is an evaluation's prologue: it has not linked its frame yet.
        let native = [0x1500, 0x5002, 0x1501, 0x5003];
        assert_eq!(
            merge(&native, &[pf(1, true)], 0),
            ("n5003 E p1 n5002 E".into(), 0)
        );
        // The native stack was cut at the depth limit: its one evaluation runs the
        // innermost group, the outer groups come first.
        let native = [0x5001, 0x1500];
        let py = [pf(3, true), pf(2, true), pf(1, true)];
        assert_eq!(
            merge(&native, &py, flags::TRUNCATED),
            ("p1 p2 E p3 n5001".into(), 0)
        );
    }

    #[test]
    fn a_python_walk_cut_at_its_limit_keeps_the_inner_pairs() {
        let py: Vec<PyFrame> = (0..python::MAX_PY_FRAMES as u32)
            .map(|i| pf(1000 - i, false))
            .collect();
        let (s, extra) = merge(&[0x5001, 0x1500, 0x5002, 0x1501, 0x5003], &py, 0);
        assert_eq!(extra, flags::TRUNCATED);
        assert!(s.starts_with("n5003 E n5002 E p873 p874 "), "{s}");
        assert!(s.ends_with(" p999 p1000 n5001"), "{s}");
    }

    #[test]
    fn unmatched_counts_keep_both_and_flag_the_sample() {
        // Three evaluations, one group, a whole native stack: no rule applies.
        let native = [0x5001, 0x1500, 0x5002, 0x1501, 0x5003, 0x1502, 0x5004];
        let (s, extra) = merge(&native, &[pf(2, false), pf(1, true)], 0);
        assert_eq!(extra, flags::MERGE_MISMATCH);
        assert_eq!(s, "n5004 E p1 p2 n5003 E n5002 E n5001");
    }
}

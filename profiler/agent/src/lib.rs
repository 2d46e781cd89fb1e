//! prof's in-process sampler, loaded into the target with LD_PRELOAD by `prof run`.
//!
//! Life cycle: a constructor reads the PROF_* environment, maps the sample ring, installs
//! the SIGPROF handler, arms a CPU-time timer for the main thread and starts the writer
//! thread. Threads made by `pthread_create` (hooked) arm their own timers; a forked child
//! starts its own log; at exit the last samples and a PROCESS_END record are written.
//! With no PROF_DIR in the environment the library does nothing but pass calls through.
//!
//! `unsafe` lives in `sys`, `ring`, `threads`, `timer`, `handler`, `hooks`, `modules`, `pypy`,
//! `markers` and `wall`, each use next to a `SAFETY:` note; the writer is ordinary Rust.

mod handler;
mod hooks;
mod jit;
mod kernel;
mod logfile;
mod markers;
mod modules;
mod pypy;
mod pypy_names;
mod python;
mod ring;
mod sys;
mod threads;
mod timer;
mod unwind;
mod wall;
mod writer;

#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod testing;

pub use hooks::{dlopen, pthread_create, pthread_sigmask, sigaction, signal, sigprocmask};
pub use markers::{prof_marker_begin, prof_marker_enabled, prof_marker_end, prof_marker_interval};

use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::ffi::CStr;
use std::sync::Mutex;

use prof_format::{Mode, TimerSource};

/// Shared state read by the handler: plain atomics, set before any timer is armed.
pub(crate) mod state {
    use super::*;

    pub static RING: AtomicPtr<ring::Ring> = AtomicPtr::new(core::ptr::null_mut());
    pub static PERIOD_NS: AtomicU64 = AtomicU64::new(1_001_001);
    pub static MAX_DEPTH: AtomicUsize = AtomicUsize::new(ring::MAX_FRAMES);
    pub static START_NS: AtomicU64 = AtomicU64::new(0);
    pub static SAMPLING: AtomicBool = AtomicBool::new(false);
    /// The profiler is configured for this process (PROF_DIR was set and init succeeded).
    pub static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// 0 = auto, 1 = perf only, 2 = POSIX timers only.
    pub static TIMER_PREF: AtomicU8 = AtomicU8::new(0);
    /// Source that armed the main thread (TimerSource code).
    pub static SOURCE: AtomicU8 = AtomicU8::new(2);
    pub static WALL: AtomicBool = AtomicBool::new(false);

    #[inline]
    pub fn ring() -> Option<&'static ring::Ring> {
        let p = RING.load(Ordering::Acquire);
        // SAFETY: RING is either null or a mapping made by Ring::new that is never unmapped.
        unsafe { p.as_ref() }
    }
    #[inline]
    pub fn period_ns() -> u64 {
        PERIOD_NS.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn max_depth() -> usize {
        MAX_DEPTH.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn start_ns() -> u64 {
        START_NS.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn sampling() -> bool {
        SAMPLING.load(Ordering::Relaxed)
    }
    pub fn timer_pref() -> Option<timer::Source> {
        match TIMER_PREF.load(Ordering::Relaxed) {
            1 => Some(timer::Source::Perf),
            2 => Some(timer::Source::Posix),
            _ => None,
        }
    }
    pub fn source() -> TimerSource {
        TimerSource::from_code(SOURCE.load(Ordering::Relaxed) as u64).unwrap_or(TimerSource::None)
    }
    pub fn mode() -> Mode {
        if WALL.load(Ordering::Relaxed) {
            Mode::Wall
        } else {
            Mode::Cpu
        }
    }
}

/// Writes one line to stderr, prefixed "prof: " (never from the signal handler).
pub(crate) fn warn(msg: &str) {
    let line = format!("prof: {msg}\n");
    // SAFETY: writing a valid buffer to fd 2; a failure is ignored (nowhere to report it).
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// argv as the constructor saw it.
static ARGV: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Where logs go (PROF_DIR).
static DIR: Mutex<String> = Mutex::new(String::new());

/// The directory logs go to (PROF_DIR).
pub(crate) fn dir() -> String {
    DIR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub(crate) fn argv() -> Vec<String> {
    ARGV.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct Config {
    dir: String,
    rate: f64,
    wall: bool,
    timer_pref: u8,
    max_depth: usize,
    kernel_time: bool,
}

fn config() -> Result<Option<Config>, String> {
    let Ok(dir) = std::env::var("PROF_DIR") else {
        return Ok(None);
    };
    let rate = match std::env::var("PROF_RATE") {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (1.0..=100_000.0).contains(r))
            .ok_or(format!("PROF_RATE={s:?} is not a rate in Hz (1-100000)"))?,
        Err(_) => 999.0,
    };
    let wall = match std::env::var("PROF_MODE").as_deref() {
        Ok("wall") => true,
        Ok("cpu") | Err(_) => false,
        Ok(other) => return Err(format!("PROF_MODE={other:?} is not cpu or wall")),
    };
    let timer_pref = match std::env::var("PROF_TIMER").as_deref() {
        Ok("perf") => 1,
        Ok("posix") => 2,
        Ok("auto") | Err(_) => 0,
        Ok(other) => return Err(format!("PROF_TIMER={other:?} is not auto, perf or posix")),
    };
    let max_depth = match std::env::var("PROF_MAX_DEPTH") {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("PROF_MAX_DEPTH={s:?} is not a number"))?
            .clamp(1, ring::MAX_FRAMES),
        Err(_) => ring::MAX_FRAMES,
    };
    let kernel_time = match std::env::var("PROF_KERNEL_TIME").as_deref() {
        Ok("on") | Err(_) => true,
        Ok("off") => false,
        Ok(other) => return Err(format!("PROF_KERNEL_TIME={other:?} is not on or off")),
    };
    Ok(Some(Config {
        dir,
        rate,
        wall,
        timer_pref,
        max_depth,
        kernel_time,
    }))
}

/// glibc calls .init_array entries with (argc, argv, envp).
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = init;

extern "C" fn init(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    let mut args = Vec::new();
    if !argv.is_null() {
        for i in 0..argc.max(0) as usize {
            // SAFETY: glibc passes argc valid, NUL-terminated argv strings.
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: p is a NUL-terminated string (see above).
            args.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
    }
    *ARGV.lock().unwrap_or_else(|e| e.into_inner()) = args;
    hooks::resolve();
    let cfg = match config() {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            warn(&format!("{e}; not profiling this process"));
            return;
        }
    };
    state::PERIOD_NS.store((1e9 / cfg.rate) as u64, Ordering::Relaxed);
    state::MAX_DEPTH.store(cfg.max_depth, Ordering::Relaxed);
    state::TIMER_PREF.store(cfg.timer_pref, Ordering::Relaxed);
    state::WALL.store(cfg.wall, Ordering::Relaxed);
    kernel::set_enabled(cfg.kernel_time);
    let Some(ring) = ring::Ring::new() else {
        warn("cannot map the sample buffer; not profiling this process");
        return;
    };
    state::RING.store(ring as *const _ as *mut _, Ordering::Release);
    if !handler::install() {
        warn("cannot install the SIGPROF handler; not profiling this process");
        return;
    }
    hooks::install_thread_key();
    // SAFETY: registering plain extern "C" functions with libc.
    unsafe {
        libc::pthread_atfork(None, None, Some(hooks::after_fork_child));
        libc::atexit(at_exit);
    }
    // [issue 17] A PyPy process gets the start-up hook that names its code objects.
    if pypy::loaded() {
        pypy_names::install_hook(&cfg.dir);
    }
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = cfg.dir;
    state::ACTIVE.store(true, Ordering::Release);
    start_process();
}

/// Starts profiling this process (at load, and again in a forked child): the log, the
/// calling thread's timer, the writer thread.
pub(crate) fn start_process() {
    state::START_NS.store(sys::monotonic_ns(), Ordering::Relaxed);
    python::set_pid();
    let start_unix = sys::realtime_ns();
    let source = hooks::register_current_thread();
    state::SOURCE.store(source.code() as u8, Ordering::Relaxed);
    let dir = DIR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Samples start once the log exists: the agent's own setup (indexing every module's
    // unwind tables) is not the program's time.
    let started = writer::start(&dir, start_unix);
    // The setup's CPU time (user or kernel) is not the program's: start counting now.
    kernel::reset_current();
    state::SAMPLING.store(started.is_ok(), Ordering::Release);
    if let Err(e) = started {
        state::SAMPLING.store(false, Ordering::Release);
        state::ACTIVE.store(false, Ordering::Release);
        hooks::unregister_current_thread();
        warn(&format!(
            "cannot write the profile into {dir}: {e}; not profiling this process"
        ));
        return;
    }
    if state::WALL.load(Ordering::Relaxed) {
        wall::start();
    }
}

extern "C" fn at_exit() {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    state::SAMPLING.store(false, Ordering::Release);
    wall::stop();
    kernel::settle_all();
    writer::finish();
}

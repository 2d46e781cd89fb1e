//! The process's life cycle under the profiler: the constructor (reads the PROF_*
//! environment, maps the ring, installs the handler), the start of profiling (again in a
//! forked child), and the end (atexit, or CPython's / PyPy's `os._exit`). The top of the
//! module graph: it drives the writer, the wall sampler and the thread registration, and
//! nothing but the interposed `_exit` (hooks.rs) calls into it.

use core::ffi::{c_char, c_int};
use core::sync::atomic::Ordering;
use std::ffi::CStr;

use crate::state::{self, warn};
use crate::{
    handler, kernel, pypy, pypy_names, real, registration, ring, sys, threads, wall, writer,
};

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

/// The library's constructor (C calls it at load).
extern "C" fn init(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    state::guard("the profiler's start", || (), || start(argc, argv));
}

fn start(argc: c_int, argv: *const *const c_char) {
    let mut args = Vec::new();
    if !argv.is_null() {
        for i in 0..argc.max(0) as usize {
            // SAFETY: glibc passes argc valid, NUL-terminated argv strings (i < argc).
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: p is a NUL-terminated string (see above).
            args.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
    }
    state::set_argv(args);
    real::resolve();
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
    if !crate::markers::init() {
        warn("cannot map the marker buffer; request markers are off");
    }
    if !handler::install() {
        warn("cannot install the SIGPROF handler; not profiling this process");
        return;
    }
    registration::install_thread_key();
    // SAFETY: registering extern "C" functions of this library (never unloaded) with libc.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
        libc::atexit(at_exit);
    }
    // [issue 17] A PyPy process gets the start-up hook that names its code objects.
    if pypy::loaded() {
        pypy_names::install_hook(&cfg.dir);
    }
    state::set_dir(cfg.dir);
    state::ACTIVE.store(true, Ordering::Release);
    start_process();
}

/// Starts profiling this process (at load, and again in a forked child): the log, the
/// calling thread's timer, the writer thread.
fn start_process() {
    state::START_NS.store(sys::monotonic_ns(), Ordering::Relaxed);
    sys::set_pid();
    let start_unix = sys::realtime_ns();
    let source = registration::register_current_thread();
    state::SOURCE.store(source.code() as u8, Ordering::Relaxed);
    let dir = state::dir();
    // Samples start once the log exists: the agent's own setup (indexing every module's
    // unwind tables) is not the program's time.
    let started = writer::start(&dir, start_unix);
    // The setup's CPU time (user or kernel) is not the program's: start counting now.
    kernel::reset_current();
    state::SAMPLING.store(started.is_ok(), Ordering::Release);
    if let Err(e) = started {
        state::SAMPLING.store(false, Ordering::Release);
        state::ACTIVE.store(false, Ordering::Release);
        registration::unregister_current_thread();
        warn(&format!(
            "cannot write the profile into {dir}: {e}; not profiling this process"
        ));
        return;
    }
    if state::WALL.load(Ordering::Relaxed) {
        wall::start();
    }
}

/// Ends profiling: stops sampling, settles the threads' kernel time, writes the last
/// samples and the PROCESS_END record.
pub fn finish() {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    state::SAMPLING.store(false, Ordering::Release);
    wall::stop();
    kernel::settle_all();
    crate::registration::end_blocks();
    writer::finish();
}

/// The atexit handler (C calls it at exit).
extern "C" fn at_exit() {
    state::guard("the profiler's exit", || (), finish);
}

/// pthread_atfork child handler: only the forking thread exists now. Drop the parent's
/// timers and buffered samples and profile the child as a process of its own.
extern "C" fn after_fork_child() {
    state::guard("a forked child's start", || (), restart_in_child);
}

fn restart_in_child() {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    state::SAMPLING.store(false, Ordering::Release);
    state::BLOCKED_NS.store(0, Ordering::Relaxed);
    for e in threads::live() {
        e.blocked_mark.store(0, Ordering::Relaxed);
        // The parent's perf descriptors were inherited; its POSIX timers were not.
        let fd = e.perf_fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 && sys::is_perf_fd(fd) {
            // SAFETY: an inherited descriptor of ours (checked just above), closed once
            // (swapped out of the entry).
            unsafe { libc::close(fd) };
        }
        e.timer.store(0, Ordering::Relaxed);
        e.kernel_timer.store(0, Ordering::Relaxed);
    }
    threads::clear();
    if let Some(r) = state::ring() {
        r.reset();
    }
    crate::markers::reset_after_fork();
    state::LOST.store(0, Ordering::Relaxed);
    state::SIGNALS.store(0, Ordering::Relaxed);
    writer::forget();
    wall::forget();
    start_process();
}

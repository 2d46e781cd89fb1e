//! The agent's shared state: configuration set once at start, the counters the signal
//! handler bumps, the program's own SIGPROF disposition, and the small channels by which
//! the other modules reach the writer thread (notices, a wake-up). Every other module
//! may depend on this one, and this one on none of them but `ring`: it is what
//! breaks the handler / hooks / writer / wall cycle. Everything the handler reads
//! here is a plain atomic.

use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::Mutex;

use prof_format::{Mode, TimerSource};

use crate::ring::{self, Claim, Ring};

pub static RING: AtomicPtr<Ring> = AtomicPtr::new(core::ptr::null_mut());
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

/// Every SIGPROF the handler saw (ours or not).
pub static SIGNALS: AtomicU64 = AtomicU64::new(0);
/// Samples dropped because the ring was full.
pub static LOST: AtomicU64 = AtomicU64::new(0);
/// The SIGPROF disposition the program believes it has (sa_sigaction value and sa_flags):
/// the one before ours, or the one it set since (hooks.rs). SIGPROFs that are not from our
/// timers go to it.
pub static PREV_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
pub static PREV_FLAGS: AtomicUsize = AtomicUsize::new(0);

/// Facts about the program's own use of SIGPROF, reported by the writer thread (the
/// interposed functions may be called from signal handlers, so they only set bits).
pub static SIGPROF_EVENTS: AtomicU32 = AtomicU32::new(0);
pub const EV_OWN_HANDLER: u32 = 1;
/// CPU time the program's threads used with SIGPROF blocked (registration.rs), in ns.
pub static BLOCKED_NS: AtomicU64 = AtomicU64::new(0);

#[inline]
pub fn ring() -> Option<&'static Ring> {
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
pub fn timer_pref() -> u8 {
    TIMER_PREF.load(Ordering::Relaxed)
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

/// A ring slot for one sample; a full ring counts the sample as lost (async-signal-safe:
/// the ring never blocks). Used by the handler, the kernel catcher and the wall sampler.
#[inline]
pub fn claim_slot() -> Option<Claim<'static>> {
    let ring = ring()?;
    let claim = ring.claim();
    if claim.is_none() {
        LOST.fetch_add(1, Ordering::Relaxed);
    }
    claim
}

/// Writes one line to stderr, prefixed "prof: " (never from the signal handler).
pub fn warn(msg: &str) {
    let line = format!("prof: {msg}\n");
    // SAFETY: writing a valid buffer of its own length to fd 2; a failure is ignored
    // (there is nowhere to report it).
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Notices for the log not yet taken by the writer thread.
static NOTICES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A message for the user: on stderr now, and in the log at the writer's next step.
pub fn notice(text: &str) {
    warn(text);
    NOTICES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(text.to_string());
}

/// The notices waiting for the log (the writer thread). Never waits: after a fork the
/// lock may be held by a thread that no longer exists; then the notices stay unwritten
/// rather than the writer hanging.
pub fn take_notices() -> Vec<String> {
    match NOTICES.try_lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Vec::new(),
    }
}

/// The writer thread's handle, for [`wake_writer`] (a leaked Box; replaced in a fork child).
static WAKER: AtomicPtr<std::thread::Thread> = AtomicPtr::new(core::ptr::null_mut());
/// A thread started since the writer's last drain (see [`wake_writer`]).
static THREAD_STARTED: AtomicBool = AtomicBool::new(false);

/// Called by the writer thread as it starts: it is the one [`wake_writer`] wakes.
pub fn set_writer_thread() {
    // The previous handle (a fork parent's writer) is leaked, not freed: a thread that
    // loaded it just before this store may still be using it.
    WAKER.store(
        Box::into_raw(Box::new(std::thread::current())),
        Ordering::Release,
    );
}

/// A thread started: the writer should drain now and soon again, so that a new Python
/// thread's state is mapped within a fast drain period instead of after a slow one (its
/// samples carry no Python frames until then).
pub fn wake_writer() {
    THREAD_STARTED.store(true, Ordering::Release);
    // SAFETY: WAKER is null or a leaked Box<Thread> that is never freed.
    if let Some(t) = unsafe { WAKER.load(Ordering::Acquire).as_ref() } {
        t.unpark();
    }
}

/// Has a thread started since the last call? (The writer thread.)
pub fn take_thread_started() -> bool {
    THREAD_STARTED.swap(false, Ordering::AcqRel)
}

/// argv as the constructor saw it.
static ARGV: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Where logs go (PROF_DIR).
static DIR: Mutex<String> = Mutex::new(String::new());

/// The directory logs go to (PROF_DIR).
pub fn dir() -> String {
    DIR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn set_dir(dir: String) {
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// The program's argv.
pub fn argv() -> Vec<String> {
    ARGV.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn set_argv(args: Vec<String>) {
    *ARGV.lock().unwrap_or_else(|e| e.into_inner()) = args;
}

/// Runs agent code that C calls (an interposed function, a constructor, a thread start
/// routine, an atfork or atexit handler): a panic must never unwind into C — Rust aborts
/// the program when one reaches an `extern "C"` boundary, and the program is not ours to
/// kill. A panic is caught here instead: profiling stops for this process, the user is
/// told, and `fallback` gives the C caller what it would have got without prof.
pub fn guard<R>(what: &str, fallback: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            stop_after_panic();
            // The panic hook already printed the panic's message and location.
            warn(&format!(
                "internal error in {what}; profiling stops, the program continues"
            ));
            fallback()
        }
    }
}

/// Turns sampling off for good after an internal error (async-signal-safe: atomics only).
pub fn stop_after_panic() {
    SAMPLING.store(false, Ordering::Release);
    ACTIVE.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_the_fallback_and_stops_profiling() {
        assert_eq!(guard("a test", || 0, || 5), 5);
        // Not ACTIVE: with it on, threads other tests start at the same time would arm CPU
        // timers through the interposed pthread_create, and this test binary has no
        // SIGPROF handler (it was killed by "Profiling timer expired" once in ~30 runs).
        SAMPLING.store(true, Ordering::Release);
        let r = guard("a test", || 7, || -> i32 { panic!("an internal error") });
        assert_eq!(r, 7);
        assert!(!ACTIVE.load(Ordering::Acquire));
        assert!(!SAMPLING.load(Ordering::Acquire));
    }

    #[test]
    fn notices_queue_until_taken() {
        notice("first");
        notice("second");
        let taken = take_notices();
        assert!(taken.ends_with(&["first".to_string(), "second".to_string()]));
        assert!(!take_notices().contains(&"first".to_string()));
    }
}

//! Registering the threads that are sampled: each thread, as it starts (the interposed
//! `pthread_create`'s trampoline, or the process's start for the main thread), records its
//! stack bounds in the thread table and arms its CPU-time timer; a pthread key destructor
//! unregisters it on exit.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prof_format::TimerSource;

use crate::state::{self, warn};
use crate::sys::gettid;
use crate::{threads, timer};

static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static WARNED_FALLBACK: AtomicBool = AtomicBool::new(false);
static WARNED_FULL: AtomicBool = AtomicBool::new(false);

/// Creates a pthread key whose destructor unregisters an exiting thread (it runs for
/// threads that return from their start routine and for those calling pthread_exit).
pub fn install_thread_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the new key; the destructor is an extern "C" fn
    // that lives as long as the library (never unloaded).
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        KEY.store(key as usize, Ordering::Release);
    }
}

/// The key's destructor (C calls it as the thread exits).
extern "C" fn thread_exit(_: *mut c_void) {
    state::guard("a thread's exit", || (), unregister_current_thread);
}

/// Registers the calling thread: stack bounds and a CPU-time timer.
pub fn register_current_thread() -> TimerSource {
    let tid = gettid();
    let Some(e) = threads::insert(tid) else {
        if !WARNED_FULL.swap(true, Ordering::Relaxed) {
            warn("too many live threads; new threads are not sampled");
        }
        return TimerSource::None;
    };
    let (lo, hi) = stack_bounds();
    let old = e.unwind_ctx.swap(
        Box::into_raw(crate::unwind::new_context()),
        Ordering::AcqRel,
    );
    if !old.is_null() {
        // SAFETY: a context left by an earlier registration of this tid (never reached
        // by a handler any more: only this thread's handler uses it, and it is here).
        drop(unsafe { Box::from_raw(old) });
    }
    e.stack_lo.store(lo, Ordering::Relaxed);
    // SAFETY: pthread_self takes no arguments and cannot fail.
    e.thread_ptr
        .store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
    e.stack_hi.store(hi, Ordering::Release);
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: a key we created; the value is never dereferenced (any non-null value
        // makes the destructor run).
        unsafe {
            libc::pthread_setspecific(key as libc::pthread_key_t, std::ptr::dangling::<c_void>())
        };
    }
    // A thread started by one that blocked SIGPROF inherits the block.
    if crate::real::sigprof_blocked() {
        e.blocked_mark
            .store(crate::sys::thread_cpu_ns() + 1, Ordering::Relaxed);
    }
    state::wake_writer();
    match timer::arm(e, tid, state::period_ns(), timer::preferred()) {
        Ok(timer::Source::Perf) => TimerSource::PerfEvent,
        Ok(timer::Source::Posix) => {
            if timer::preferred().is_none() && !WARNED_FALLBACK.swap(true, Ordering::Relaxed) {
                state::notice("perf_event_open is not permitted here: sampling with POSIX CPU timers, which fire at most once per kernel tick (often 250 Hz)");
            }
            TimerSource::PosixTimer
        }
        Err(errno) => {
            threads::remove(e);
            if !WARNED_FALLBACK.swap(true, Ordering::Relaxed) {
                warn(&format!(
                    "cannot arm a CPU timer for thread {tid} (errno {errno}); it is not sampled"
                ));
            }
            TimerSource::None
        }
    }
}

pub fn unregister_current_thread() {
    if let Some(e) = threads::lookup(gettid()) {
        // A thread that ends with SIGPROF blocked got no signal for the time it ran
        // blocked: that user time becomes one sample here, at its exit, not kernel credit.
        let w = crate::kernel::end_block(e, crate::sys::thread_cpu_ns);
        if w > 0 && state::sampling() {
            e.user_periods.fetch_add(w as u64, Ordering::Relaxed);
            crate::handler::sample_here(e, w);
        }
        // Unpublish first: a signal arriving in between finds no entry and does nothing.
        threads::remove(e);
        // Kernel-time credit is kept for perf-event threads only (kernel.rs).
        let perf = e.perf_fd.load(Ordering::Acquire) >= 0;
        timer::disarm(e);
        if perf && state::sampling() {
            crate::kernel::settle_exit(e, gettid(), crate::sys::thread_cpu_ns());
        }
        let ctx = e.unwind_ctx.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !ctx.is_null() {
            // SAFETY: only this thread's handler uses the context and the entry is no
            // longer findable, so nothing can be using it now.
            drop(unsafe { Box::from_raw(ctx) });
        }
    }
}

/// After the program changed the calling thread's signal mask (`how`, `set` as given to
/// a successful pthread_sigmask/sigprocmask): starts or ends the measure of CPU time spent
/// with SIGPROF blocked. While it is, the thread's timer signals wait: its CPU time is
/// sampled, as one weighted sample, where the thread unblocks it (handler.rs), and the
/// user is told how much there was ([`blocked_note`]). Async-signal-safe (a handler may change the mask): atomics and one
/// clock_gettime; cannot panic.
pub fn mask_changed(how: libc::c_int, set: *const libc::sigset_t) {
    if set.is_null() || !state::ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: set is non-null (checked above) and, by the caller's contract, a valid
    // sigset_t; sigismember only reads it.
    let named = unsafe { libc::sigismember(set, libc::SIGPROF) } == 1;
    let blocked = match how {
        libc::SIG_BLOCK if named => true,
        libc::SIG_UNBLOCK if named => false,
        libc::SIG_SETMASK => named,
        _ => return,
    };
    let Some(e) = threads::lookup(gettid()) else {
        return;
    };
    if blocked {
        let now = crate::sys::thread_cpu_ns();
        let _ = e
            .blocked_mark
            .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
    } else {
        crate::kernel::end_block(e, crate::sys::thread_cpu_ns);
    }
}

/// At exit: the threads that still block SIGPROF.
pub fn end_blocks() {
    for e in threads::live() {
        if e.blocked_mark.load(Ordering::Relaxed) != 0 {
            let tid = e.tid.load(Ordering::Acquire);
            if let Some(now) = crate::kernel::thread_cpu_ns_of(tid) {
                crate::kernel::end_block(e, || now);
            }
        }
    }
}

/// The notice for a profile whose threads ran with SIGPROF blocked for a noticeable part of
/// the process's CPU time (`cpu_ns`): 5 ms and 1% at least. Blocking it briefly (around a
/// fork, in a thread that only waits, as node does) is common and costs nothing.
pub fn blocked_note(cpu_ns: u64) -> Option<String> {
    let blocked = state::BLOCKED_NS.load(Ordering::Relaxed);
    (blocked >= 5_000_000 && blocked.saturating_mul(100) >= cpu_ns).then(|| {
        format!(
            "the program blocks SIGPROF in some threads: they used {:.0} ms of CPU ({:.1}% of the process's) while it was blocked: that time is shown where they unblocked it (or ended), not where it was spent",
            blocked as f64 / 1e6,
            100.0 * blocked as f64 / cpu_ns.max(1) as f64
        )
    })
}

/// [lo, hi) of the calling thread's stack.
pub(crate) fn stack_bounds() -> (usize, usize) {
    // SAFETY: attr is initialised by pthread_getattr_np before use and destroyed after.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return (0, 0);
        }
        (addr as usize, addr as usize + size)
    }
}

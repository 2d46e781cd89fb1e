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

//! The registry of sampled threads: a fixed open-addressing table keyed by tid, readable
//! from the signal handler without locks or allocation.

use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};

use crate::unwind::Ctx;

const CAPACITY: usize = 8192;
const EMPTY: i32 = 0;
const TOMBSTONE: i32 = -1;

pub struct ThreadEntry {
    pub tid: AtomicI32,
    /// Bounds of the thread's stack: every unwinder read lies in [sp, stack_hi).
    pub stack_lo: AtomicUsize,
    pub stack_hi: AtomicUsize,
    /// perf_event descriptor, or -1.
    pub perf_fd: AtomicI32,
    /// POSIX timer id + 1, or 0.
    pub timer: AtomicUsize,
    /// The first expiry was random and short: the next signal sets the real period.
    pub first_pending: AtomicBool,
    /// The thread's CFI evaluation context (allocated at registration, used only by the
    /// handler running on this thread).
    pub unwind_ctx: AtomicPtr<Ctx>,
    /// The thread's PyThreadState, when it runs Python (set by the writer thread).
    pub py_tstate: AtomicU64,
    /// The thread's thread pointer (`pthread_self()`), where its static TLS hangs: PyPy's
    /// stack of a blocked thread is read from it in wall mode.
    pub thread_ptr: AtomicU64,
    /// Kernel-time accounting (kernel.rs), used only by the thread's own handler: the
    /// kernel-catcher POSIX timer id + 1 (or 0), the thread's CPU clock at the last
    /// settlement, perf samples since then, and kernel time not yet in a sample.
    pub kernel_timer: AtomicUsize,
    pub cpu_mark: AtomicU64,
    pub user_periods: AtomicU64,
    pub credit_ns: AtomicI64,
}

impl ThreadEntry {
    /// Restarts the kernel-time accounting (kernel.rs) from the CPU clock reading `now`.
    pub fn reset_kernel_accounting(&self, now: u64) {
        self.cpu_mark.store(now, Ordering::Relaxed);
        self.user_periods.store(0, Ordering::Relaxed);
        self.credit_ns.store(0, Ordering::Relaxed);
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const INIT: ThreadEntry = ThreadEntry {
    tid: AtomicI32::new(EMPTY),
    stack_lo: AtomicUsize::new(0),
    stack_hi: AtomicUsize::new(0),
    perf_fd: AtomicI32::new(-1),
    timer: AtomicUsize::new(0),
    first_pending: AtomicBool::new(false),
    unwind_ctx: AtomicPtr::new(core::ptr::null_mut()),
    py_tstate: AtomicU64::new(0),
    thread_ptr: AtomicU64::new(0),
    kernel_timer: AtomicUsize::new(0),
    cpu_mark: AtomicU64::new(0),
    user_periods: AtomicU64::new(0),
    credit_ns: AtomicI64::new(0),
};

static TABLE: [ThreadEntry; CAPACITY] = [INIT; CAPACITY];

fn home(tid: i32) -> usize {
    (tid as u32).wrapping_mul(2_654_435_761) as usize % CAPACITY
}

/// Finds the entry of `tid`. Async-signal-safe: atomic loads only, bounded probe.
#[inline]
pub fn lookup(tid: i32) -> Option<&'static ThreadEntry> {
    let h = home(tid);
    for i in 0..CAPACITY {
        let e = &TABLE[(h + i) % CAPACITY];
        let t = e.tid.load(Ordering::Acquire);
        if t == tid {
            return Some(e);
        }
        if t == EMPTY {
            return None;
        }
    }
    None
}

/// Adds `tid` (called by the thread itself before its timer is armed).
pub fn insert(tid: i32) -> Option<&'static ThreadEntry> {
    if let Some(e) = lookup(tid) {
        return Some(e);
    }
    let h = home(tid);
    for i in 0..CAPACITY {
        let e = &TABLE[(h + i) % CAPACITY];
        let t = e.tid.load(Ordering::Acquire);
        if (t == EMPTY || t == TOMBSTONE)
            && e.tid
                .compare_exchange(t, tid, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            e.perf_fd.store(-1, Ordering::Relaxed);
            e.timer.store(0, Ordering::Relaxed);
            e.first_pending.store(false, Ordering::Relaxed);
            e.py_tstate.store(0, Ordering::Relaxed);
            e.thread_ptr.store(0, Ordering::Relaxed);
            e.kernel_timer.store(0, Ordering::Relaxed);
            e.reset_kernel_accounting(0);
            return Some(e);
        }
    }
    None
}

/// Marks the entry free; the caller then releases its timer.
pub fn remove(e: &ThreadEntry) {
    e.tid.store(TOMBSTONE, Ordering::Release);
}

/// Every live entry (for the wall-mode sampler and for fork).
pub fn live() -> impl Iterator<Item = &'static ThreadEntry> {
    TABLE.iter().filter(|e| e.tid.load(Ordering::Acquire) > 0)
}

/// Empties the table (fork child: only the forking thread survives).
pub fn clear() {
    for e in TABLE.iter() {
        e.tid.store(EMPTY, Ordering::Relaxed);
    }
}

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
    /// The thread's CPU clock + 1 when the program blocked SIGPROF in it; 0 while not
    /// blocked (registration.rs).
    pub blocked_mark: AtomicU64,
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
    blocked_mark: AtomicU64::new(0),
};

/// An open-addressing table of `N` entries keyed by tid. Lookups probe from the tid's
/// home slot and stop at the first never-used slot; removal leaves a tombstone so later
/// entries of the same probe chain stay findable.
pub struct Table<const N: usize> {
    entries: [ThreadEntry; N],
}

impl<const N: usize> Table<N> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Table { entries: [INIT; N] }
    }

    fn home(tid: i32) -> usize {
        (tid as u32).wrapping_mul(2_654_435_761) as usize % N
    }

    /// Finds the entry of `tid`. Async-signal-safe: atomic loads only, bounded probe.
    #[inline]
    pub fn lookup(&self, tid: i32) -> Option<&ThreadEntry> {
        let h = Self::home(tid);
        for i in 0..N {
            let e = &self.entries[(h + i) % N];
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

    /// Adds `tid` (called by the thread itself before its timer is armed), or finds it
    /// if present. None when the table is full.
    pub fn insert(&self, tid: i32) -> Option<&ThreadEntry> {
        if let Some(e) = self.lookup(tid) {
            return Some(e);
        }
        let h = Self::home(tid);
        for i in 0..N {
            let e = &self.entries[(h + i) % N];
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
                e.blocked_mark.store(0, Ordering::Relaxed);
                e.reset_kernel_accounting(0);
                return Some(e);
            }
        }
        None
    }

    /// Every live entry.
    pub fn live(&self) -> impl Iterator<Item = &ThreadEntry> {
        self.entries
            .iter()
            .filter(|e| e.tid.load(Ordering::Acquire) > 0)
    }

    /// Empties the table.
    pub fn clear(&self) {
        for e in self.entries.iter() {
            e.tid.store(EMPTY, Ordering::Relaxed);
        }
    }
}

/// The process's sampled threads.
static TABLE: Table<CAPACITY> = Table::new();

/// Finds the entry of `tid`. Async-signal-safe: atomic loads only, bounded probe.
#[inline]
pub fn lookup(tid: i32) -> Option<&'static ThreadEntry> {
    TABLE.lookup(tid)
}

/// Adds `tid` (called by the thread itself before its timer is armed).
pub fn insert(tid: i32) -> Option<&'static ThreadEntry> {
    TABLE.insert(tid)
}

/// Marks the entry free; the caller then releases its timer.
pub fn remove(e: &ThreadEntry) {
    e.tid.store(TOMBSTONE, Ordering::Release);
}

/// Every live entry (for the wall-mode sampler and for fork).
pub fn live() -> impl Iterator<Item = &'static ThreadEntry> {
    TABLE.live()
}

/// Empties the table (fork child: only the forking thread survives).
pub fn clear() {
    TABLE.clear()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tids that all share one home slot in a table of `N` entries.
    fn colliding<const N: usize>(n: usize) -> Vec<i32> {
        let home = Table::<N>::home(1);
        (1..100_000)
            .filter(|&t| Table::<N>::home(t) == home)
            .take(n)
            .collect()
    }

    #[test]
    fn insert_lookup_remove() {
        let t = Table::<64>::new();
        assert!(t.lookup(42).is_none());
        let e = t.insert(42).unwrap();
        e.perf_fd.store(7, Ordering::Relaxed);
        assert_eq!(t.lookup(42).unwrap().perf_fd.load(Ordering::Relaxed), 7);
        // Inserting again finds the same entry (a thread re-registering).
        assert!(core::ptr::eq(t.insert(42).unwrap(), e));
        remove(e);
        assert!(t.lookup(42).is_none());
        // A reused entry starts clean.
        let e = t.insert(42).unwrap();
        assert_eq!(e.perf_fd.load(Ordering::Relaxed), -1);
    }

    #[test]
    fn a_tombstone_keeps_the_rest_of_the_probe_chain_findable() {
        let t = Table::<16>::new();
        let tids = colliding::<16>(3);
        let entries: Vec<_> = tids.iter().map(|&tid| t.insert(tid).unwrap()).collect();
        remove(entries[0]);
        assert!(t.lookup(tids[0]).is_none());
        assert_eq!(
            t.lookup(tids[2]).unwrap().tid.load(Ordering::Relaxed),
            tids[2]
        );
        // The tombstone is reused by the next insert on that chain.
        let again = t.insert(tids[0]).unwrap();
        assert!(core::ptr::eq(again, entries[0]));
        assert_eq!(t.live().count(), 3);
    }

    #[test]
    fn a_full_table_refuses_and_clear_empties_it() {
        let t = Table::<8>::new();
        for tid in 1..=8 {
            assert!(t.insert(tid).is_some(), "tid {tid}");
        }
        assert!(t.insert(9).is_none());
        // Lookups of absent tids end even with no empty slot to stop at.
        assert!(t.lookup(9).is_none());
        assert_eq!(t.live().count(), 8);
        t.clear();
        assert_eq!(t.live().count(), 0);
        assert!(t.lookup(3).is_none());
    }

    #[test]
    fn concurrent_inserts_get_distinct_entries() {
        let t = Table::<256>::new();
        std::thread::scope(|s| {
            for k in 0..8 {
                let t = &t;
                s.spawn(move || {
                    for i in 0..16 {
                        t.insert(1 + k * 16 + i).unwrap();
                    }
                });
            }
        });
        let mut tids: Vec<i32> = t.live().map(|e| e.tid.load(Ordering::Relaxed)).collect();
        tids.sort();
        assert_eq!(tids, (1..=128).collect::<Vec<_>>());
    }
}

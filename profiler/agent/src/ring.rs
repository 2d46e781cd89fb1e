//! The sample ring: a bounded lock-free multi-producer queue (Vyukov's sequence-numbered
//! slots). Producers are signal handlers on any thread; the single consumer is whoever
//! holds the writer lock. A producer never waits: when the ring is full the sample is
//! counted as lost. Memory comes from one mmap at start, so the handler never allocates.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Frames a slot holds: the unwinder's hard depth limit.
pub const MAX_FRAMES: usize = 256;
/// Slots in the ring (power of two). The writer drains every 10 ms: 512 slots absorb
/// ~50 threads busy at 1 kHz before a sample is lost; each slot is ~5 KB, touched lazily.
pub const SLOTS: usize = 512;
/// How often a producer retries a contended claim before giving up (the sample is lost).
const MAX_RETRIES: u32 = 64;

/// `syscall` value meaning "not blocked in a syscall".
pub const NO_SYSCALL: u64 = u64::MAX;

#[repr(C)]
pub struct SampleData {
    pub tid: u32,
    pub flags: u32,
    pub weight: u32,
    pub depth: u32,
    /// ns since process start (monotonic clock).
    pub time_ns: u64,
    /// Wall mode: the syscall an off-CPU thread is blocked in, else [`NO_SYSCALL`].
    pub syscall: u64,
    /// Leaf (interrupted pc) first, then return addresses outward.
    pub frames: [u64; MAX_FRAMES],
    /// Python frames, innermost first (`npy` of them).
    pub npy: u32,
    pub py: [crate::python::PyFrame; crate::python::MAX_PY_FRAMES],
}

impl SampleData {
    /// The native frames, leaf first.
    pub fn native(&self) -> &[u64] {
        &self.frames[..(self.depth as usize).min(self.frames.len())]
    }

    /// The Python frames (or PyPy entries), innermost first.
    pub fn py_frames(&self) -> &[crate::python::PyFrame] {
        &self.py[..(self.npy as usize).min(self.py.len())]
    }
}

/// Types whose all-zero bytes are a valid value (integers and arrays of them): a fresh
/// anonymous mapping is a valid ring of them.
///
/// # Safety
/// Implement only for `repr(C)` types made of integers, arrays of integers and other
/// `Plain` types.
pub unsafe trait Plain {}

// SAFETY: repr(C), integers and integer arrays only (PyFrame is two u64 fields).
unsafe impl Plain for SampleData {}

#[repr(C)]
struct Slot<T> {
    seq: AtomicUsize,
    data: UnsafeCell<T>,
}

#[repr(C, align(64))]
struct Padded(AtomicUsize);

/// A ring of `N` slots of `T` (`N` a power of two).
#[repr(C)]
pub struct RingOf<T, const N: usize> {
    enqueue: Padded,
    dequeue: Padded,
    slots: [Slot<T>; N],
}

/// The sample ring.
pub type Ring = RingOf<SampleData, SLOTS>;
/// A claimed slot of the sample ring.
pub type Claim<'a> = ClaimOf<'a, SampleData>;

// SAFETY: slots are handed to exactly one producer (by the CAS on `enqueue`) and to the
// consumer only after the producer published them (Release/Acquire on `seq`).
unsafe impl<T, const N: usize> Sync for RingOf<T, N> {}

/// A claimed slot: fill `data()`, then `publish()`.
pub struct ClaimOf<'a, T> {
    slot: &'a Slot<T>,
    pos: usize,
}

impl<T> ClaimOf<'_, T> {
    #[allow(clippy::mut_from_ref)]
    pub fn data(&self) -> &mut T {
        // SAFETY: the CAS in `claim` gave this producer exclusive use of the slot until
        // `publish`; no one else reads or writes `data` in between.
        unsafe { &mut *self.slot.data.get() }
    }

    pub fn publish(self) {
        self.slot.seq.store(self.pos + 1, Ordering::Release);
    }
}

impl<T: Plain, const N: usize> RingOf<T, N> {
    const MASK: usize = {
        assert!(N.is_power_of_two());
        N - 1
    };

    /// Maps a zeroed ring and numbers its slots. Called outside any signal handler.
    pub fn new() -> Option<&'static Self> {
        let size = core::mem::size_of::<Self>();
        // SAFETY: an anonymous private mapping; the result is checked. Zeroed memory is a
        // valid ring (atomics and `Plain` data); it is never unmapped, hence 'static.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: p is a fresh, page-aligned mapping of size_of::<Self>() zeroed bytes.
        let ring: &'static Self = unsafe { &*(p as *const Self) };
        ring.reset();
        Some(ring)
    }

    /// Forgets every sample: after fork, a slot a vanished thread was filling would
    /// otherwise stay claimed forever.
    pub fn reset(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            s.seq.store(i, Ordering::Relaxed);
        }
        self.enqueue.0.store(0, Ordering::Relaxed);
        self.dequeue.0.store(0, Ordering::Release);
    }

    /// Slots claimed and not yet taken by the consumer (approximate while producers run).
    pub fn len(&self) -> usize {
        let e = self.enqueue.0.load(Ordering::Relaxed);
        let d = self.dequeue.0.load(Ordering::Relaxed);
        e.saturating_sub(d)
    }

    /// Claims a slot, or `None` when the ring is full. Async-signal-safe: atomics only.
    #[inline]
    pub fn claim(&self) -> Option<ClaimOf<'_, T>> {
        let mut pos = self.enqueue.0.load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let slot = &self.slots[pos & Self::MASK];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.enqueue.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(ClaimOf { slot, pos }),
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return None; // full: the consumer has not freed this slot yet
            } else {
                pos = self.enqueue.0.load(Ordering::Relaxed);
            }
        }
        None
    }

    /// Takes the oldest published sample. Only one consumer at a time (the writer lock).
    pub fn pop<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let pos = self.dequeue.0.load(Ordering::Relaxed);
        let slot = &self.slots[pos & Self::MASK];
        if slot.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: seq == pos+1 means the producer published the slot (Release) and no
        // producer can claim it again until we store pos+N below.
        let r = f(unsafe { &*slot.data.get() });
        slot.seq.store(pos + N, Ordering::Release);
        self.dequeue.0.store(pos + 1, Ordering::Relaxed);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(ring: &Ring, tid: u32, time_ns: u64) -> bool {
        match ring.claim() {
            Some(c) => {
                let d = c.data();
                d.tid = tid;
                d.time_ns = time_ns;
                c.publish();
                true
            }
            None => false,
        }
    }

    #[test]
    fn samples_come_out_in_order_across_wrap_around() {
        let ring = Ring::new().unwrap();
        let mut next_out = 0u64;
        // Five times round the ring, with the consumer a varying distance behind.
        for i in 0..(5 * SLOTS as u64) {
            assert!(push(ring, 1, i));
            while i + 1 - next_out > i % 400 {
                assert_eq!(ring.pop(|d| d.time_ns), Some(next_out));
                next_out += 1;
            }
        }
        while let Some(t) = ring.pop(|d| d.time_ns) {
            assert_eq!(t, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 5 * SLOTS as u64);
        assert!(ring.pop(|_| ()).is_none());
    }

    #[test]
    fn a_full_ring_refuses_and_frees_a_slot_per_pop() {
        let ring = Ring::new().unwrap();
        for i in 0..SLOTS as u64 {
            assert!(push(ring, 1, i), "slot {i}");
        }
        assert!(ring.claim().is_none());
        assert_eq!(ring.pop(|d| d.time_ns), Some(0));
        assert!(push(ring, 1, 1000));
        assert!(ring.claim().is_none());
        ring.reset();
        assert!(ring.pop(|_| ()).is_none());
        assert!(push(ring, 1, 7));
        assert_eq!(ring.pop(|d| d.time_ns), Some(7));
    }

    #[test]
    fn a_claimed_but_unpublished_slot_holds_back_the_consumer() {
        let ring = Ring::new().unwrap();
        let first = ring.claim().unwrap();
        assert!(push(ring, 1, 2));
        // The second sample is published, but the consumer takes samples in slot order.
        assert!(ring.pop(|_| ()).is_none());
        first.data().time_ns = 1;
        first.publish();
        assert_eq!(ring.pop(|d| d.time_ns), Some(1));
        assert_eq!(ring.pop(|d| d.time_ns), Some(2));
    }

    #[test]
    fn a_full_ring_counts_the_sample_lost() {
        // The only unit test that installs a process-wide ring.
        let ring = Ring::new().unwrap();
        crate::state::RING.store(ring as *const _ as *mut _, Ordering::Release);
        let before = crate::state::LOST.load(Ordering::Relaxed);
        for _ in 0..SLOTS {
            crate::state::claim_slot().unwrap().publish();
        }
        assert!(crate::state::claim_slot().is_none());
        assert!(crate::state::claim_slot().is_none());
        assert_eq!(crate::state::LOST.load(Ordering::Relaxed) - before, 2);
    }

    #[test]
    fn concurrent_producers_lose_nothing_and_keep_their_own_order() {
        const PRODUCERS: u32 = 8;
        const EACH: u64 = 20_000;
        let ring = Ring::new().unwrap();
        let mut next = vec![0u64; PRODUCERS as usize];
        std::thread::scope(|s| {
            for tid in 0..PRODUCERS {
                s.spawn(move || {
                    for i in 0..EACH {
                        // A full ring refuses: retry, as a test of no loss or duplication.
                        while !push(ring, tid, i) {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let mut got = 0;
            while got < PRODUCERS as u64 * EACH {
                match ring.pop(|d| (d.tid, d.time_ns)) {
                    Some((tid, i)) => {
                        // Each producer's samples arrive once each, in its own order.
                        assert_eq!(i, next[tid as usize], "producer {tid}");
                        next[tid as usize] += 1;
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        assert!(next.iter().all(|&n| n == EACH));
        assert!(ring.pop(|_| ()).is_none());
    }
}

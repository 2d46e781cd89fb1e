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
const MASK: usize = SLOTS - 1;
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

#[repr(C)]
struct Slot {
    seq: AtomicUsize,
    data: UnsafeCell<SampleData>,
}

#[repr(C, align(64))]
struct Padded(AtomicUsize);

#[repr(C)]
pub struct Ring {
    enqueue: Padded,
    dequeue: Padded,
    slots: [Slot; SLOTS],
}

// SAFETY: slots are handed to exactly one producer (by the CAS on `enqueue`) and to the
// consumer only after the producer published them (Release/Acquire on `seq`).
unsafe impl Sync for Ring {}

/// A claimed slot: fill `data()`, then `publish()`.
pub struct Claim<'a> {
    slot: &'a Slot,
    pos: usize,
}

impl Claim<'_> {
    #[allow(clippy::mut_from_ref)]
    pub fn data(&self) -> &mut SampleData {
        // SAFETY: the CAS in `claim` gave this producer exclusive use of the slot until
        // `publish`; no one else reads or writes `data` in between.
        unsafe { &mut *self.slot.data.get() }
    }

    pub fn publish(self) {
        self.slot.seq.store(self.pos + 1, Ordering::Release);
    }
}

impl Ring {
    /// Maps a zeroed ring and numbers its slots. Called outside any signal handler.
    pub fn new() -> Option<&'static Ring> {
        let size = core::mem::size_of::<Ring>();
        // SAFETY: an anonymous private mapping; the result is checked. Zeroed memory is a
        // valid Ring (atomics and plain integers); it is never unmapped, hence 'static.
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
        // SAFETY: p is a fresh, page-aligned mapping of size_of::<Ring>() zeroed bytes.
        let ring: &'static Ring = unsafe { &*(p as *const Ring) };
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

    /// Claims a slot, or `None` when the ring is full. Async-signal-safe: atomics only.
    #[inline]
    pub fn claim(&self) -> Option<Claim<'_>> {
        let mut pos = self.enqueue.0.load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let slot = &self.slots[pos & MASK];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.enqueue.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Claim { slot, pos }),
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
    pub fn pop<R>(&self, f: impl FnOnce(&SampleData) -> R) -> Option<R> {
        let pos = self.dequeue.0.load(Ordering::Relaxed);
        let slot = &self.slots[pos & MASK];
        if slot.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: seq == pos+1 means the producer published the slot (Release) and no
        // producer can claim it again until we store pos+SLOTS below.
        let r = f(unsafe { &*slot.data.get() });
        slot.seq.store(pos + SLOTS, Ordering::Release);
        self.dequeue.0.store(pos + 1, Ordering::Relaxed);
        Some(r)
    }
}

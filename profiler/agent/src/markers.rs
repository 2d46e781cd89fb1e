//! Request markers: the C ABI `prof_marker_begin(name)` / `prof_marker_end()` that programs
//! (or prof's `prof_markers` Python module) call around a request, a job, a phase.
//!
//! Each call puts one event into the marker ring (a ring like the samples', of its own):
//! the thread, the time on the samples' clock and the thread's CPU clock, and for a begin
//! the name's bytes. The
//! writer pairs nothing: it interns names and logs the events (MARKER_NAME and MARKERS
//! records); readers pair each end with the innermost open begin of its thread. Both calls
//! are async-signal-safe (a raw gettid, clock_gettime and the lock-free ring: no locks,
//! no allocation) and return at once when the process is not being profiled.

use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::ring::RingOf;
use crate::{state, sys};

/// Longest name kept, in bytes (longer names are cut; the writer repairs a cut UTF-8 tail).
pub const MAX_NAME: usize = 200;
/// Slots of the marker ring: 4096 × 232 bytes, touched as used. Markers have a ring of
/// their own so that a flood of them never costs samples their slots (and vice versa).
pub const SLOTS: usize = 4096;

/// Marker events that found the ring full even after waiting for the writer (reported by
/// the writer as a notice).
pub static LOST_EVENTS: AtomicU64 = AtomicU64::new(0);

/// What a marker slot holds (`kind`).
pub const END: u32 = 0;
pub const BEGIN: u32 = 1;
pub const INTERVAL: u32 = 2;

/// One marker call, as the writer receives it.
#[repr(C)]
pub struct MarkerSlot {
    pub tid: u32,
    pub kind: u32,
    /// ns since process start (the samples' clock); an interval's start.
    pub time_ns: u64,
    /// The calling thread's CPU clock.
    pub cpu_ns: u64,
    /// An interval's length.
    pub duration_ns: u64,
    pub len: u32,
    pub name: [u8; MAX_NAME],
}

impl MarkerSlot {
    pub fn name(&self) -> &[u8] {
        &self.name[..(self.len as usize).min(MAX_NAME)]
    }
}

// SAFETY: repr(C), integers and a byte array only.
unsafe impl crate::ring::Plain for MarkerSlot {}

pub type MarkerRing = RingOf<MarkerSlot, SLOTS>;

static RING: AtomicPtr<MarkerRing> = AtomicPtr::new(core::ptr::null_mut());
/// A wake-up of the writer is under way (set by the first producer past the threshold,
/// cleared by the writer when it drains): one wake per drain, not one per event.
static WAKING: AtomicBool = AtomicBool::new(false);

/// Maps the marker ring (at process start, before any marker can be recorded).
pub fn init() -> bool {
    match MarkerRing::new() {
        Some(r) => {
            RING.store(r as *const _ as *mut _, Ordering::Release);
            true
        }
        None => false,
    }
}

pub fn ring() -> Option<&'static MarkerRing> {
    let p = RING.load(Ordering::Acquire);
    // SAFETY: RING is either null or a mapping made by MarkerRing::new, never unmapped.
    unsafe { p.as_ref() }
}

/// Bumped in a fork child: every thread's cached id is then stale.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

std::thread_local! {
    /// (fork generation, thread id): gettid is a system call (~250 ns here), twice per
    /// marker. A const-initialized Cell has no destructor, so the slot is always valid
    /// (and the agent is preloaded: its TLS is static, reached without allocating).
    static TID: core::cell::Cell<(u32, u32)> = const { core::cell::Cell::new((u32::MAX, 0)) };
}

fn thread_id() -> u32 {
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    TID.try_with(|c| match c.get() {
        (g, tid) if g == generation && tid != 0 => tid,
        _ => {
            let tid = sys::gettid() as u32;
            c.set((generation, tid));
            tid
        }
    })
    .unwrap_or_else(|_| sys::gettid() as u32)
}

/// After fork: forget the parent's unwritten events (and a slot a vanished thread held).
pub fn reset_after_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = ring() {
        r.reset();
    }
    LOST_EVENTS.store(0, Ordering::Relaxed);
    WAKING.store(false, Ordering::Relaxed);
}

/// The writer drained the ring: the next producer past the threshold wakes it again.
pub fn drained() {
    WAKING.store(false, Ordering::Release);
}

fn wake_writer() {
    if !WAKING.swap(true, Ordering::AcqRel) {
        // unpark: an atomic swap and a futex wake, no lock, no allocation.
        state::wake_writer();
    }
}

/// `interval`: (start, end) on CLOCK_MONOTONIC, ns.
fn event(name: Option<&[u8]>, interval: Option<(u64, u64)>) {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let Some(ring) = ring() else {
        return;
    };
    let errno = sys::errno();
    let claim = match ring.claim() {
        Some(c) => Some(c),
        None => {
            // Full: the writer is behind a flood of markers. Wake it and wait a little
            // (at most ~2 ms, in 50 µs naps: nanosleep is async-signal-safe) rather than
            // lose the event; a stalled writer costs the event, never a hang.
            wake_writer();
            (0..40).find_map(|_| {
                nap_50us();
                ring.claim()
            })
        }
    };
    let Some(claim) = claim else {
        LOST_EVENTS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: errno_location is the calling thread's errno.
        unsafe { *sys::errno_location() = errno };
        return;
    };
    let d = claim.data();
    d.tid = thread_id();
    let at = interval.map_or_else(sys::monotonic_ns, |(start, _)| start);
    d.time_ns = at.saturating_sub(state::start_ns());
    // The CPU time of a whole interval is unknown (its work may interleave with other
    // work on the thread), so its event skips the clock (~600 ns here).
    d.cpu_ns = if interval.is_some() {
        0
    } else {
        sys::thread_cpu_ns()
    };
    match name {
        Some(bytes) => {
            d.kind = if interval.is_some() { INTERVAL } else { BEGIN };
            let n = bytes.len().min(MAX_NAME);
            d.name[..n].copy_from_slice(&bytes[..n]);
            d.len = n as u32;
        }
        None => {
            d.kind = END;
            d.len = 0;
        }
    }
    d.duration_ns = interval.map_or(0, |(start, end)| end.saturating_sub(start));
    claim.publish();
    if ring.len() > SLOTS / 4 {
        wake_writer();
    }
    // SAFETY: errno_location is the calling thread's errno; restoring it keeps the
    // caller's errno as it was (the calls above may have set it).
    unsafe { *sys::errno_location() = errno };
}

fn nap_50us() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000,
    };
    // SAFETY: a valid timespec; nanosleep is async-signal-safe.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// The bytes of a NUL-terminated `name` (NULL: empty), at most MAX_NAME of them.
///
/// # Safety
/// `name` is NULL or points to a NUL-terminated string.
unsafe fn name_bytes<'a>(name: *const c_char) -> &'a [u8] {
    if name.is_null() {
        return &[];
    }
    // SAFETY: the caller passes a NUL-terminated string (the contract above). Only the
    // bytes up to the NUL are read, at most MAX_NAME + 1 of them: a bounded scan instead
    // of strlen, so a missing NUL cannot run far.
    let mut n = 0usize;
    while n <= MAX_NAME {
        // SAFETY: bytes up to and including the NUL are readable (the contract above),
        // and the scan stops at the first NUL.
        if unsafe { *name.add(n) } == 0 {
            break;
        }
        n += 1;
    }
    // SAFETY: the n bytes just scanned are readable.
    unsafe { core::slice::from_raw_parts(name as *const u8, n) }
}

/// Starts a marker named `name` (a NUL-terminated string; NULL means an empty name) on the
/// calling thread. Markers nest: [`prof_marker_end`] ends the innermost one.
///
/// # Safety
/// `name` is NULL or points to a NUL-terminated string (only the first 200 bytes are read).
#[no_mangle]
pub unsafe extern "C" fn prof_marker_begin(name: *const c_char) {
    // SAFETY: this function's contract is name_bytes's.
    let bytes = unsafe { name_bytes(name) };
    state::guard("prof_marker_begin", || (), || event(Some(bytes), None));
}

/// Ends the calling thread's innermost open marker (no-op when none is open).
#[no_mangle]
pub extern "C" fn prof_marker_end() {
    state::guard("prof_marker_end", || (), || event(None, None));
}

/// Records a whole marker from `start_ns` to `end_ns` (CLOCK_MONOTONIC, ns: Python's
/// `time.monotonic_ns()`, node's `process.hrtime.bigint()`, Java's `System.nanoTime()`),
/// not nested by thread: for work that interleaves on one thread (an event loop's
/// requests). Its CPU time is unknown.
///
/// # Safety
/// `name` is NULL or points to a NUL-terminated string (only the first 200 bytes are read).
#[no_mangle]
pub unsafe extern "C" fn prof_marker_interval(name: *const c_char, start_ns: u64, end_ns: u64) {
    // SAFETY: this function's contract is name_bytes's.
    let bytes = unsafe { name_bytes(name) };
    state::guard(
        "prof_marker_interval",
        || (),
        || event(Some(bytes), Some((start_ns, end_ns.max(start_ns)))),
    );
}

/// Whether the process is being profiled (markers are recorded): lets a caller skip
/// building marker names when nothing would record them.
#[no_mangle]
pub extern "C" fn prof_marker_enabled() -> core::ffi::c_int {
    (state::ACTIVE.load(Ordering::Acquire) && state::ring().is_some()) as core::ffi::c_int
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_the_limit() {
        let mut slot = zeroed();
        let long = "x".repeat(300);
        for name in ["", "a", "GET /users/{id}", long.as_str()] {
            let n = name.len().min(MAX_NAME);
            slot.name[..n].copy_from_slice(&name.as_bytes()[..n]);
            slot.len = n as u32;
            assert_eq!(slot.name(), &name.as_bytes()[..n]);
        }
    }

    fn zeroed() -> MarkerSlot {
        MarkerSlot {
            tid: 0,
            kind: 0,
            time_ns: 0,
            cpu_ns: 0,
            duration_ns: 0,
            len: 0,
            name: [0; MAX_NAME],
        }
    }
}

//! Request markers: the C ABI `prof_marker_begin(name)` / `prof_marker_end()` that programs
//! (or prof's `prof_markers` Python module) call around a request, a job, a phase.
//!
//! Each call puts one event into the sample ring, like a sample: the thread, the time on
//! the samples' clock and the thread's CPU clock, and for a begin the name's bytes. The
//! writer pairs nothing: it interns names and logs the events (MARKER_NAME and MARKERS
//! records); readers pair each end with the innermost open begin of its thread. Both calls
//! are async-signal-safe (a raw gettid, clock_gettime and the lock-free ring: no locks,
//! no allocation) and return at once when the process is not being profiled.

use core::ffi::c_char;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{state, sys};

/// Slot flag (agent-internal, never written to the log): this slot is a marker event.
pub const SLOT_MARKER: u32 = 1 << 31;
/// Longest name kept, in bytes (longer names are cut; the writer repairs a cut UTF-8 tail).
pub const MAX_NAME: usize = 200;

/// Marker events that found the ring full (reported by the writer as a notice).
pub static LOST_EVENTS: AtomicU64 = AtomicU64::new(0);

/// What a marker slot holds (its `weight` field).
pub const END: u32 = 0;
pub const BEGIN: u32 = 1;
pub const INTERVAL: u32 = 2;
/// Where an interval's length sits in a marker slot's `frames` (past any name).
pub const DURATION_WORD: usize = crate::ring::MAX_FRAMES - 1;

/// `interval`: (start, end) on CLOCK_MONOTONIC, ns.
fn event(name: Option<&[u8]>, interval: Option<(u64, u64)>) {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let Some(ring) = state::ring() else {
        return;
    };
    let errno = sys::errno();
    let Some(claim) = ring.claim() else {
        LOST_EVENTS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let d = claim.data();
    d.tid = sys::gettid() as u32;
    d.flags = SLOT_MARKER;
    let at = interval.map_or_else(sys::monotonic_ns, |(start, _)| start);
    d.time_ns = at.saturating_sub(state::start_ns());
    // The thread's CPU clock rides in the `syscall` field, unused by marker slots.
    d.syscall = sys::thread_cpu_ns();
    d.npy = 0;
    match name {
        Some(bytes) => {
            d.weight = if interval.is_some() { INTERVAL } else { BEGIN };
            d.depth = pack(bytes, &mut d.frames) as u32;
        }
        None => {
            d.weight = END;
            d.depth = 0;
        }
    }
    if let Some((start, end)) = interval {
        d.frames[DURATION_WORD] = end.saturating_sub(start);
    }
    claim.publish();
    // SAFETY: errno_location is the calling thread's errno; restoring it keeps the
    // caller's errno as it was (the calls above may have set it).
    unsafe { *sys::errno_location() = errno };
}

/// Packs `bytes` (at most [`MAX_NAME`]) little-endian into `words`; returns the length kept.
fn pack(bytes: &[u8], words: &mut [u64]) -> usize {
    let n = bytes.len().min(MAX_NAME).min(words.len() * 8);
    for (i, w) in words[..n.div_ceil(8)].iter_mut().enumerate() {
        let mut v = 0u64;
        for (k, &b) in bytes[i * 8..(i * 8 + 8).min(n)].iter().enumerate() {
            v |= (b as u64) << (8 * k);
        }
        *w = v;
    }
    n
}

/// The name bytes of a marker slot (`len` = the slot's depth).
pub fn unpack(words: &[u64], len: usize) -> Vec<u8> {
    let len = len.min(MAX_NAME).min(words.len() * 8);
    (0..len)
        .map(|i| (words[i / 8] >> (8 * (i % 8))) as u8)
        .collect()
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
    fn names_survive_the_slot() {
        let mut words = [0u64; 32];
        for name in ["", "a", "GET /users/{id}", &"x".repeat(300)] {
            let n = pack(name.as_bytes(), &mut words);
            assert_eq!(n, name.len().min(MAX_NAME));
            assert_eq!(unpack(&words, n), &name.as_bytes()[..n]);
        }
    }
}

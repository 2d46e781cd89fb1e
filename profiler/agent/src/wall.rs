//! Wall-clock mode: threads that are blocked or sleeping are sampled too.
//!
//! Running threads are sampled by their CPU-time timers as in cpu mode: that signal is
//! raised while the thread runs in user space, so it never interrupts a system call.
//! Blocked threads are never signalled (a signal would make nanosleep, poll, epoll_wait
//! and friends fail with EINTR). Instead the `prof-sampler` thread, every period, reads
//! each blocked thread's state and its user pc/sp from /proc/self/task/TID/syscall, copies
//! its stack with process_vm_readv (which fails cleanly instead of faulting), unwinds the
//! copy with the handler's DWARF unwinder from that pc/sp (falling back to recovering the
//! frame-pointer chain by scanning for a valid frame record), and records an off-CPU
//! sample whose leaf is the system call.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashMap;

use prof_format::flags::OFF_CPU;

use crate::ring::{MAX_FRAMES, NO_SYSCALL};
use crate::{modules, real, state, sys, threads};

static RUN: AtomicBool = AtomicBool::new(false);
/// Bytes above the blocked sp scanned for the first frame record.
const SCAN_BYTES: usize = 16 * 1024;
/// Bytes of a blocked thread's stack copied for the DWARF unwinder (once per blocking
/// episode: results are cached while the thread stays blocked at the same pc/sp).
const COPY_BYTES: usize = 256 * 1024;

pub fn start() {
    RUN.store(true, Ordering::Release);
    if !real::spawn_internal(c"prof-sampler", sampler_main) {
        state::warn("cannot start the wall-clock sampler thread; sampling CPU time only");
    }
}

pub fn stop() {
    RUN.store(false, Ordering::Release);
}

/// After fork the sampler thread is gone; start_process starts a new one.
pub fn forget() {
    RUN.store(false, Ordering::Release);
}

struct Cached {
    stat: std::fs::File,
    syscall: std::fs::File,
    /// (syscall nr, sp, pc) of the last unwind, and its result.
    key: (u64, u64, u64),
    frames: Vec<u64>,
    flags: u32,
    /// Python frames of the blocking episode, innermost first (read once per episode).
    py: Vec<crate::python::PyFrame>,
    /// Ticks the thread has spent blocked at `key` not yet recorded: a thread blocked in
    /// one place gets one sample of weight N per `BATCH_TICKS` ticks, not N samples.
    pending: u32,
}

const BATCH_TICKS: u32 = 10;

impl Cached {
    fn flush(&mut self, tid: i32) {
        if self.pending > 0 {
            push(
                tid,
                self.key.0,
                &self.frames,
                &self.py,
                self.flags,
                self.pending,
            );
            self.pending = 0;
        }
    }
}

/// The sampler thread's start routine.
extern "C" fn sampler_main(_: *mut c_void) -> *mut c_void {
    state::guard("the wall-clock sampler thread", || (), sample_loop);
    core::ptr::null_mut()
}

fn sample_loop() {
    let period = state::period_ns().max(10_000);
    let mut cache: HashMap<i32, Cached> = HashMap::new();
    let mut next = sys::monotonic_ns();
    let mut buf = vec![0u8; COPY_BYTES];
    let mut dwarf = Dwarf {
        ctx: crate::unwind::new_context(),
        // SAFETY: SampleData is plain integers; all-zero is a valid value.
        data: Box::new(unsafe { core::mem::zeroed() }),
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    while RUN.load(Ordering::Acquire) {
        next += period;
        let now = sys::monotonic_ns();
        if next < now {
            next = now; // fell behind (suspended?): do not burst to catch up
        } else {
            std::thread::sleep(std::time::Duration::from_nanos(next - now));
        }
        if !state::sampling() {
            continue;
        }
        ranges.clear();
        ranges.extend_from_slice(modules::exec_ranges());
        let mut seen = Vec::new();
        for e in threads::live() {
            let tid = e.tid.load(Ordering::Acquire);
            let hi = e.stack_hi.load(Ordering::Acquire) as u64;
            seen.push(tid);
            let c = match cache.get_mut(&tid) {
                Some(c) => c,
                None => {
                    let open = |f: &str| std::fs::File::open(format!("/proc/self/task/{tid}/{f}"));
                    let (Ok(stat), Ok(syscall)) = (open("stat"), open("syscall")) else {
                        continue;
                    };
                    cache.entry(tid).or_insert(Cached {
                        stat,
                        syscall,
                        key: (u64::MAX, 0, 0),
                        frames: Vec::new(),
                        flags: 0,
                        py: Vec::new(),
                        pending: 0,
                    })
                }
            };
            if !blocked(&c.stat) {
                c.flush(tid);
                continue;
            }
            let Some((nr, sp, pc)) = read_syscall(&c.syscall) else {
                c.flush(tid);
                continue;
            };
            if c.key != (nr, sp, pc) {
                c.flush(tid);
                c.key = (nr, sp, pc);
                let (frames, flags) = unwind_blocked(pc, sp, hi, &ranges, &mut buf, &mut dwarf);
                c.frames = frames;
                c.flags = flags;
                c.py.clear();
                let tstate = e.py_tstate.load(Ordering::Relaxed);
                if let Some(py) = crate::python::get().filter(|_| tstate != 0) {
                    let n = crate::python::walk_other(py, tstate, tid as u64, &mut dwarf.data.py);
                    crate::code_watch::note_sampled(dwarf.data.py.get(..n).unwrap_or(&[]));
                    c.py.extend_from_slice(&dwarf.data.py[..n]);
                } else if let Some(pp) = crate::pypy::get() {
                    // [issue 17] A blocked PyPy thread's stack of Python code.
                    let tp = e.thread_ptr.load(Ordering::Relaxed);
                    let n = crate::pypy::walk_other(pp, tp, sp, &mut dwarf.data.py);
                    c.py.extend_from_slice(&dwarf.data.py[..n]);
                }
            }
            c.pending += 1;
            if c.pending >= BATCH_TICKS {
                c.flush(tid);
            }
        }
        cache.retain(|tid, c| {
            let alive = seen.contains(tid);
            if !alive {
                c.flush(*tid);
            }
            alive
        });
    }
    for (tid, c) in cache.iter_mut() {
        c.flush(*tid);
    }
}

fn push(tid: i32, nr: u64, frames: &[u64], py: &[crate::python::PyFrame], flags: u32, weight: u32) {
    let Some(claim) = state::claim_slot() else {
        return;
    };
    let d = claim.data();
    d.tid = tid as u32;
    d.weight = weight.max(1);
    d.flags = flags | OFF_CPU;
    d.time_ns = sys::monotonic_ns().saturating_sub(state::start_ns());
    d.syscall = if nr == u64::MAX { NO_SYSCALL } else { nr };
    let n = frames.len().min(MAX_FRAMES);
    d.frames[..n].copy_from_slice(&frames[..n]);
    d.depth = n as u32;
    let npy = py.len().min(d.py.len());
    d.py[..npy].copy_from_slice(&py[..npy]);
    d.npy = npy as u32;
    claim.publish();
}

/// The thread is sleeping (S) or in uninterruptible wait (D), per /proc/.../stat.
fn blocked(stat: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 512];
    let Ok(n) = stat.read_at(&mut b, 0) else {
        return false;
    };
    let s = &b[..n];
    // The state follows the last ')' (the command name may contain anything).
    match s.iter().rposition(|&c| c == b')') {
        Some(i) => matches!(s.get(i + 2), Some(b'S') | Some(b'D')),
        None => false,
    }
}

/// Parses /proc/self/task/TID/syscall: "NR a1 .. a6 SP PC", "-1 SP PC", or "running".
fn read_syscall(f: &std::fs::File) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 256];
    let n = f.read_at(&mut b, 0).ok()?;
    let s = std::str::from_utf8(&b[..n]).ok()?;
    let parts: Vec<&str> = s.split_whitespace().collect();
    let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    let nr = match *parts.first()? {
        "-1" => u64::MAX,
        t => t.parse::<u64>().ok()?,
    };
    let k = parts.len();
    if k < 3 {
        return None;
    }
    Some((nr, hex(parts[k - 2])?, hex(parts[k - 1])?))
}

fn read_word(addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    (sys::safe_read(addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
}

fn in_exec(ranges: &[(u64, u64)], a: u64) -> bool {
    ranges.iter().any(|&(s, e)| a >= s && a < e)
}

/// Is `ret` just after a call instruction? (x86_64 encodings of call rel32 and call r/m.)
fn after_call(ret: u64) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return true;
    }
    let mut b = [0u8; 8];
    if ret < 8 || sys::safe_read(ret - 8, &mut b) != 8 {
        return false;
    }
    let at = |back: usize| b[8 - back];
    let modrm_call = |back: usize| at(back) == 0xff && (at(back - 1) & 0x38) == 0x10;
    at(5) == 0xe8 || modrm_call(2) || modrm_call(3) || modrm_call(6) || modrm_call(7)
}

fn is_return_address(ranges: &[(u64, u64)], a: u64) -> bool {
    in_exec(ranges, a) && after_call(a)
}

/// The sampler thread's DWARF unwinding state (the handler's unwinder, run on a copy).
struct Dwarf {
    ctx: Box<crate::unwind::Ctx>,
    data: Box<crate::ring::SampleData>,
}

/// Stack of a blocked thread. First the DWARF unwinder, from the pc and sp /proc gives,
/// over a copy of the stack; it knows no other register, so a frame whose CFA is rbp-based
/// stops it unless a callee saved rbp. If it stops early, the frame-pointer scan below
/// runs too, and the longer result is kept.
fn unwind_blocked(
    pc: u64,
    sp: u64,
    hi: u64,
    ranges: &[(u64, u64)],
    buf: &mut [u8],
    dwarf: &mut Dwarf,
) -> (Vec<u64>, u32) {
    if sp == 0 || sp >= hi {
        return (vec![pc], prof_format::flags::UNWIND_STOPPED);
    }
    let len = ((hi - sp) as usize).min(buf.len()) & !7;
    let n = sys::safe_read(sp, &mut buf[..len]) & !7;
    let max = state::max_depth().min(MAX_FRAMES);
    let stack = crate::unwind::CopiedStack {
        base: sp,
        bytes: &buf[..n],
    };
    dwarf.data.frames[0] = pc;
    // The unwinder's register numbering is x86_64's.
    let (depth, flags) = if cfg!(target_arch = "x86_64") {
        crate::unwind::unwind(
            &mut dwarf.data,
            crate::unwind::Regs::from_pc_sp(pc, sp),
            &stack,
            Some(&mut dwarf.ctx),
            max,
        )
    } else {
        (1, prof_format::flags::UNWIND_STOPPED)
    };
    let by_cfi = dwarf.data.frames[..depth].to_vec();
    if flags & prof_format::flags::UNWIND_STOPPED == 0 {
        return (by_cfi, flags);
    }
    let scanned = scan_frame_records(pc, sp, hi, ranges, &buf[..n], max);
    if scanned.0.len() > by_cfi.len() {
        scanned
    } else {
        (by_cfi, flags)
    }
}

/// The fallback: the pc, the return address into the syscall wrapper's caller (the first
/// return address above sp), then the frame-pointer chain from the first valid frame
/// record above it. `buf` holds the stack copied from `sp`.
fn scan_frame_records(
    pc: u64,
    sp: u64,
    hi: u64,
    ranges: &[(u64, u64)],
    buf: &[u8],
    max: usize,
) -> (Vec<u64>, u32) {
    let mut frames = vec![pc];
    let n = buf.len().min(SCAN_BYTES) & !7;
    let word = |off: usize| u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
    let mut off = 0;
    // The wrapper's own return address.
    while off + 8 <= n {
        let w = word(off);
        off += 8;
        if is_return_address(ranges, w) {
            frames.push(w);
            break;
        }
    }
    // The first frame record [saved fp][return address] that starts a plausible chain.
    let mut fp = None;
    while off + 16 <= n {
        let at = sp + off as u64;
        let (saved, ret) = (word(off), word(off + 8));
        let chain_ok = saved == 0
            || (saved > at
                && saved < hi
                && saved % 8 == 0
                && read_word(saved + 8).is_some_and(|r| r == 0 || is_return_address(ranges, r)));
        if chain_ok && is_return_address(ranges, ret) {
            fp = Some(at);
            break;
        }
        off += 8;
    }
    let Some(mut fp) = fp else {
        return (frames, prof_format::flags::UNWIND_STOPPED);
    };
    while fp != 0 {
        if frames.len() >= max {
            return (frames, prof_format::flags::TRUNCATED);
        }
        if fp % 8 != 0 || fp + 16 > hi {
            return (frames, prof_format::flags::UNWIND_STOPPED);
        }
        let (Some(next), Some(ret)) = (read_word(fp), read_word(fp + 8)) else {
            return (frames, prof_format::flags::UNWIND_STOPPED);
        };
        if ret == 0 {
            break;
        }
        frames.push(ret);
        if next != 0 && next <= fp {
            return (frames, prof_format::flags::UNWIND_STOPPED);
        }
        fp = next;
    }
    (frames, 0)
}

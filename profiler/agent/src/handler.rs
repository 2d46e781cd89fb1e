//! The SIGPROF handler. Everything here is async-signal-safe: atomics, reads of the
//! interrupted thread's own stack within its bounds (and of the CPython frames and code
//! objects that python.rs shows to be live), writes into a pre-claimed ring slot, and the
//! syscalls gettid, clock_gettime (the thread's CPU clock, kernel.rs), process_vm_readv
//! (Python state; the code before a pc, kernel.rs) and ioctl (a thread's first sample
//! only). No allocation, no locks, no panics (no indexing that can fail; the crate is
//! built without overflow checks) — and a panic that happens anyway is caught, not
//! unwound into the interrupted code (`on_sigprof`).

use core::ffi::c_void;
use core::sync::atomic::Ordering;

use crate::ring::{SampleData, MAX_FRAMES, NO_SYSCALL};
use crate::state::{self, claim_slot, PREV_FLAGS, PREV_HANDLER, SIGNALS};
use crate::sys::*;
use crate::threads::{self, ThreadEntry};
use crate::{kernel, timer};

/// Installs the handler. SA_RESTART so that a syscall the signal interrupts is restarted;
/// SA_ONSTACK so a thread near its stack limit with an alternate stack is not pushed over.
pub fn install() -> bool {
    // SAFETY: zeroed sigaction is valid; we fill handler, flags and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = core::mem::zeroed();
        if crate::real::sigaction(libc::SIGPROF, &sa, &mut old) != 0 {
            return false;
        }
        if old.sa_sigaction != on_sigprof as *const () as usize {
            PREV_HANDLER.store(old.sa_sigaction, Ordering::Relaxed);
            PREV_FLAGS.store(old.sa_flags as usize, Ordering::Relaxed);
        }
    }
    true
}

extern "C" fn on_sigprof(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let errno = errno_location();
    // SAFETY: errno_location points at this thread's errno.
    let saved = unsafe { *errno };
    // The handler is written not to panic (no overflow checks in this crate, no indexing
    // that can fail). Should it panic anyway, the panic must not unwind into the
    // interrupted code: it is caught here and sampling stops for good. (The panic's own
    // reporting allocates, which is not async-signal-safe; but the alternative is
    // aborting the program.)
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(sig, info, uc))).is_err() {
        state::stop_after_panic();
    }
    // SAFETY: as above; restoring it keeps the interrupted code's errno intact.
    unsafe { *errno = saved };
}

/// What one of our signals is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A perf-event overflow: one period of user time.
    Perf,
    /// A POSIX timer expiry (PROF_TIMER=posix or no perf events): `1 + overrun` periods,
    /// at a tick that may have come during a syscall.
    Posix(u32),
    /// The kernel catcher (kernel.rs) next to a perf event: `1 + overrun` periods.
    Catcher(u32),
}

fn handle(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    if info.is_null() || uc.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo_t to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    let thread = threads::lookup(gettid());
    // Ours: a POSIX timer expiry carrying one of our magic values, or a perf-event
    // overflow (F_SETSIG sets si_code to a POLL_* code). Recognized without the thread
    // table: a signal already queued when its thread unregistered is still ours, and must
    // not reach the program (whose default SIGPROF action would kill it).
    let kind = if code == SI_TIMER {
        // SAFETY: a timer siginfo carries si_overrun and si_value at these offsets.
        let magic = unsafe { siginfo_ptr(info, SI_SIGVAL_OFFSET) } as usize;
        if magic == timer::TIMER_MAGIC {
            // SAFETY: as above.
            let over = unsafe { siginfo_int(info, SI_OVERRUN_OFFSET) };
            Some(Kind::Posix(1u32.saturating_add(over.max(0) as u32)))
        } else if magic == timer::KERNEL_MAGIC {
            // SAFETY: as above.
            let over = unsafe { siginfo_int(info, SI_OVERRUN_OFFSET) };
            Some(Kind::Catcher(1u32.saturating_add(over.max(0) as u32)))
        } else {
            None
        }
    } else if (POLL_IN..=POLL_HUP).contains(&code) {
        // SAFETY: an F_SETSIG siginfo (POLL_*) carries si_fd at this offset.
        let fd = unsafe { siginfo_int(info, SI_FD_OFFSET) };
        match thread {
            Some(t) if fd >= 0 && fd == t.perf_fd.load(Ordering::Relaxed) => {
                if t.first_pending.load(Ordering::Relaxed) {
                    timer::set_period(t, fd, state::period_ns());
                }
                Some(Kind::Perf)
            }
            // Not this thread's current event: a stale one of ours (re-registration,
            // teardown) — unless the program has a SIGPROF handler of its own, which may
            // have asked for this signal on its own descriptor.
            _ => {
                let prev = PREV_HANDLER.load(Ordering::Relaxed);
                (prev == libc::SIG_DFL || prev == libc::SIG_IGN).then_some(Kind::Perf)
            }
        }
    } else {
        None
    };
    match (thread, kind) {
        (Some(t), Some(k)) => {
            if state::sampling() {
                on_timer(t, uc, k);
            }
        }
        (None, Some(_)) => {}
        (_, None) => forward(sig, info, uc),
    }
}

/// One of our timers fired on thread `t`: take its user and/or kernel samples.
fn on_timer(t: &ThreadEntry, uc: *mut c_void, kind: Kind) {
    // (POSIX timer samples carry their overrun: time while blocked is in their weight.)
    let blocked = match kind {
        // A signal arriving means SIGPROF is unblocked now, however that happened (a
        // handler's return, sigsuspend): the measure ends.
        Kind::Perf | Kind::Catcher(_) => kernel::end_block(t, thread_cpu_ns),
        Kind::Posix(_) => 0,
    };
    if blocked > 0 {
        // The program had SIGPROF blocked and just unblocked it (the pending signal comes
        // as the unblocking call returns): the user time it used meanwhile goes to the
        // stack that unblocked it — not to [kernel], which the CPU clock would otherwise
        // make of it — and no longer counts as kernel credit.
        t.user_periods.fetch_add(blocked as u64, Ordering::Relaxed);
        sample(t, uc, blocked, NO_SYSCALL);
    }
    match kind {
        Kind::Perf => {
            sample(t, uc, 1, NO_SYSCALL);
            let n = t.user_periods.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= kernel::SETTLE_EVERY && kernel::enabled() {
                // Kernel time the catcher could not place (page faults, no catcher): past
                // the limit it goes to this stack under [kernel].
                let credit = kernel::settle(t, thread_cpu_ns());
                if credit >= kernel::drain_limit_ns() {
                    let w = kernel::take(t, credit, u32::MAX, false);
                    if w > 0 {
                        sample(t, uc, w, prof_format::UNKNOWN_SYSCALL);
                    }
                }
            }
        }
        Kind::Posix(weight) => {
            let (pc, acc) = pc_and_syscall_register(uc);
            let syscall = if kernel::enabled() {
                kernel::syscall_at(pc, acc).unwrap_or(NO_SYSCALL)
            } else {
                NO_SYSCALL
            };
            sample(t, uc, weight, syscall);
        }
        Kind::Catcher(ticks) => {
            let (pc, acc) = pc_and_syscall_register(uc);
            if let Some(nr) = kernel::syscall_at(pc, acc) {
                // The tick came during this syscall: it stands for `ticks` periods of
                // the thread's time, paid from the kernel time the clock says is due.
                let credit = kernel::settle(t, thread_cpu_ns());
                let w = kernel::take(t, credit, ticks.min(kernel::max_tick_periods()), true);
                if w > 0 {
                    sample(t, uc, w, nr);
                }
            }
        }
    }
}

/// The interrupted pc and the syscall-number register (rax / x8).
#[inline]
fn pc_and_syscall_register(uc: *mut c_void) -> (u64, u64) {
    let uc = uc as *const libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the kernel passes the interrupted ucontext_t to SA_SIGINFO handlers.
        let g = unsafe { &(*uc).uc_mcontext.gregs };
        (
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_RAX as usize] as u64,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        let m = unsafe { &(*uc).uc_mcontext };
        (m.pc, m.regs[8])
    }
}

/// A SIGPROF that is not from our timers (e.g. `kill -PROF`): do what would have happened
/// without prof.
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    let prev = PREV_HANDLER.load(Ordering::Relaxed);
    if prev == libc::SIG_IGN {
        return;
    }
    if prev == libc::SIG_DFL {
        // The default action of SIGPROF is to terminate: restore it and let the signal,
        // pending until this handler returns, do that.
        // SAFETY: sigaction, getpid and tgkill are async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            crate::real::sigaction(libc::SIGPROF, &sa, core::ptr::null_mut());
            libc::syscall(libc::SYS_tgkill, libc::getpid(), gettid(), libc::SIGPROF);
        }
        return;
    }
    if PREV_FLAGS.load(Ordering::Relaxed) & libc::SA_SIGINFO as usize != 0 {
        // SAFETY: the program installed this function as an SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(prev) };
        f(sig, info, uc);
    } else {
        // SAFETY: the program installed this function as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(prev) };
        f(sig);
    }
}

/// Registers of the interrupted context: (pc, frame pointer, stack pointer).
#[inline]
fn registers(uc: *mut c_void) -> (u64, u64, u64) {
    let uc = uc as *const libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the kernel passes the interrupted ucontext_t to SA_SIGINFO handlers.
        let g = unsafe { &(*uc).uc_mcontext.gregs };
        (
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_RBP as usize] as u64,
            g[libc::REG_RSP as usize] as u64,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        let m = unsafe { &(*uc).uc_mcontext };
        (m.pc, m.regs[29], m.sp)
    }
}

/// Records the calling thread's own stack with `weight` periods (not from a signal), with
/// SIGPROF blocked meanwhile: a signal handler running `sample` on this thread now would
/// share its unwinding context.
pub fn sample_here(t: &ThreadEntry, weight: u32) {
    crate::real::with_sigprof_blocked(|| {
        // SAFETY: ucontext_t is plain data (all-zero valid); getcontext fills it with this
        // thread's registers, whose stack (this frame and its callers) stays live while
        // `sample_with` reads it as it would an interrupted context.
        let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::getcontext(&mut uc) } == 0 {
            // The stack starts in this function: leave the agent's own frames out.
            let own = crate::unwind::module_span(sample_here as *const () as u64);
            let uc = &mut uc as *mut libc::ucontext_t as *mut c_void;
            sample_with(t, uc, weight, NO_SYSCALL, own);
        }
    });
}

/// Records the interrupted stack with `weight` periods; `syscall` other than NO_SYSCALL
/// adds a kernel leaf (`[syscall NAME]`, or `[kernel]` for UNKNOWN_SYSCALL).
fn sample(t: &ThreadEntry, uc: *mut c_void, weight: u32, syscall: u64) {
    sample_with(t, uc, weight, syscall, None);
}

/// [`sample`], leaving out the innermost frames that lie in `skip` (a code range).
fn sample_with(
    t: &ThreadEntry,
    uc: *mut c_void,
    weight: u32,
    syscall: u64,
    skip: Option<(u64, u64)>,
) {
    let Some(claim) = claim_slot() else { return };
    let d = claim.data();
    let (pc, fp, sp) = registers(uc);
    d.tid = t.tid.load(Ordering::Relaxed) as u32;
    d.weight = weight;
    d.time_ns = monotonic_ns().saturating_sub(state::start_ns());
    d.syscall = syscall;
    d.frames[0] = pc;
    // A kernel leaf counts against the depth limit: the stack keeps max_depth frames.
    let max_depth = state::max_depth()
        .saturating_sub(usize::from(syscall != NO_SYSCALL))
        .max(1);
    let lo = t.stack_lo.load(Ordering::Relaxed) as u64;
    let hi = t.stack_hi.load(Ordering::Relaxed) as u64;
    d.npy = 0;
    // [issue 17] PyPy's own stack of Python code, from the thread's TLS; with it, the
    // native walk stops at libpypy (see unwind::Stack::stop).
    let mut stop = (0, 0);
    let pypy = if t.py_tstate.load(Ordering::Relaxed) == 0 {
        crate::pypy::get()
    } else {
        None
    };
    if let Some(pp) = pypy {
        let (s, h) = if sp >= lo && sp < hi {
            (sp, hi)
        } else {
            (0, 0)
        };
        d.npy = crate::pypy::walk(pp, s, h, &mut d.py) as u32;
        if d.npy > 0 {
            stop = pp.text_span;
        }
    }
    #[cfg(target_arch = "x86_64")]
    let (depth, flags) = {
        let _ = fp;
        if sp < lo || sp >= hi {
            // Running on a stack we do not know (a coroutine, an alternate signal stack):
            // reading around it could fault, so keep the leaf only.
            (1, prof_format::flags::UNWIND_STOPPED)
        } else {
            let regs = crate::unwind::Regs::from_ucontext(uc as *const libc::ucontext_t);
            // SAFETY: the context belongs to this thread's entry and only this thread's
            // handler uses it; SIGPROF is masked while the handler runs, so no reentry.
            let ctx = unsafe { t.unwind_ctx.load(Ordering::Acquire).as_mut() };
            crate::unwind::unwind(
                d,
                regs,
                &crate::unwind::Stack { lo: sp, hi, stop },
                ctx,
                max_depth,
            )
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (depth, flags) = walk_frame_pointers(d, fp, sp, lo, hi, max_depth);
    let mut depth = depth.min(d.frames.len());
    if let Some((lo, hi)) = skip {
        let n = d.frames[..depth]
            .iter()
            .take_while(|&&a| a >= lo && a < hi)
            .count();
        if n > 0 && n < depth {
            d.frames.copy_within(n..depth, 0);
            depth -= n;
        }
    }
    d.depth = depth as u32;
    d.flags = flags;
    let tstate = t.py_tstate.load(Ordering::Relaxed);
    if tstate != 0 {
        if let Some(py) = crate::python::get() {
            // [sp, hi) is known mapped only when sp lies in the thread's own stack.
            let live = if sp >= lo && sp < hi {
                crate::python::LiveStack { sp, hi }
            } else {
                crate::python::LiveStack { sp: 0, hi: 0 }
            };
            d.npy = crate::python::walk(py, tstate, d.tid as u64, live, &mut d.py) as u32;
            crate::code_watch::note_sampled(d.py_frames());
        }
    }
    claim.publish();
}

/// Follows the frame-pointer chain from `fp`, after the leaf in `d.frames[0]`. Every read
/// is of 16 bytes at an 8-aligned address inside [sp, hi): the live part of the interrupted
/// thread's own stack, which is mapped. Frames must move strictly outward, so the walk ends.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub fn walk_frame_pointers(
    d: &mut SampleData,
    mut fp: u64,
    sp: u64,
    lo: u64,
    hi: u64,
    max_depth: usize,
) -> (usize, u32) {
    let max = max_depth.clamp(1, MAX_FRAMES);
    let mut depth = 1usize;
    if sp < lo || sp >= hi {
        // Running on a stack we do not know (a coroutine, an alternate signal stack):
        // reading around it could fault, so keep the leaf only.
        return (depth, prof_format::flags::UNWIND_STOPPED);
    }
    let mut floor = sp;
    loop {
        if fp == 0 {
            return (depth, 0); // the outermost frame (thread entry zeroes the fp)
        }
        if fp < floor || fp > hi.saturating_sub(16) || !fp.is_multiple_of(8) {
            return (depth, prof_format::flags::UNWIND_STOPPED);
        }
        // SAFETY: fp and fp+8 lie in [sp, hi - 8], the mapped live stack of this thread
        // (checked just above), and are 8-aligned.
        let (next, ret) = unsafe {
            (
                core::ptr::read_volatile(fp as *const u64),
                core::ptr::read_volatile((fp + 8) as *const u64),
            )
        };
        if ret == 0 {
            return (depth, 0);
        }
        if depth >= max {
            return (depth, prof_format::flags::TRUNCATED);
        }
        if let Some(slot) = d.frames.get_mut(depth) {
            *slot = ret;
        }
        depth += 1;
        floor = fp + 16;
        fp = next;
    }
}

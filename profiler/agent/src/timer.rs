//! Per-thread CPU-time timers that deliver SIGPROF to the thread that used the CPU.
//!
//! First choice: a perf_event_open software cpu-clock event counting this thread's user
//! time, whose every overflow is routed to the thread as SIGPROF (F_SETOWN_EX + F_SETSIG).
//! It fires at the requested rate; POSIX CPU timers only fire on the scheduler tick
//! (250 Hz with CONFIG_HZ=250).
//! Fallback (perf events forbidden, e.g. in containers): timer_create(
//! CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID), with si_overrun added to the sample weight.
//! Beside a perf event, a second POSIX CPU timer, the kernel catcher, places the kernel
//! time the perf event does not see (kernel.rs).

use core::sync::atomic::Ordering;

use crate::sys::*;
use crate::threads::ThreadEntry;

/// sigev_value of our POSIX timers, so the handler tells them from the program's.
pub const TIMER_MAGIC: usize = 0x7072_6f66; // "prof"
/// sigev_value of the kernel catcher next to a perf event (kernel.rs).
pub const KERNEL_MAGIC: usize = 0x7072_6f6b; // "prok"

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    Perf,
    Posix,
}

/// The timer PROF_TIMER asks for (None: auto, perf events first).
pub fn preferred() -> Option<Source> {
    match crate::state::timer_pref() {
        1 => Some(Source::Perf),
        2 => Some(Source::Posix),
        _ => None,
    }
}

/// Arms a timer for the calling thread. `prefer` = None tries perf first.
pub fn arm(
    e: &ThreadEntry,
    tid: libc::pid_t,
    period_ns: u64,
    prefer: Option<Source>,
) -> Result<Source, i32> {
    let first = first_expiry(random_u64(tid as u64), period_ns);
    e.reset_kernel_accounting(thread_cpu_ns());
    if prefer != Some(Source::Posix) {
        match arm_perf(e, tid, period_ns, first) {
            Ok(()) => {
                if crate::kernel::catcher_allowed() {
                    // Without it, kernel time is still counted (settled every few perf
                    // samples), only not placed under the syscall that spent it.
                    let _ = arm_catcher(e, tid, period_ns, first);
                }
                return Ok(Source::Perf);
            }
            Err(err) if prefer == Some(Source::Perf) => return Err(err),
            Err(_) => {}
        }
    }
    arm_posix(e, tid, period_ns, first).map(|_| Source::Posix)
}

/// The shortest first period: 200 µs, or half the period when that is shorter.
const FIRST_FLOOR_NS: u64 = 200_000;

/// The first expiry: random in (0, period] — threads started together do not fire
/// together, sampling does not alias with the program's own periodic work, and a thread
/// shorter than a period is sampled with a probability proportional to its CPU time —
/// but never below a floor. A perf cpu-clock event fires an hrtimer interrupt every
/// period until the handler sets the real one, and in a VM each interrupt costs ~10 µs of
/// the thread's own clock: a first period of 10-20 µs kept a thread in interrupts for
/// up to 14 s (1000 short threads: 0.8 s became 4-18 s in one run of three; CI failed).
/// Raising (0, floor) to the floor only delays those threads' first sample by less than
/// the floor; only threads that end before it lose a sample they might have had.
fn first_expiry(random: u64, period_ns: u64) -> u64 {
    let period = period_ns.max(1);
    let floor = FIRST_FLOOR_NS.min(period / 2).max(1);
    (1 + random % period).max(floor)
}

fn arm_perf(e: &ThreadEntry, tid: libc::pid_t, period_ns: u64, first_ns: u64) -> Result<(), i32> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: core::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_period: first_ns,
        flags: PERF_ATTR_FLAG_DISABLED | PERF_ATTR_FLAG_EXCLUDE_KERNEL | PERF_ATTR_FLAG_EXCLUDE_HV,
        wakeup_events: 1,
        ..Default::default()
    };
    // SAFETY: attr is a valid perf_event_attr of the size it declares; pid = one of this
    // process's threads, cpu -1 ("any CPU"), which perf_event_paranoid <= 2 allows.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    } as libc::c_int;
    if fd < 0 {
        return Err(errno());
    }
    let fd = move_fd_high(fd);
    learn_perf_inode(fd);
    let owner = FOwnerEx {
        type_: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: fcntl/ioctl on the descriptor just opened; results checked.
    let ok = unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC) == 0
            && libc::fcntl(fd, F_SETSIG, libc::SIGPROF) == 0
            && libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx) == 0
            && libc::ioctl(fd, PERF_EVENT_IOC_RESET, 0) == 0
    };
    if !ok {
        let err = errno();
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    e.first_pending
        .store(first_ns != period_ns, Ordering::Release);
    e.perf_fd.store(fd, Ordering::Release);
    // Enabled without an overflow limit: with O_ASYNC set, every overflow queues SIGPROF
    // for the owner thread, so the handler needs no per-sample re-arming ioctl
    // (PERF_EVENT_IOC_REFRESH cost ~6 µs a sample here). A SIGPROF still pending when the
    // next overflow comes is not queued twice (standard signals coalesce). The timer then
    // keeps its phase, and getrusage's user/system split (tick-sampled) can be skewed by
    // it; CPU clocks (CLOCK_THREAD_CPUTIME_ID) are not.
    // SAFETY: ioctl on our own descriptor.
    if unsafe { libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) } != 0 {
        let err = errno();
        e.perf_fd.store(-1, Ordering::Release);
        // SAFETY: closing our own descriptor, unpublished above.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    Ok(())
}

fn arm_posix(e: &ThreadEntry, tid: libc::pid_t, period_ns: u64, first_ns: u64) -> Result<(), i32> {
    posix_timer(tid, TIMER_MAGIC, period_ns, first_ns, &e.timer).map(|_| ())
}

/// The kernel catcher: a POSIX CPU timer beside the perf event, whose signals come on the
/// way back to user space (kernel.rs).
fn arm_catcher(
    e: &ThreadEntry,
    tid: libc::pid_t,
    period_ns: u64,
    first_ns: u64,
) -> Result<(), i32> {
    posix_timer(tid, KERNEL_MAGIC, period_ns, first_ns, &e.kernel_timer).map(|_| ())
}

/// Creates and starts a CLOCK_THREAD_CPUTIME_ID timer signalling thread `tid` with SIGPROF
/// and `magic`; its id + 1 is published in `slot` before it can fire.
fn posix_timer(
    tid: libc::pid_t,
    magic: usize,
    period_ns: u64,
    first_ns: u64,
    slot: &core::sync::atomic::AtomicUsize,
) -> Result<libc::timer_t, i32> {
    // SAFETY: sigevent is plain data; all-zero is a valid starting point.
    let mut sev: libc::sigevent = unsafe { core::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = libc::SIGPROF;
    sev.sigev_value = libc::sigval {
        sival_ptr: magic as *mut libc::c_void,
    };
    sev.sigev_notify_thread_id = tid;
    let mut id: libc::timer_t = core::ptr::null_mut();
    // SAFETY: sev and id are valid; the timer signals only this thread.
    if unsafe { libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut id) } != 0 {
        return Err(errno());
    }
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as _,
        tv_nsec: (ns % 1_000_000_000) as _,
    };
    let its = libc::itimerspec {
        it_interval: ts(period_ns),
        it_value: ts(first_ns),
    };
    slot.store(id as usize + 1, Ordering::Release);
    // SAFETY: id was just created by timer_create.
    if unsafe { libc::timer_settime(id, 0, &its, core::ptr::null_mut()) } != 0 {
        let err = errno();
        slot.store(0, Ordering::Release);
        // SAFETY: deleting the timer we created, unpublished above.
        unsafe { libc::timer_delete(id) };
        return Err(err);
    }
    Ok(id)
}

/// Stops and releases the thread's timer (thread exit, or profiling stops).
pub fn disarm(e: &ThreadEntry) {
    let fd = e.perf_fd.swap(-1, Ordering::AcqRel);
    if fd >= 0 && is_perf_fd(fd) {
        // SAFETY: the descriptor is still a perf event (not a number the program closed
        // and reused) and no longer published in the table.
        unsafe {
            libc::ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
            libc::close(fd);
        }
    }
    for slot in [&e.timer, &e.kernel_timer] {
        let t = slot.swap(0, Ordering::AcqRel);
        if t != 0 {
            // SAFETY: t-1 is a timer id we created and have not deleted.
            unsafe { libc::timer_delete((t - 1) as libc::timer_t) };
        }
    }
}

/// Called from the handler after the first perf overflow: set the real period after the
/// random first one.
#[inline]
pub fn set_period(e: &ThreadEntry, fd: libc::c_int, period_ns: u64) {
    e.first_pending.store(false, Ordering::Relaxed);
    let p = period_ns;
    // SAFETY: ioctl is a plain syscall (async-signal-safe); p outlives the call.
    unsafe { libc::ioctl(fd, PERF_EVENT_IOC_PERIOD, &p as *const u64) };
}

/// Writer thread: re-arms threads whose perf event the program closed (daemons and
/// subprocess-style code close every descriptor above 2).
pub fn rearm_closed(period_ns: u64) {
    for e in crate::threads::live() {
        let fd = e.perf_fd.load(Ordering::Acquire);
        if fd < 0 || is_perf_fd(fd) {
            continue;
        }
        let tid = e.tid.load(Ordering::Acquire);
        // The old number is not ours any more: forget it without closing it.
        if e.perf_fd
            .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && tid > 0
        {
            let _ = arm_perf(e, tid, period_ns, period_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_expiry_is_random_within_the_period_but_never_below_the_floor() {
        let period = 1_001_001;
        let firsts: Vec<u64> = (0..10_000u64)
            .map(|i| first_expiry(random_u64(i), period))
            .collect();
        assert!(firsts
            .iter()
            .all(|&f| (FIRST_FLOOR_NS..=period).contains(&f)));
        // Raised to the floor: the share of draws that fell below it (~20%).
        let at_floor = firsts.iter().filter(|&&f| f == FIRST_FLOOR_NS).count();
        assert!((1_600..2_400).contains(&at_floor), "{at_floor}");
        // Above it, spread over the rest of the period.
        let upper_half = firsts.iter().filter(|&&f| f > period / 2).count();
        assert!((4_600..5_400).contains(&upper_half), "{upper_half}");
        // A short period keeps half of it random.
        assert!((0..1000).all(|i| first_expiry(random_u64(i), 100_000) >= 50_000));
        assert_eq!(first_expiry(7, 1), 1);
    }
}

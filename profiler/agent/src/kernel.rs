//! CPU time spent in the kernel (system calls, page faults), which the perf event does not
//! sample: it counts user time only (`exclude_kernel`, all perf_event_paranoid=2 allows),
//! and a period that expires while the thread is in the kernel is dropped.
//!
//! Two parts, both per thread:
//! - **How much**: the thread's own CPU clock (CLOCK_THREAD_CPUTIME_ID, user + system,
//!   exact). What it advanced by since the last settlement, minus one period per perf
//!   sample taken meanwhile (each stands for one period of user time), is kernel time not
//!   yet in any sample: the thread's *credit*. Settled at every kernel-catcher signal and
//!   every [`SETTLE_EVERY`]th perf sample, so one clock read (a syscall: the vDSO does not
//!   serve CPU clocks) is paid per many samples.
//! - **Where**: a second per-thread timer, a POSIX CPU timer (the *kernel catcher*). The
//!   kernel checks those on the scheduler tick and, with CONFIG_POSIX_CPU_TIMERS_TASK_WORK,
//!   sends the signal from task work on the way back to user space, after the system call
//!   in progress has finished: the signal never interrupts a syscall (no EINTR), and when
//!   the tick came during a syscall the handler runs with the pc right after its `syscall`
//!   instruction and the stack of the code that made it. Such a signal is a tick sample of
//!   syscall time: it takes its own weight (`1 + overrun` periods, about one tick) from the
//!   credit, as a sample on that stack under a `[syscall NAME]` leaf. The credit bounds it:
//!   the clock says how much kernel time there is, the ticks say where.
//!
//! Credit no syscall tick claims (kernel time outside syscalls: page faults, interrupts,
//! the sampling signals' own delivery; or no catcher) is given, past [`drain_limit_ns`],
//! to the stack of the perf sample at hand under `[kernel]`; what is left when a thread
//! or the process ends goes, through the writer, to the thread's last kernel stack.
//! (Taking the whole credit at each syscall tick instead put the signals' own delivery
//! cost, ~2.8% of a thread's CPU at 1 kHz on this VM, under whatever syscall the next tick
//! met: a compute thread's rare clock_gettime showed 7% of its time.)
//!
//! With the POSIX timer alone (PROF_TIMER=posix) every sample is a tick that may have come
//! during a syscall: [`syscall_at`] tells those apart, and their whole weight is kernel.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::ring::NO_SYSCALL;
use crate::threads::ThreadEntry;
use crate::{state, sys};

static ENABLED: AtomicBool = AtomicBool::new(true);
/// 0 unknown, 1 allowed, 2 not allowed.
static CATCHER: AtomicU8 = AtomicU8::new(0);

/// Kernel-time accounting is on (PROF_KERNEL_TIME=off turns it off: the timers alone, as
/// before; kept for measuring what it costs).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// May a kernel catcher run beside the perf event? Only where the kernel sends POSIX CPU
/// timer signals from task work (CONFIG_POSIX_CPU_TIMERS_TASK_WORK): otherwise the
/// signal is raised on the tick itself, and a tick during a blocking syscall would make
/// that syscall fail with EINTR (epoll_wait, nanosleep...), which the perf event alone never
/// causes. The kernel's config file says so when there is one; else x86_64 kernels from
/// 5.11 on (where x86 selects it).
pub fn catcher_allowed() -> bool {
    match CATCHER.load(Ordering::Relaxed) {
        1 => return enabled(),
        2 => return false,
        _ => {}
    }
    let ok = task_work_timers();
    CATCHER.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
    ok && enabled()
}

fn task_work_timers() -> bool {
    // SAFETY: utsname is plain data; uname fills it or fails.
    let mut u: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: u is valid and writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let field = |f: &[libc::c_char]| -> String {
        f.iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect()
    };
    let release = field(&u.release);
    if let Ok(cfg) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        return cfg
            .lines()
            .any(|l| l.trim() == "CONFIG_POSIX_CPU_TIMERS_TASK_WORK=y");
    }
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    cfg!(target_arch = "x86_64") && (major, minor) >= (5, 11)
}

/// Perf samples between two settlements when no catcher signal comes.
pub const SETTLE_EVERY: u64 = 16;

/// `SampleData::syscall` of an exit remainder: the writer puts it on the thread's last
/// kernel stack (depth 0: the sample has no stack of its own).
pub const REPEAT_LAST_KERNEL: u64 = NO_SYSCALL - 1;

/// Credit above which a perf-sample settlement places it on the current stack (as
/// `[kernel]`). Syscall ticks take about one tick (4 ms at HZ=250, 10 ms at HZ=100) or
/// period each: the credit of a thread whose syscalls are being caught wanders by a few
/// of those, so two of the longest ones are rarely reached by syscall time alone.
pub fn drain_limit_ns() -> i64 {
    2 * state::period_ns().max(10_000_000) as i64
}

/// The most periods one syscall tick may take: a tick of the slowest common kernel
/// (HZ=100, 10 ms) and one period. A catcher that overran by more was held back (SIGPROF
/// blocked by the program), and the CPU time behind its overrun is not this syscall's.
pub fn max_tick_periods() -> u32 {
    (10_000_000 / state::period_ns().max(1)).min(u32::MAX as u64 - 1) as u32 + 1
}

/// Restarts the calling thread's accounting (sampling starts), with SIGPROF blocked so
/// its handler cannot run in between.
pub fn reset_current() {
    let Some(e) = crate::threads::lookup(sys::gettid()) else {
        return;
    };
    crate::real::with_sigprof_blocked(|| e.reset_kernel_accounting(sys::thread_cpu_ns()));
}

/// A thread's last settlement, as it exits (its entry already unpublished) or the process
/// exits (sampling stopped): what is left goes to the thread's last kernel stack.
pub fn settle_exit(e: &ThreadEntry, tid: libc::pid_t, now: u64) {
    if !enabled() || now == 0 {
        return;
    }
    let w = take(e, settle(e, now), u32::MAX, false);
    if w == 0 {
        return;
    }
    let Some(claim) = state::claim_slot() else {
        return;
    };
    let d = claim.data();
    d.tid = tid as u32;
    d.weight = w;
    d.flags = 0;
    d.time_ns = sys::monotonic_ns().saturating_sub(state::start_ns());
    d.syscall = REPEAT_LAST_KERNEL;
    d.depth = 0;
    d.npy = 0;
    claim.publish();
}

/// Ends the measure of CPU time the thread used with SIGPROF blocked, if one runs
/// (registration.rs): adds it to the total and returns it in whole periods. `now` (the
/// thread's CPU clock) is read only then: the handler asks at every signal.
pub fn end_block(e: &ThreadEntry, now: impl FnOnce() -> u64) -> u32 {
    let mark = e.blocked_mark.swap(0, Ordering::Relaxed);
    if mark == 0 {
        return 0;
    }
    let spent = now().saturating_sub(mark - 1);
    state::BLOCKED_NS.fetch_add(spent, Ordering::Relaxed);
    (spent / state::period_ns().max(1)).min(u32::MAX as u64) as u32
}

/// At process exit (sampling stopped): every live thread's last settlement.
pub fn settle_all() {
    for e in crate::threads::live() {
        let tid = e.tid.load(Ordering::Acquire);
        if e.perf_fd.load(Ordering::Acquire) < 0 {
            continue; // POSIX timer threads: their weights already hold all their time
        }
        if let Some(now) = thread_cpu_ns_of(tid) {
            settle_exit(e, tid, now);
        }
    }
}

/// Adds the CPU time since the last settlement to the thread's credit, less the user
/// periods sampled meanwhile; returns the credit in ns. Only the thread's own handler (or
/// the thread itself, with its entry unpublished) calls this.
pub fn settle(e: &ThreadEntry, now: u64) -> i64 {
    let mark = e.cpu_mark.swap(now, Ordering::Relaxed);
    let user = e.user_periods.swap(0, Ordering::Relaxed);
    let period = state::period_ns() as i64;
    let spent = now.saturating_sub(mark) as i64;
    let credit = e
        .credit_ns
        .load(Ordering::Relaxed)
        .saturating_add(spent)
        .saturating_sub((user as i64).saturating_mul(period));
    // Debt (syscall ticks paid ahead, user samples that came a little early) is carried,
    // but bounded.
    let credit = credit.max(-drain_limit_ns());
    e.credit_ns.store(credit, Ordering::Relaxed);
    credit
}

/// Takes up to `max` whole periods out of the credit: the weight of a kernel sample (0:
/// nothing due). A syscall tick (`debt`) may run the credit into a bounded debt: capping
/// each tick at the credit at hand would shortchange syscall time systematically (the
/// credit hovers around zero while ticks take what comes in) and leave the difference to
/// be drained under `[kernel]` elsewhere.
pub fn take(e: &ThreadEntry, credit: i64, max: u32, debt: bool) -> u32 {
    let period = state::period_ns().max(1) as i64;
    let avail = if debt {
        credit.saturating_add(drain_limit_ns())
    } else {
        credit
    };
    if avail < period {
        return 0;
    }
    let w = (avail / period).min(max as i64);
    e.credit_ns.store(credit - w * period, Ordering::Relaxed);
    w as u32
}

/// The thread's CPU clock, by tid (any thread of this process; the kernel's
/// `make_thread_cpuclock(tid, CPUCLOCK_SCHED)`).
pub fn thread_cpu_ns_of(tid: libc::pid_t) -> Option<u64> {
    let clock = ((!(tid as libc::clockid_t)) << 3) | 6;
    sys::clock_ns(clock)
}

/// Is a signal delivered at `pc` the thread's return from a system call? Then returns
/// that syscall's number, or [`prof_format::UNKNOWN_SYSCALL`] if the code that loaded it
/// cannot be read. `acc` is the syscall-number register now (rax: the syscall's result
/// after it returned, or its number again when the kernel rewound the pc to restart it).
///
/// Reads at most 18 bytes of code around `pc` ([`read_code`]: the bytes before a pc need
/// not be mapped).
#[cfg(target_arch = "x86_64")]
pub fn syscall_at(pc: u64, acc: u64) -> Option<u64> {
    // [pc - 16, pc + 2): the 14 bytes before a `syscall` (0f 05) that ends at pc, and the
    // two at pc (a `syscall` about to be restarted).
    let mut b = [0u8; 18];
    let whole = pc >= 16 && read_code(pc - 16, &mut b);
    if !whole {
        // The code may start less than 16 bytes before pc: the four bytes around it.
        let mut s = [0u8; 4];
        if pc < 2 || !read_code(pc - 2, &mut s) {
            return None;
        }
        b[14..].copy_from_slice(&s);
    }
    if b[14..16] == [0x0f, 0x05] {
        return Some(if whole {
            syscall_number(&b[..14]).unwrap_or(prof_format::UNKNOWN_SYSCALL)
        } else {
            prof_format::UNKNOWN_SYSCALL
        });
    }
    if b[16..18] == [0x0f, 0x05] {
        // Interrupted and about to be restarted: the kernel put the number back in rax.
        return Some(if acc < 1024 {
            acc
        } else {
            prof_format::UNKNOWN_SYSCALL
        });
    }
    None
}

/// Copies code bytes at `addr`: directly inside a loaded module's executable segment
/// (~20 ns), else with process_vm_readv (~2 µs here), which fails instead of faulting
/// (JIT code may be unmapped or not readable).
fn read_code(addr: u64, out: &mut [u8]) -> bool {
    let end = addr.saturating_add(out.len() as u64);
    if crate::unwind::in_module_code(addr, end) {
        // SAFETY: [addr, end) lies in one module's executable PT_LOAD segment, mapped and
        // readable while the module is loaded, which it is: the interrupted thread is
        // running in it.
        let src = unsafe { core::slice::from_raw_parts(addr as *const u8, out.len()) };
        out.copy_from_slice(src);
        return true;
    }
    crate::sys::safe_read(addr, out) == out.len()
}

/// aarch64: `svc #0` (d4000001) before pc; the number is in x8, which the kernel keeps.
#[cfg(target_arch = "aarch64")]
pub fn syscall_at(pc: u64, x8: u64) -> Option<u64> {
    let mut b = [0u8; 4];
    if pc < 4 || crate::sys::safe_read(pc - 4, &mut b) != 4 || u32::from_le_bytes(b) != 0xd400_0001
    {
        return None;
    }
    // aarch64 numbers differ from x86_64's, which the log's SYSCALL nodes use.
    let _ = x8;
    Some(prof_format::UNKNOWN_SYSCALL)
}

/// The syscall number loaded into eax by the code `c` that ends right before a
/// `syscall`: `mov $imm32, %eax` (b8 imm32) or `xor %eax, %eax`, right before it or with
/// one instruction in between that does not write eax (glibc's wrappers load arguments
/// after the number, e.g. epoll_pwait, close, futex).
#[cfg(target_arch = "x86_64")]
pub fn syscall_number(c: &[u8]) -> Option<u64> {
    let n = c.len();
    let loads = |at: usize| -> Option<(u64, usize)> {
        match c.get(at..)? {
            [0xb8, a, b, d, e, ..] => Some((u32::from_le_bytes([*a, *b, *d, *e]) as u64, 5)),
            [0x31 | 0x33, 0xc0, ..] => Some((0, 2)),
            _ => None,
        }
    };
    for gap in 0..=9usize {
        for len in [5usize, 2] {
            let Some(at) = n.checked_sub(gap + len) else {
                continue;
            };
            if let Some((nr, l)) = loads(at) {
                if l == len
                    && (gap == 0 || insn_keeps_eax(&c[at + len..]) == Some(gap))
                    && nr < 1024
                {
                    return Some(nr);
                }
            }
        }
    }
    None
}

/// If `c` is exactly one instruction of a few common forms that leaves eax alone, its
/// length. Forms: mov, lea, the ALU ops with a ModRM operand, and mov imm to another
/// register, each with an optional REX prefix.
#[cfg(target_arch = "x86_64")]
fn insn_keeps_eax(c: &[u8]) -> Option<usize> {
    let (rex, rest) = match c.first()? {
        r @ 0x40..=0x4f => (*r, &c[1..]),
        _ => (0, c),
    };
    let pre = usize::from(rex != 0);
    let op = *rest.first()?;
    let rex_r = (rex >> 2) & 1;
    let rex_b = rex & 1;
    let rex_w = (rex >> 3) & 1;
    // mov $imm, %reg (not eax/rax)
    if (0xb8..=0xbf).contains(&op) {
        let reg = (op - 0xb8) | (rex_b << 3);
        let len = pre + 1 + if rex_w == 1 { 8 } else { 4 };
        return (reg != 0 && c.len() == len).then_some(len);
    }
    let modrm = *rest.get(1)?;
    let (md, reg, rm) = (modrm >> 6, ((modrm >> 3) & 7) | (rex_r << 3), modrm & 7);
    let rm_full = rm | (rex_b << 3);
    let modrm_len = if md == 3 {
        1
    } else {
        let sib = usize::from(rm == 4);
        let base5 = rm == 4 && rest.get(2).is_some_and(|s| s & 7 == 5);
        let disp = match md {
            0 if rm == 5 || base5 => 4,
            0 => 0,
            1 => 1,
            _ => 4,
        };
        1 + sib + disp
    };
    // (immediate bytes, does it write eax?)
    let (imm, writes_eax) = match op {
        // r/m <- reg forms: mov, add, or, and, sub, xor
        0x89 | 0x01 | 0x09 | 0x21 | 0x29 | 0x31 => (0, md == 3 && rm_full == 0),
        // reg <- r/m forms: mov, add, or, and, sub, xor, lea
        0x8b | 0x03 | 0x0b | 0x23 | 0x2b | 0x33 | 0x8d => (0, reg == 0),
        // compare and test write nothing
        0x39 | 0x3b | 0x85 => (0, false),
        // group 1 with imm8 / imm32 (/7 is cmp), mov r/m, imm32
        0x80 | 0x83 => (1, md == 3 && rm_full == 0 && (reg & 7) != 7),
        0x81 => (4, md == 3 && rm_full == 0 && (reg & 7) != 7),
        0xc7 => (4, md == 3 && rm_full == 0),
        _ => return None,
    };
    let len = pre + 1 + modrm_len + imm;
    (!writes_eax && c.len() == len).then_some(len)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn pad(code: &[u8]) -> Vec<u8> {
        let mut v = vec![0x90; 14 - code.len()];
        v.extend_from_slice(code);
        v
    }

    #[test]
    fn glibc_wrappers() {
        // pread64: mov $0x11,%eax
        assert_eq!(syscall_number(&pad(&[0xb8, 0x11, 0, 0, 0])), Some(17));
        // read: xor %eax,%eax
        assert_eq!(syscall_number(&pad(&[0x31, 0xc0])), Some(0));
        // epoll_pwait: mov $0x119,%eax; mov 0x4(%rsp),%edi
        assert_eq!(
            syscall_number(&pad(&[0xb8, 0x19, 0x01, 0, 0, 0x8b, 0x7c, 0x24, 0x04])),
            Some(281)
        );
        // futex: mov $0xca,%eax; xor $0x81,%sil
        assert_eq!(
            syscall_number(&pad(&[0xb8, 0xca, 0, 0, 0, 0x40, 0x80, 0xf6, 0x81])),
            Some(202)
        );
        // mov $0x3,%eax; mov %eax,%edx is fine; mov %r8d,%eax is not
        assert_eq!(
            syscall_number(&pad(&[0xb8, 0x03, 0, 0, 0, 0x89, 0xc2])),
            Some(3)
        );
        assert_eq!(
            syscall_number(&pad(&[0xb8, 0x03, 0, 0, 0, 0x44, 0x89, 0xc0])),
            None
        );
        // syscall(): the number came from a register
        assert_eq!(syscall_number(&pad(&[0x4c, 0x8b, 0x4c, 0x24, 0x08])), None);
        // mov $0x11,%eax; mov $0x5,%r9d (41 b9 imm32)
        assert_eq!(
            syscall_number(&pad(&[0xb8, 0x11, 0, 0, 0, 0x41, 0xb9, 5, 0, 0, 0])),
            Some(17)
        );
    }
}

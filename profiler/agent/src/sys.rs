//! Raw kernel interfaces the agent needs that the libc crate does not describe, and thin
//! wrappers over the async-signal-safe calls the handler makes.

use core::ffi::c_void;

/// `struct perf_event_attr`, first version (PERF_ATTR_SIZE_VER0 = 64 bytes): every field
/// the agent sets is in it, and every kernel since 2.6.31 accepts it.
#[repr(C)]
#[derive(Default)]
pub struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
}

pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
pub const PERF_ATTR_FLAG_DISABLED: u64 = 1 << 0;
pub const PERF_ATTR_FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
pub const PERF_ATTR_FLAG_EXCLUDE_HV: u64 = 1 << 6;
pub const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
pub const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
pub const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
pub const PERF_EVENT_IOC_RESET: libc::c_ulong = 0x2403;
pub const PERF_EVENT_IOC_PERIOD: libc::c_ulong = 0x4008_2404;

pub const F_SETSIG: libc::c_int = 10;
pub const F_SETOWN_EX: libc::c_int = 15;
pub const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
pub struct FOwnerEx {
    pub type_: libc::c_int,
    pub pid: libc::pid_t,
}

/// siginfo_t field offsets on x86_64/aarch64 Linux (the union starts at byte 16).
/// Timer signals: `_timer { int si_tid; int si_overrun; sigval si_sigval; }`.
/// SIGPOLL: `_sigpoll { long si_band; int si_fd; }`.
pub const SI_OVERRUN_OFFSET: usize = 20;
pub const SI_SIGVAL_OFFSET: usize = 24;
pub const SI_FD_OFFSET: usize = 24;
/// si_code range of a signal raised by F_SETSIG on a descriptor (POLL_IN .. POLL_HUP).
pub const POLL_IN: libc::c_int = 1;
pub const POLL_HUP: libc::c_int = 6;
/// si_code of a POSIX timer expiry.
pub const SI_TIMER: libc::c_int = -2;

/// Reads an `int` field of a siginfo at a byte offset.
///
/// # Safety
/// `info` must point to a siginfo_t delivered by the kernel (128 bytes).
pub unsafe fn siginfo_int(info: *const libc::siginfo_t, offset: usize) -> libc::c_int {
    // SAFETY: the kernel's siginfo_t is 128 bytes; every offset used is < 32 and aligned.
    unsafe { core::ptr::read((info as *const u8).add(offset) as *const libc::c_int) }
}

/// Reads a pointer-sized field of a siginfo at a byte offset.
///
/// # Safety
/// As [`siginfo_int`].
pub unsafe fn siginfo_ptr(info: *const libc::siginfo_t, offset: usize) -> *mut c_void {
    // SAFETY: as above; offset 24 is 8-byte aligned within the 128-byte siginfo_t.
    unsafe { core::ptr::read((info as *const u8).add(offset) as *const *mut c_void) }
}

#[inline]
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments, cannot fail and is async-signal-safe (a raw syscall).
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// CLOCK_MONOTONIC in ns. clock_gettime is async-signal-safe (POSIX.1-2008).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's errno location, saved and restored around the handler.
#[inline]
pub fn errno_location() -> *mut libc::c_int {
    // SAFETY: __errno_location returns the calling thread's errno; async-signal-safe.
    unsafe { libc::__errno_location() }
}

/// The calling thread's errno value.
pub fn errno() -> i32 {
    // SAFETY: errno_location is valid for the calling thread.
    unsafe { *errno_location() }
}

/// Moves `fd` to a high descriptor number (close-on-exec) so that the program's own
/// descriptors keep the numbers they would have without prof.
pub fn move_fd_high(fd: libc::c_int) -> libc::c_int {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur < 256 {
        return fd;
    }
    let floor = (lim.rlim_cur.min(1 << 20) * 3 / 4) as libc::c_int;
    // SAFETY: fcntl on a descriptor we own; on failure we keep the original.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if high < 0 {
        return fd;
    }
    // SAFETY: closing the original descriptor we own, now duplicated.
    unsafe { libc::close(fd) };
    high
}

/// A small xorshift generator for random first expiries (never used in the handler).
pub fn random_u64(seed: u64) -> u64 {
    let mut x = seed ^ monotonic_ns() ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// The (device, inode) of perf event descriptors: every perf event shares the kernel's
/// one anonymous inode. Learned from the first event prof opens.
static PERF_INODE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn dev_ino(fd: libc::c_int) -> Option<u64> {
    // SAFETY: stat is plain data; fstat fills it or fails.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above; fstat is async-signal-safe and only reads the descriptor.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev as u64).rotate_left(32) ^ st.st_ino as u64)
}

/// Is `fd` still one of our perf events? The program may have closed it and reused the
/// number; then it is not ours to ioctl or close. One fstat, compared with the perf
/// events' shared inode (the writer checks every thread's descriptor at every drain). The
/// inode is learned when the first event is opened, before any descriptor is published.
pub fn is_perf_fd(fd: libc::c_int) -> bool {
    let known = PERF_INODE.load(core::sync::atomic::Ordering::Relaxed);
    known != 0 && dev_ino(fd) == Some(known)
}

/// Records the perf events' inode from a descriptor perf_event_open just returned.
pub fn learn_perf_inode(fd: libc::c_int) {
    if PERF_INODE.load(core::sync::atomic::Ordering::Relaxed) == 0 {
        if let Some(k) = dev_ino(fd) {
            PERF_INODE.store(k, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A clock's time in ns, or None if the clock does not exist (a thread that has exited).
/// clock_gettime is async-signal-safe; for CPU clocks it is a real syscall (~0.7 µs here:
/// the vDSO serves only the wall clocks).
#[inline]
pub fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; a bad clock id is an error, not a fault.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The calling thread's CPU time (user + system), ns.
#[inline]
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0)
}

/// Our pid, for process_vm_readv (recorded at start and again in a forked child).
static PID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records this process's pid (at start, and in a forked child).
pub fn set_pid() {
    // SAFETY: getpid takes no arguments and cannot fail.
    PID.store(
        unsafe { libc::getpid() } as u64,
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// The pid recorded at start (and after fork).
pub fn pid() -> u64 {
    PID.load(core::sync::atomic::Ordering::Relaxed)
}

/// The agent's one `process_vm_readv`: copies each `remote` range of our own address space
/// into the matching `local` buffer, in order, stopping at the first unmapped byte.
/// Returns the bytes copied (0 on error). A plain syscall: async-signal-safe, and it
/// reports unmapped memory as an error instead of faulting — which is why the handler and
/// the wall sampler read memory they do not own through it.
#[inline]
pub fn read_own_memory(local: &[libc::iovec], remote: &[libc::iovec]) -> usize {
    let k = local.len().min(remote.len());
    // SAFETY: the slices are valid for `k` iovecs each; every local iovec describes a
    // writable buffer of the caller's of the given length (`iovec_for` below); the kernel
    // validates the remote ranges and reports EFAULT instead of faulting.
    let n = unsafe {
        libc::process_vm_readv(
            pid() as libc::pid_t,
            local.as_ptr(),
            k as _,
            remote.as_ptr(),
            k as _,
            0,
        )
    };
    n.max(0) as usize
}

/// An iovec describing `buf` (a local destination for [`read_own_memory`]).
#[inline]
pub fn iovec_for(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// An iovec describing `len` bytes at `addr` of our address space (a remote source for
/// [`read_own_memory`]: never dereferenced by us).
#[inline]
pub fn remote_iovec(addr: u64, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: len,
    }
}

/// Copies `out.len()` bytes from `addr` in our own address space, or fewer if part of the
/// range is unmapped (see [`read_own_memory`]).
#[inline]
pub fn safe_read(addr: u64, out: &mut [u8]) -> usize {
    if addr < 4096 {
        return 0;
    }
    let remote = remote_iovec(addr, out.len());
    read_own_memory(&[iovec_for(out)], &[remote])
}

/// Calls `f(info, size)` for each loaded object (`dl_iterate_phdr`) until it returns true.
/// `info` is valid for `size` bytes (at least the fields of glibc 2.4's struct). A panic in
/// `f` must not unwind through libc (which holds the loader lock meanwhile, and Rust
/// aborts at the `extern "C"` boundary): it stops the walk and is resumed here once
/// `dl_iterate_phdr` has returned.
pub fn for_each_loaded_object(mut f: impl FnMut(&libc::dl_phdr_info, usize) -> bool) {
    type Visit<'a> = &'a mut dyn FnMut(&libc::dl_phdr_info, usize) -> bool;
    struct Walk<'a> {
        f: Visit<'a>,
        panic: Option<Box<dyn std::any::Any + Send>>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the Walk below, alive and not otherwise borrowed during the
        // dl_iterate_phdr call; the loader passes a valid, non-null info.
        let (walk, info) = unsafe { (&mut *(data as *mut Walk), &*info) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (walk.f)(info, size))) {
            Ok(stop) => stop as libc::c_int,
            Err(p) => {
                walk.panic = Some(p);
                1
            }
        }
    }
    let mut walk = Walk {
        f: &mut f,
        panic: None,
    };
    // SAFETY: `visit` has dl_iterate_phdr's callback type and `walk` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut walk as *mut Walk as *mut c_void) };
    if let Some(p) = walk.panic {
        std::panic::resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_walking_loaded_objects_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| for_each_loaded_object(|_, _| panic!("in the walk")));
        assert!(r.is_err());
        // The loader's lock was released: another thread can walk the objects.
        let n = std::thread::spawn(|| {
            let mut n = 0;
            for_each_loaded_object(|_, _| {
                n += 1;
                false
            });
            n
        })
        .join()
        .unwrap();
        assert!(n > 1, "{n} objects");
    }

    #[test]
    fn safe_read_copies_mapped_memory_and_refuses_the_rest() {
        set_pid();
        let src = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut out = [0u8; 8];
        assert_eq!(safe_read(src.as_ptr() as u64, &mut out), 8);
        assert_eq!(out, src);
        assert_eq!(safe_read(8, &mut out), 0, "the zero page");
        assert_eq!(safe_read(u64::MAX - 4096, &mut out), 0, "unmapped");
    }
}

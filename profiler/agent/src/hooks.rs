//! Interposed libc entry points and per-thread registration.
//!
//! `pthread_create` is wrapped so every new thread registers itself (stack bounds, timer)
//! before running the program's start routine; a pthread key destructor unregisters it on
//! exit. `pthread_atfork` gives a forked child its own log and timers.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prof_format::TimerSource;

use crate::sys::gettid;
use crate::{state, threads, timer, warn};

type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartFn,
    *mut c_void,
) -> libc::c_int;

static REAL_CREATE: AtomicUsize = AtomicUsize::new(0);
static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static WARNED_FALLBACK: AtomicBool = AtomicBool::new(false);
static WARNED_FULL: AtomicBool = AtomicBool::new(false);

/// Looks up libc's versions of every interposed function (at load: dlsym is not
/// async-signal-safe, so the handler must find them already resolved).
pub fn resolve() {
    real(&REAL_CREATE, c"pthread_create");
    real(&REAL_SIGACTION, c"sigaction");
    real(&REAL_SIGNAL, c"signal");
    real(&REAL_SIGMASK, c"pthread_sigmask");
    real(&REAL_PROCMASK, c"sigprocmask");
    real(&REAL_DLOPEN, c"dlopen");
}

/// libc's sigaction, bypassing our interposition (for the agent's own use).
pub fn real_sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    type F = unsafe extern "C" fn(
        libc::c_int,
        *const libc::sigaction,
        *mut libc::sigaction,
    ) -> libc::c_int;
    // Resolved at load (`resolve`), so this does not call dlsym from the handler.
    let f = real(&REAL_SIGACTION, c"sigaction");
    if f == 0 {
        return -1;
    }
    // SAFETY: libc's sigaction; the caller passes valid pointers.
    unsafe { core::mem::transmute::<usize, F>(f)(sig, act, old) }
}

/// libc's pthread_sigmask, bypassing our interposition. (glibc's keeps its internal
/// signals, e.g. the one setuid() relies on, unblocked: a raw syscall would not.)
pub fn real_pthread_sigmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    let f = REAL_SIGMASK.load(Ordering::Acquire);
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: libc's pthread_sigmask, resolved at load; the caller passes valid pointers.
    unsafe { core::mem::transmute::<usize, MaskFn>(f)(how, set, old) }
}

fn real_create() -> Option<CreateFn> {
    let f = real(&REAL_CREATE, c"pthread_create");
    // SAFETY: f is libc's pthread_create, which has this signature.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, CreateFn>(f) })
}

struct Start {
    f: StartFn,
    arg: *mut c_void,
}

/// The interposed `pthread_create`.
///
/// # Safety
/// Same contract as libc's pthread_create.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    f: StartFn,
    arg: *mut c_void,
) -> libc::c_int {
    let Some(real) = real_create() else {
        return libc::EAGAIN;
    };
    if !state::ACTIVE.load(Ordering::Acquire) {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real(thread, attr, f, arg) };
    }
    let start = Box::into_raw(Box::new(Start { f, arg }));
    // SAFETY: forwarding the caller's thread/attr; `start` is freed by the trampoline, or
    // here if the thread could not be created.
    let rc = unsafe { real(thread, attr, trampoline, start.cast()) };
    if rc != 0 {
        drop(unsafe { Box::from_raw(start) });
    }
    rc
}

extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is the Box<Start> made by pthread_create above, handed over exactly once.
    let start = unsafe { Box::from_raw(p as *mut Start) };
    if state::SAMPLING.load(Ordering::Acquire) {
        register_current_thread();
    }
    (start.f)(start.arg)
}

/// Creates a pthread key whose destructor unregisters an exiting thread (it runs for
/// threads that return from their start routine and for those calling pthread_exit).
pub fn install_thread_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: key is valid; the destructor is an extern "C" fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        KEY.store(key as usize, Ordering::Release);
    }
}

extern "C" fn thread_exit(_: *mut c_void) {
    unregister_current_thread();
}

/// Registers the calling thread: stack bounds and a CPU-time timer.
pub fn register_current_thread() -> TimerSource {
    let tid = gettid();
    let Some(e) = threads::insert(tid) else {
        if !WARNED_FULL.swap(true, Ordering::Relaxed) {
            warn("too many live threads; new threads are not sampled");
        }
        return TimerSource::None;
    };
    let (lo, hi) = stack_bounds();
    let old = e.unwind_ctx.swap(
        Box::into_raw(crate::unwind::new_context()),
        Ordering::AcqRel,
    );
    if !old.is_null() {
        // SAFETY: a context left by an earlier registration of this tid (never reached
        // by a handler any more: only this thread's handler uses it, and it is here).
        drop(unsafe { Box::from_raw(old) });
    }
    e.stack_lo.store(lo, Ordering::Relaxed);
    // SAFETY: pthread_self cannot fail.
    e.thread_ptr
        .store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
    e.stack_hi.store(hi, Ordering::Release);
    let key = KEY.load(Ordering::Acquire);
    if key != usize::MAX {
        // SAFETY: a key we created; any non-null value makes the destructor run.
        unsafe {
            libc::pthread_setspecific(key as libc::pthread_key_t, std::ptr::dangling::<c_void>())
        };
    }
    crate::writer::wake();
    match timer::arm(e, tid, state::period_ns(), state::timer_pref()) {
        Ok(timer::Source::Perf) => TimerSource::PerfEvent,
        Ok(timer::Source::Posix) => {
            if state::timer_pref().is_none() && !WARNED_FALLBACK.swap(true, Ordering::Relaxed) {
                crate::writer::notice("perf_event_open is not permitted here: sampling with POSIX CPU timers, which fire at most once per kernel tick (often 250 Hz)");
            }
            TimerSource::PosixTimer
        }
        Err(errno) => {
            threads::remove(e);
            if !WARNED_FALLBACK.swap(true, Ordering::Relaxed) {
                warn(&format!(
                    "cannot arm a CPU timer for thread {tid} (errno {errno}); it is not sampled"
                ));
            }
            TimerSource::None
        }
    }
}

pub fn unregister_current_thread() {
    if let Some(e) = threads::lookup(gettid()) {
        // Unpublish first: a signal arriving in between finds no entry and does nothing.
        threads::remove(e);
        // Kernel-time credit is kept for perf-event threads only (kernel.rs).
        let perf = e.perf_fd.load(Ordering::Acquire) >= 0;
        timer::disarm(e);
        if perf && state::sampling() {
            crate::kernel::settle_exit(e, gettid(), crate::sys::thread_cpu_ns());
        }
        let ctx = e.unwind_ctx.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !ctx.is_null() {
            // SAFETY: only this thread's handler uses the context and the entry is no
            // longer findable, so nothing can be using it now.
            drop(unsafe { Box::from_raw(ctx) });
        }
    }
}

/// [lo, hi) of the calling thread's stack.
pub(crate) fn stack_bounds() -> (usize, usize) {
    // SAFETY: attr is initialised by pthread_getattr_np before use and destroyed after.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return (0, 0);
        }
        (addr as usize, addr as usize + size)
    }
}

/// Starts one of the agent's own threads: SIGPROF and every other signal blocked (the
/// program's signals must go to its own threads), not registered for sampling.
pub fn spawn_internal(
    name: &'static core::ffi::CStr,
    f: extern "C" fn(*mut c_void) -> *mut c_void,
) -> bool {
    let Some(real) = real_create() else {
        return false;
    };
    // SAFETY: signal masks are manipulated for the calling thread only and restored;
    // the new thread inherits the all-blocked mask.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        real_pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut t: libc::pthread_t = 0;
        let rc = real(&mut t, core::ptr::null(), f, core::ptr::null_mut());
        real_pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        if rc != 0 {
            return false;
        }
        libc::pthread_setname_np(t, name.as_ptr());
        libc::pthread_detach(t);
    }
    true
}

/// pthread_atfork child handler: only the forking thread exists now. Drop the parent's
/// timers and buffered samples and profile the child as a process of its own.
pub extern "C" fn after_fork_child() {
    if !state::ACTIVE.load(Ordering::Acquire) {
        return;
    }
    state::SAMPLING.store(false, Ordering::Release);
    for e in threads::live() {
        // The parent's perf descriptors were inherited; its POSIX timers were not.
        let fd = e.perf_fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 && crate::sys::is_perf_fd(fd) {
            // SAFETY: an inherited descriptor of ours, closed once.
            unsafe { libc::close(fd) };
        }
        e.timer.store(0, Ordering::Relaxed);
        e.kernel_timer.store(0, Ordering::Relaxed);
    }
    threads::clear();
    if let Some(r) = state::ring() {
        r.reset();
    }
    crate::handler::LOST.store(0, Ordering::Relaxed);
    crate::handler::SIGNALS.store(0, Ordering::Relaxed);
    crate::writer::forget();
    crate::wall::forget();
    crate::start_process();
}

/// Facts about the program's own use of SIGPROF, reported by the writer thread (the
/// interposed functions may be called from signal handlers, so they only set bits).
pub static SIGPROF_EVENTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
pub const EV_OWN_HANDLER: u32 = 1;
pub const EV_BLOCKED: u32 = 2;

/// The disposition the program believes SIGPROF has (what it set, or the original).
static PROGRAM_ACTION: std::sync::atomic::AtomicPtr<libc::sigaction> =
    std::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGNAL: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGMASK: AtomicUsize = AtomicUsize::new(0);
static REAL_PROCMASK: AtomicUsize = AtomicUsize::new(0);
static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);

fn real(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        slot.store(f, Ordering::Release);
    }
    f
}

fn ours(sig: libc::c_int) -> bool {
    sig == libc::SIGPROF && state::ACTIVE.load(Ordering::Acquire)
}

/// Records the program's own SIGPROF disposition: our handler stays installed, passes the
/// program's own SIGPROFs (not from our timers) to it, and reports the old one back.
fn set_program_action(new: &libc::sigaction) -> libc::sigaction {
    // SAFETY: zeroed sigaction is valid plain data.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    old.sa_sigaction = crate::handler::PREV_HANDLER.load(Ordering::Acquire);
    old.sa_flags = crate::handler::PREV_FLAGS.load(Ordering::Acquire) as libc::c_int;
    let prev_mask = PROGRAM_ACTION.load(Ordering::Acquire);
    if let Some(p) = unsafe { prev_mask.as_ref() } {
        old.sa_mask = p.sa_mask;
    }
    crate::handler::PREV_FLAGS.store(new.sa_flags as usize, Ordering::Release);
    crate::handler::PREV_HANDLER.store(new.sa_sigaction, Ordering::Release);
    if new.sa_sigaction != libc::SIG_DFL && new.sa_sigaction != libc::SIG_IGN {
        SIGPROF_EVENTS.fetch_or(EV_OWN_HANDLER, Ordering::Relaxed);
    }
    // One slot per change, leaked: this must not free what a concurrent reader may hold,
    // and programs change their SIGPROF handler a handful of times at most.
    let slot = Box::into_raw(Box::new(*new));
    PROGRAM_ACTION.store(slot, Ordering::Release);
    old
}

fn program_action() -> libc::sigaction {
    // SAFETY: zeroed sigaction is valid plain data.
    let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
    if let Some(p) = unsafe { PROGRAM_ACTION.load(Ordering::Acquire).as_ref() } {
        a.sa_mask = p.sa_mask;
    }
    a.sa_sigaction = crate::handler::PREV_HANDLER.load(Ordering::Acquire);
    a.sa_flags = crate::handler::PREV_FLAGS.load(Ordering::Acquire) as libc::c_int;
    a
}

/// The interposed `sigaction`.
///
/// # Safety
/// Same contract as libc's sigaction.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    if ours(sig) {
        let prev = match unsafe { act.as_ref() } {
            Some(a) => set_program_action(a),
            None => program_action(),
        };
        if let Some(o) = unsafe { old.as_mut() } {
            *o = prev;
        }
        return 0;
    }
    real_sigaction(sig, act, old)
}

/// The interposed `signal` (glibc's own calls sigaction internally, bypassing ours).
///
/// # Safety
/// Same contract as libc's signal.
#[no_mangle]
pub unsafe extern "C" fn signal(
    sig: libc::c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    type F = unsafe extern "C" fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t;
    if ours(sig) {
        // SAFETY: zeroed sigaction is valid plain data.
        let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
        a.sa_sigaction = handler;
        a.sa_flags = libc::SA_RESTART; // BSD semantics, as glibc's signal()
        return set_program_action(&a).sa_sigaction;
    }
    let f = real(&REAL_SIGNAL, c"signal");
    if f == 0 {
        return libc::SIG_ERR;
    }
    // SAFETY: libc's signal has this signature.
    unsafe { core::mem::transmute::<usize, F>(f)(sig, handler) }
}

fn note_mask(how: libc::c_int, set: *const libc::sigset_t) {
    if how == libc::SIG_UNBLOCK || set.is_null() || !state::ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: set is a valid sigset_t supplied by the program.
    if unsafe { libc::sigismember(set, libc::SIGPROF) } == 1 {
        SIGPROF_EVENTS.fetch_or(EV_BLOCKED, Ordering::Relaxed);
    }
}

type MaskFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigset_t, *mut libc::sigset_t) -> libc::c_int;

/// Passes a signal-mask change to libc's `name`, noting whether it blocks SIGPROF.
fn forward_mask(
    slot: &AtomicUsize,
    name: &core::ffi::CStr,
    missing: libc::c_int,
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    note_mask(how, set);
    let f = real(slot, name);
    if f == 0 {
        return missing;
    }
    // SAFETY: libc's pthread_sigmask and sigprocmask both have this signature; the
    // caller's arguments are forwarded unchanged.
    unsafe { core::mem::transmute::<usize, MaskFn>(f)(how, set, old) }
}

/// The interposed `pthread_sigmask`: passed through unchanged, noting SIGPROF blocks.
///
/// # Safety
/// Same contract as libc's pthread_sigmask.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    forward_mask(
        &REAL_SIGMASK,
        c"pthread_sigmask",
        libc::ENOSYS,
        how,
        set,
        old,
    )
}

/// The interposed `sigprocmask`: passed through unchanged, noting SIGPROF blocks.
///
/// # Safety
/// Same contract as libc's sigprocmask.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    forward_mask(&REAL_PROCMASK, c"sigprocmask", -1, how, set, old)
}

/// The interposed `dlopen`: passed through, then the new library's unwind tables are
/// copied and published before the program can call into it (see
/// [`crate::writer::modules_changed`]).
///
/// # Safety
/// Same contract as libc's dlopen.
#[no_mangle]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, mode: libc::c_int) -> *mut c_void {
    type F = unsafe extern "C" fn(*const libc::c_char, libc::c_int) -> *mut c_void;
    let f = real(&REAL_DLOPEN, c"dlopen");
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: libc's dlopen has this signature; arguments forwarded unchanged.
    let handle = unsafe { core::mem::transmute::<usize, F>(f)(file, mode) };
    if !handle.is_null() && state::SAMPLING.load(Ordering::Acquire) {
        crate::writer::modules_changed();
    }
    handle
}

/// The interposed `_exit`. CPython's and PyPy's `os._exit` — how multiprocessing children end —
/// skips atexit handlers, which used to lose the samples of the last drain period (up to
/// 50 ms, much of a short-lived worker's profile). When the caller is CPython's own code
/// (its return address lies in the module holding the evaluation loop), the log is
/// finished first, as at a normal exit (likewise from PyPy's library). Any other caller passes straight through: `_exit`
/// is what vfork children and signal handlers call, where finishing the log (locks,
/// allocation, and in a vfork child the parent's memory) would not be safe. Python code
/// never runs inside a C signal handler, so a call from CPython is ordinary context.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _exit(status: libc::c_int) -> ! {
    // On entry the caller's return address is at [rsp]: pass it as the second argument,
    // and tail-call (the stack is as the caller left it).
    core::arch::naked_asm!("mov rsi, [rsp]", "jmp {hook}", hook = sym exit_hook)
}

/// See the x86_64 version; the return address is in the link register here.
#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _exit(status: libc::c_int) -> ! {
    core::arch::naked_asm!("mov x1, x30", "b {hook}", hook = sym exit_hook)
}

extern "C" fn exit_hook(status: libc::c_int, caller: u64) -> ! {
    if state::ACTIVE.load(Ordering::Acquire)
        && (called_by_cpython(caller) || called_by_pypy(caller))
        && own_process()
    {
        state::SAMPLING.store(false, Ordering::Release);
        crate::wall::stop();
        crate::kernel::settle_all();
        crate::writer::finish();
    }
    loop {
        // SAFETY: what libc's _exit does: end every thread of the process.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

/// Is `addr` in the executable code of the module that holds CPython's evaluation loop
/// (libpython, or a python executable with the interpreter linked in)?
fn called_by_cpython(addr: u64) -> bool {
    let Some(py) = crate::python::get() else {
        return false;
    };
    crate::modules::exec_ranges()
        .iter()
        .any(|&(s, e)| (s..e).contains(&py.eval_start) && (s..e).contains(&addr))
}

/// [issue 17] Is `addr` in libpypy's code (PyPy's `os._exit`, how its multiprocessing
/// children end too)?
fn called_by_pypy(addr: u64) -> bool {
    crate::pypy::get().is_some_and(|pp| pp.text.iter().any(|&(s, e)| (s..e).contains(&addr)))
}

/// Not a vfork child: those share the parent's memory, agent state included, and get
/// no atfork handler, so the pid the agent recorded is the parent's.
fn own_process() -> bool {
    // SAFETY: getpid cannot fail.
    crate::python::pid() == unsafe { libc::getpid() } as u64
}

//! The interposed libc entry points: `pthread_create` (new threads register for sampling,
//! registration.rs), `sigaction` / `signal` / `pthread_sigmask` / `sigprocmask` (the
//! program's own SIGPROF use), `dlopen` (new libraries' unwind tables published at once) and
//! `_exit` (CPython's `os._exit` finishes the log). Each passes straight through to libc
//! (real.rs) when the process is not profiled. Every entry point runs the agent's part
//! under `state::guard`: a panic there stops profiling and falls back to plain libc
//! behaviour, never unwinding into the C caller.

use core::ffi::c_void;
use core::sync::atomic::Ordering;

use crate::real::{self, StartFn};
use crate::state::{self, EV_OWN_HANDLER, SIGPROF_EVENTS};
use crate::{process, registration};

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
    let Some(create) = real::pthread_create() else {
        return libc::EAGAIN;
    };
    let start = state::guard(
        "pthread_create",
        || None,
        || {
            state::ACTIVE
                .load(Ordering::Acquire)
                .then(|| Box::into_raw(Box::new(Start { f, arg })))
        },
    );
    let Some(start) = start else {
        // SAFETY: forwarding the caller's arguments unchanged (same contract).
        return unsafe { create(thread, attr, f, arg) };
    };
    // SAFETY: forwarding the caller's thread/attr; `start` is freed by the trampoline, or
    // here if the thread could not be created.
    let rc = unsafe { create(thread, attr, trampoline, start.cast()) };
    if rc != 0 {
        // SAFETY: no thread was created, so `start` (from Box::into_raw above) is still ours.
        drop(unsafe { Box::from_raw(start) });
    }
    rc
}

/// The new thread's start routine: registers the thread, then runs the program's.
extern "C" fn trampoline(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is the Box<Start> made by pthread_create above, handed over exactly once.
    let start = unsafe { Box::from_raw(p as *mut Start) };
    state::guard(
        "a new thread's registration",
        || (),
        || {
            if state::SAMPLING.load(Ordering::Acquire) {
                registration::register_current_thread();
            }
        },
    );
    // The program's own code, outside the guard: not ours to catch.
    (start.f)(start.arg)
}

/// The disposition the program believes SIGPROF has (what it set, or the original).
static PROGRAM_ACTION: std::sync::atomic::AtomicPtr<libc::sigaction> =
    std::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

fn ours(sig: libc::c_int) -> bool {
    sig == libc::SIGPROF && state::ACTIVE.load(Ordering::Acquire)
}

/// Records the program's own SIGPROF disposition: our handler stays installed, passes the
/// program's own SIGPROFs (not from our timers) to it, and reports the old one back.
fn set_program_action(new: &libc::sigaction) -> libc::sigaction {
    let old = program_action();
    state::PREV_FLAGS.store(new.sa_flags as usize, Ordering::Release);
    state::PREV_HANDLER.store(new.sa_sigaction, Ordering::Release);
    if new.sa_sigaction != libc::SIG_DFL && new.sa_sigaction != libc::SIG_IGN {
        SIGPROF_EVENTS.fetch_or(EV_OWN_HANDLER, Ordering::Relaxed);
    }
    // One slot per change, leaked: this must not free what a concurrent reader may hold,
    // and programs change their SIGPROF handler a handful of times at most.
    let slot = Box::into_raw(Box::new(*new));
    PROGRAM_ACTION.store(slot, Ordering::Release);
    old
}

/// The disposition the program believes SIGPROF has.
fn program_action() -> libc::sigaction {
    // SAFETY: sigaction is plain C data, for which all-zero is a valid value.
    let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: PROGRAM_ACTION is null or a leaked Box that is never freed.
    if let Some(p) = unsafe { PROGRAM_ACTION.load(Ordering::Acquire).as_ref() } {
        a.sa_mask = p.sa_mask;
    }
    a.sa_sigaction = state::PREV_HANDLER.load(Ordering::Acquire);
    a.sa_flags = state::PREV_FLAGS.load(Ordering::Acquire) as libc::c_int;
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
    if !ours(sig) {
        return real::sigaction(sig, act, old);
    }
    state::guard(
        "sigaction",
        || real::sigaction(sig, act, old),
        || {
            // SAFETY: the caller's contract: `act` is null or a valid sigaction.
            let prev = match unsafe { act.as_ref() } {
                Some(a) => set_program_action(a),
                None => program_action(),
            };
            // SAFETY: the caller's contract: `old` is null or valid for writes.
            if let Some(o) = unsafe { old.as_mut() } {
                *o = prev;
            }
            0
        },
    )
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
    if !ours(sig) {
        return real::signal(sig, handler);
    }
    state::guard(
        "signal",
        || real::signal(sig, handler),
        || {
            // SAFETY: sigaction is plain C data, for which all-zero is a valid value.
            let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
            a.sa_sigaction = handler;
            a.sa_flags = libc::SA_RESTART; // BSD semantics, as glibc's signal()
            set_program_action(&a).sa_sigaction
        },
    )
}

/// The interposed `pthread_sigmask`: passed through unchanged, measuring the CPU time
/// spent with SIGPROF blocked (registration.rs).
/// (No guard: nothing here can panic — an atomic and a libc call.)
///
/// # Safety
/// Same contract as libc's pthread_sigmask.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    let rc = real::pthread_sigmask(how, set, old);
    if rc == 0 {
        crate::registration::mask_changed(how, set);
    }
    rc
}

/// The interposed `sigprocmask`: passed through unchanged, measuring the CPU time spent
/// with SIGPROF blocked (registration.rs).
/// (No guard: nothing here can panic.)
///
/// # Safety
/// Same contract as libc's sigprocmask.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    let rc = real::sigprocmask(how, set, old);
    if rc == 0 {
        crate::registration::mask_changed(how, set);
    }
    rc
}

/// The interposed `dlopen`: passed through, then the new library's unwind tables are
/// copied and published before the program can call into it (see
/// `writer::modules_changed`).
///
/// # Safety
/// Same contract as libc's dlopen.
#[no_mangle]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, mode: libc::c_int) -> *mut c_void {
    let handle = real::dlopen(file, mode);
    if !handle.is_null() && state::SAMPLING.load(Ordering::Acquire) {
        state::guard("dlopen", || (), crate::writer::modules_changed);
    }
    handle
}

/// The interposed `_exit`. CPython's and PyPy's `os._exit` — how multiprocessing children
/// end — skips atexit handlers, which used to lose the samples of the last drain period (up
/// to 50 ms, much of a short-lived worker's profile). When the caller is CPython's own code
/// (its return address lies in the module holding the evaluation loop), the log is
/// finished first, as at a normal exit (likewise from PyPy's library). Any other caller
/// passes straight through: `_exit` is what vfork children and signal handlers call, where
/// finishing the log (locks, allocation, and in a vfork child the parent's memory) would
/// not be safe. Python code never runs inside a C signal handler, so a call from CPython is
/// ordinary context.
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
    // Only the checks run outside the guard (they cannot panic); a panic while finishing
    // still exits with the program's status.
    if state::ACTIVE.load(Ordering::Acquire)
        && (called_by_cpython(caller) || called_by_pypy(caller))
        && own_process()
    {
        state::guard("_exit", || (), process::finish);
    }
    loop {
        // SAFETY: what libc's _exit does: end every thread of the process (the syscall
        // takes an int and does not return; the loop satisfies the `!` type).
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
    // SAFETY: getpid takes no arguments and cannot fail.
    crate::sys::pid() == unsafe { libc::getpid() } as u64
}

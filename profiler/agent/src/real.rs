//! libc's own versions of the functions the agent interposes (hooks.rs), looked up once
//! with `dlsym(RTLD_NEXT)` at load: the signal handler and the agent's own code call these
//! to bypass the interposition, and dlsym is not async-signal-safe, so the handler must
//! find them already resolved. Also the agent's own (unsampled) threads.

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

pub type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
pub type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartFn,
    *mut c_void,
) -> libc::c_int;
type SigactionFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;
type SignalFn = unsafe extern "C" fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t;
type MaskFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigset_t, *mut libc::sigset_t) -> libc::c_int;
type DlopenFn = unsafe extern "C" fn(*const libc::c_char, libc::c_int) -> *mut c_void;

static CREATE: AtomicUsize = AtomicUsize::new(0);
static SIGACTION: AtomicUsize = AtomicUsize::new(0);
static SIGNAL: AtomicUsize = AtomicUsize::new(0);
static SIGMASK: AtomicUsize = AtomicUsize::new(0);
static PROCMASK: AtomicUsize = AtomicUsize::new(0);
static DLOPEN: AtomicUsize = AtomicUsize::new(0);

/// Looks up libc's versions of every interposed function (at load).
pub fn resolve() {
    lookup(&CREATE, c"pthread_create");
    lookup(&SIGACTION, c"sigaction");
    lookup(&SIGNAL, c"signal");
    lookup(&SIGMASK, c"pthread_sigmask");
    lookup(&PROCMASK, c"sigprocmask");
    lookup(&DLOPEN, c"dlopen");
}

/// The address of libc's `name` (0 if there is none), cached in `slot`. Only a slot not
/// yet resolved calls dlsym: `resolve` fills them all at load.
fn lookup(slot: &AtomicUsize, name: &CStr) -> usize {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads them.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        slot.store(f, Ordering::Release);
    }
    f
}

/// libc's sigaction (-1 if libc has none).
pub fn sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    let f = lookup(&SIGACTION, c"sigaction");
    if f == 0 {
        return -1;
    }
    // SAFETY: f is libc's sigaction, which has this signature; the pointers are the
    // caller's, passed on unchanged (libc checks them: EFAULT, not a fault).
    unsafe { core::mem::transmute::<usize, SigactionFn>(f)(sig, act, old) }
}

/// libc's signal (SIG_ERR if libc has none).
pub fn signal(sig: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    let f = lookup(&SIGNAL, c"signal");
    if f == 0 {
        return libc::SIG_ERR;
    }
    // SAFETY: f is libc's signal, which has this signature; arguments passed unchanged.
    unsafe { core::mem::transmute::<usize, SignalFn>(f)(sig, handler) }
}

/// libc's pthread_sigmask (ENOSYS if libc has none). glibc's keeps its internal signals,
/// e.g. the one setuid() relies on, unblocked: a raw syscall would not.
pub fn pthread_sigmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    mask(&SIGMASK, c"pthread_sigmask", libc::ENOSYS, how, set, old)
}

/// Runs `f` with SIGPROF blocked in the calling thread (its mask restored after): our
/// handler cannot run on this thread meanwhile.
pub fn with_sigprof_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data, for which all-zero is a valid value; sigemptyset
    // and sigaddset only write the local sets.
    let (mut block, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
    // SAFETY: as above.
    unsafe {
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGPROF);
    }
    pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
    let r = f();
    pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    r
}

/// Does the calling thread block SIGPROF now?
pub fn sigprof_blocked() -> bool {
    // SAFETY: sigset_t is plain data (all-zero valid); with a null set, pthread_sigmask
    // only writes the current mask into `cur`, which sigismember then reads.
    unsafe {
        let mut cur: libc::sigset_t = core::mem::zeroed();
        pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut cur) == 0
            && libc::sigismember(&cur, libc::SIGPROF) == 1
    }
}

/// libc's sigprocmask (-1 if libc has none).
pub fn sigprocmask(
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    mask(&PROCMASK, c"sigprocmask", -1, how, set, old)
}

fn mask(
    slot: &AtomicUsize,
    name: &CStr,
    missing: libc::c_int,
    how: libc::c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> libc::c_int {
    let f = lookup(slot, name);
    if f == 0 {
        return missing;
    }
    // SAFETY: libc's pthread_sigmask and sigprocmask both have this signature; the
    // caller's pointers are passed on unchanged (libc checks them).
    unsafe { core::mem::transmute::<usize, MaskFn>(f)(how, set, old) }
}

/// libc's dlopen (null if libc has none).
pub fn dlopen(file: *const libc::c_char, mode: libc::c_int) -> *mut c_void {
    let f = lookup(&DLOPEN, c"dlopen");
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: f is libc's dlopen, which has this signature; arguments passed unchanged
    // (a null or NUL-terminated file name, as the caller's contract requires).
    unsafe { core::mem::transmute::<usize, DlopenFn>(f)(file, mode) }
}

/// libc's pthread_create.
pub fn pthread_create() -> Option<CreateFn> {
    let f = lookup(&CREATE, c"pthread_create");
    // SAFETY: f is libc's pthread_create, which has this signature.
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, CreateFn>(f) })
}

/// Starts one of the agent's own threads: SIGPROF and every other signal blocked (the
/// program's signals must go to its own threads), not registered for sampling.
pub fn spawn_internal(name: &'static CStr, f: StartFn) -> bool {
    let Some(create) = pthread_create() else {
        return false;
    };
    // SAFETY: signal masks are changed for the calling thread only and restored; the new
    // thread inherits the all-blocked mask. `t` is written by pthread_create before use;
    // `name` is NUL-terminated.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut t: libc::pthread_t = 0;
        let rc = create(&mut t, core::ptr::null(), f, core::ptr::null_mut());
        pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        if rc != 0 {
            return false;
        }
        libc::pthread_setname_np(t, name.as_ptr());
        libc::pthread_detach(t);
    }
    true
}

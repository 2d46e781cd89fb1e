//! Forwarding termination signals to the profiled command.
//!
//! `prof run` must outlive its child to write the profile, so it catches SIGTERM, SIGHUP,
//! SIGQUIT and SIGINT and passes them on. Keyboard signals (Ctrl-C, Ctrl-\) already reach
//! the child through the terminal's process group, so SIGINT and SIGQUIT are forwarded only
//! when another process sent them (`si_code <= 0`: kill, sigqueue, tkill).

use std::sync::atomic::{AtomicI32, Ordering};

/// The child's pid while it runs; 0 before it starts and after it has exited.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived before the child was started, to forward once it is.
static PENDING: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGINT];

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    let from_keyboard = code > 0 && (sig == libc::SIGINT || sig == libc::SIGQUIT);
    if from_keyboard {
        return; // The terminal sent it to the child's process group too.
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// Installs the forwarding handlers (call before starting the child).
pub fn install() -> std::io::Result<()> {
    for &sig in &FORWARDED {
        // SAFETY: a zeroed sigaction with a valid handler and flags is well-formed.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The child is running: forward signals to it, and any that arrived before it started.
/// prof is single-threaded, so the handler runs either wholly before the store (and leaves
/// PENDING for the swap) or wholly after (and kills directly).
pub fn child_started(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
    let sig = PENDING.swap(0, Ordering::SeqCst);
    if sig != 0 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The child has exited (but is not reaped yet, so its pid cannot have been reused):
/// stop forwarding. Later signals are ignored while the profile is written.
pub fn child_exited() {
    CHILD.store(0, Ordering::SeqCst);
}

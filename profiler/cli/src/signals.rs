//! Forwarding termination signals to the profiled command.
//!
//! `prof run` must outlive its child to write the profile, so it catches SIGTERM, SIGHUP,
//! SIGQUIT and SIGINT and passes them on. Keyboard signals (Ctrl-C, Ctrl-\) already reach
//! the child through the terminal's process group, so SIGINT and SIGQUIT are forwarded only
//! when another process sent them (`si_code <= 0`: kill, sigqueue, tkill).

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// The child's pid while it runs; 0 before it starts and after it has exited.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived before the child was started, to forward once it is.
static PENDING: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
];

/// Sends signal number `sig` to `pid` (async-signal-safe: a plain kill(2)).
fn forward(pid: i32, sig: i32) {
    if let Ok(sig) = Signal::try_from(sig) {
        // Nothing to do about a failure: the child may have exited meanwhile.
        let _ = signal::kill(Pid::from_raw(pid), sig);
    }
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
        unsafe { (*info).si_code }
    };
    let from_keyboard = code > 0 && (sig == Signal::SIGINT as i32 || sig == Signal::SIGQUIT as i32);
    if from_keyboard {
        return; // The terminal sent it to the child's process group too.
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        forward(pid, sig);
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// Installs the forwarding handlers (call before starting the child).
pub fn install() -> std::io::Result<()> {
    let action = SigAction::new(
        SigHandler::SigAction(on_signal),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only touches atomics and calls kill(2), both
        // async-signal-safe, and prof installs no other handler for these signals.
        unsafe { signal::sigaction(sig, &action) }.map_err(std::io::Error::from)?;
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
        forward(pid, sig);
    }
}

/// The child has exited (but is not reaped yet, so its pid cannot have been reused):
/// stop forwarding. Later signals are ignored while the profile is written.
pub fn child_exited() {
    CHILD.store(0, Ordering::SeqCst);
}

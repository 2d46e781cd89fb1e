//! prof's in-process sampler, loaded into the target with LD_PRELOAD by `prof run`.
//!
//! Life cycle (process.rs): a constructor reads the PROF_* environment, maps the sample
//! ring, installs the SIGPROF handler, arms a CPU-time timer for the main thread and
//! starts the writer thread. Threads made by `pthread_create` (hooked, hooks.rs) register
//! and arm their own timers (registration.rs); a forked child starts its own log; at exit
//! the last samples and a PROCESS_END record are written. With no PROF_DIR in the
//! environment the library does nothing but pass calls through.
//!
//! Modules, leaves first (each uses only modules before it; no cycles): `sys` (raw kernel
//! calls, the one `process_vm_readv`) and `real` (libc's versions of the interposed
//! functions, the agent's own threads); `python` (CPython's frames); `ring` (the lock-free
//! sample queue); `state` (shared statics, the channels to the writer, the panic guard);
//! `unwind`, `threads` (the thread table), `modules`, `pypy`, `jit`, `logfile`; `kernel`
//! and `timer` (kernel-time accounting, CPU timers); `handler` (the signal handler),
//! `registration` (threads joining and leaving), `code_watch` (CPython's code watcher), `pypy_names`, `wall` (the off-CPU sampler
//! thread), `writer` (the writer thread), `markers` (the request-marker C ABI); `process` (the life cycle) and `hooks` (the
//! interposed libc entry points) on top.
//!
//! `unsafe` is in every module but `threads` (atomics only); each block carries a
//! `SAFETY:` comment saying why it holds, and the lint below enforces that. Every
//! `extern "C"` function C can call (constructor, atexit and atfork handlers, thread start
//! routines, the pthread key destructor, the interposed functions) runs the agent's code
//! under `state::guard`, so a panic stops profiling instead of unwinding into C and
//! aborting the program; the signal handler, written not to panic, catches one too
//! (handler.rs). The mask hooks (`pthread_sigmask`, `sigprocmask`) have no guard: they do
//! nothing that can panic.

#![deny(clippy::undocumented_unsafe_blocks)]

mod code_watch;
mod handler;
mod hooks;
mod jit;
mod kernel;
mod logfile;
mod markers;
mod modules;
mod process;
mod pypy;
mod pypy_names;
mod python;
mod real;
mod registration;
mod ring;
mod state;
mod sys;
mod threads;
mod timer;
mod unwind;
mod wall;
mod writer;

#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod testing;

pub use hooks::{dlopen, pthread_create, pthread_sigmask, sigaction, signal, sigprocmask};
pub use markers::{prof_marker_begin, prof_marker_enabled, prof_marker_end, prof_marker_interval};

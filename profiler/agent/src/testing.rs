//! Entry points for tests and benchmarks of the unwinder, run in an ordinary process (not
//! in a signal handler): they unwind the calling thread's own stack from a getcontext()
//! snapshot with exactly the code the handler uses.

use crate::ring::SampleData;
use crate::unwind::{self, Ctx, Regs, Stack};

extern "C" {
    fn getcontext(ucp: *mut libc::ucontext_t) -> libc::c_int;
}

/// A reusable unwinding setup for the calling thread.
pub struct Unwinder {
    ctx: Box<Ctx>,
    data: Box<SampleData>,
    stack_hi: u64,
    _modules: crate::modules::Tracker,
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    /// Indexes the loaded modules' unwind tables (as the writer thread does).
    pub fn new() -> Unwinder {
        let mut modules = crate::modules::Tracker::default();
        modules.refresh();
        let (_, hi) = crate::registration::stack_bounds();
        // SAFETY: SampleData is plain integers; all-zero is valid.
        let data: Box<SampleData> = Box::new(unsafe { core::mem::zeroed() });
        Unwinder {
            ctx: unwind::new_context(),
            data,
            stack_hi: hi as u64,
            _modules: modules,
        }
    }

    /// Unwinds the caller's stack; returns (frames leaf first, flags).
    #[inline(never)]
    pub fn unwind_here(&mut self, max_depth: usize) -> (&[u64], u32) {
        // SAFETY: zeroed ucontext_t is valid storage for getcontext to fill.
        let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
        // SAFETY: uc is valid and writable.
        unsafe { getcontext(&mut uc) };
        let regs = Regs::from_ucontext(&uc);
        self.data.frames[0] = regs.r[16];
        let stack = Stack {
            lo: regs.r[7],
            hi: self.stack_hi,
            stop: (0, 0),
        };
        let (depth, flags) =
            unwind::unwind(&mut self.data, regs, &stack, Some(&mut self.ctx), max_depth);
        (&self.data.frames[..depth], flags)
    }
}

/// The kernel-time accounting's work in the handler (kernel.rs), for benchmarks: the
/// thread's CPU clock (one settlement) ...
pub fn thread_cpu_ns() -> u64 {
    crate::sys::thread_cpu_ns()
}

/// ... and telling a syscall return from any other pc (code read with process_vm_readv).
pub fn syscall_at(pc: u64) -> Option<u64> {
    crate::kernel::syscall_at(pc, 0)
}

/// Records this process's pid for the agent's process_vm_readv calls (done at start when
/// the agent profiles; benchmarks run without it).
pub fn init_pid() {
    crate::sys::set_pid();
}

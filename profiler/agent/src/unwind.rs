//! Unwinding inside the SIGPROF handler: DWARF CFI where a module has it, frame pointers
//! where it does not (JIT code, hand-written assembly).
//!
//! Outside the handler (inside dl_iterate_phdr, so no dlclose can race), every module's
//! `.eh_frame_hdr` and `.eh_frame` are copied into memory the agent owns and never frees;
//! gimli parses from those copies. The handler therefore never reads a module's memory
//! and a library dlclose'd mid-sample cannot fault it. A lookup table from address ranges
//! to modules is published as an immutable snapshot through one atomic pointer.
//!
//! In the handler: gimli's unwind context lives in a per-thread buffer allocated when the
//! thread registered, with fixed-size in-line storage, so evaluating CFI allocates nothing.
//! Every stack read is bounds-checked against [interrupted sp, thread stack top).

use core::sync::atomic::{AtomicPtr, Ordering};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, NativeEndian, ParsedEhFrameHdr,
    Pointer, ReaderOffset, Register, RegisterRule, UnwindContext, UnwindContextStorage,
    UnwindSection, UnwindTableRow,
};

use crate::ring::SampleData;
use prof_format::flags::{TRUNCATED, UNWIND_STOPPED};

type R = EndianSlice<'static, NativeEndian>;

/// In-line storage for gimli's unwind context: x86_64 CFI names at most 17 registers
/// (plus a few rarely used ones), and DW_CFA_remember_state rarely nests.
pub struct Storage;
impl<T: ReaderOffset> UnwindContextStorage<T> for Storage {
    type Rules = [(Register, RegisterRule<T>); 24];
    type Stack = [UnwindTableRow<T, Self>; 4];
}
/// A thread's unwinding state: gimli's context plus a direct-mapped cache of the rows
/// seen at each address, in a compact form (CFA = rsp/rbp + offset, return address and
/// rbp at CFA + offset). Evaluating CFI costs a few hundred ns per frame; a cache hit a few.
pub struct Ctx {
    gimli: UnwindContext<usize, Storage>,
    cache: [Compact; CACHE_SLOTS],
    /// Direct-mapped cache of `call rel32` targets by return address (see
    /// [`frameless_caller`]): (return address, target; 0 when the bytes before it are no
    /// such call).
    calls: [(u64, u64); CALL_SLOTS],
    /// The module-set generation the cache was filled under (a module unloaded and
    /// another loaded at its address would otherwise leave stale rows).
    generation: u64,
}

static GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

const CACHE_SLOTS: usize = 1024;
const CALL_SLOTS: usize = 256;
/// Offset value meaning "no rule": for rbp, keep its value; for the return address, the
/// frame is the outermost.
const NONE: i32 = i32::MIN;

#[derive(Clone, Copy)]
struct Compact {
    pc: u64,
    /// DWARF register the CFA is relative to (6 = rbp, 7 = rsp); 0 = empty slot;
    /// FP_ONLY = code no module describes that is not a CPython trampoline.
    cfa_reg: u8,
    cfa_off: i32,
    ra_off: i32,
    rbp_off: i32,
}

const EMPTY: Compact = Compact {
    pc: 0,
    cfa_reg: 0,
    cfa_off: 0,
    ra_off: 0,
    rbp_off: 0,
};

pub fn new_context() -> Box<Ctx> {
    Box::new(Ctx {
        gimli: UnwindContext::new_in(),
        cache: [EMPTY; CACHE_SLOTS],
        calls: [(0, 0); CALL_SLOTS],
        generation: 0,
    })
}

/// Cache mark: a frame-pointer step (see `code_without_cfi_step`).
const FP_ONLY: u8 = u8::MAX;

#[inline]
fn slot(pc: u64) -> usize {
    ((pc ^ (pc >> 10)) as usize) % CACHE_SLOTS
}

pub struct UnwindModule {
    hdr: ParsedEhFrameHdr<R>,
    eh: EhFrame<R>,
    bases: BaseAddresses,
}

struct Snapshot {
    /// Executable ranges (start, end, module), sorted by start.
    entries: Vec<(u64, u64, &'static UnwindModule)>,
}

static SNAPSHOT: AtomicPtr<Snapshot> = AtomicPtr::new(core::ptr::null_mut());

/// Publishes the current module set. Old snapshots are leaked on purpose: a handler on
/// another thread may still be reading one (module sets change rarely).
pub fn publish(mut entries: Vec<(u64, u64, &'static UnwindModule)>) {
    entries.sort_by_key(|e| e.0);
    let p = Box::into_raw(Box::new(Snapshot { entries }));
    SNAPSHOT.store(p, Ordering::Release);
    GENERATION.fetch_add(1, Ordering::Release);
}

#[inline]
fn find(pc: u64) -> Option<&'static UnwindModule> {
    // SAFETY: SNAPSHOT is null or a leaked, immutable Snapshot.
    let snap = unsafe { SNAPSHOT.load(Ordering::Acquire).as_ref() }?;
    let e = &snap.entries;
    let i = e.partition_point(|x| x.0 <= pc);
    let (start, end, m) = *e.get(i.checked_sub(1)?)?;
    (pc >= start && pc < end).then_some(m)
}

/// The executable segment [start, end) of the loaded module that holds `pc`.
pub fn module_span(pc: u64) -> Option<(u64, u64)> {
    // SAFETY: SNAPSHOT is null or a leaked, immutable Snapshot.
    let snap = unsafe { SNAPSHOT.load(Ordering::Acquire).as_ref() }?;
    let e = &snap.entries;
    let i = e.partition_point(|x| x.0 <= pc);
    let (start, end, _) = *e.get(i.checked_sub(1)?)?;
    (pc >= start && pc < end).then_some((start, end))
}

/// Does [lo, hi) lie inside one loaded module's executable segment? Those are mapped from
/// the ELF file, readable (x86_64 has no execute-only pages unless a program asks for
/// them with memory protection keys), and stay mapped while a thread runs in them.
#[inline]
pub fn in_module_code(lo: u64, hi: u64) -> bool {
    // SAFETY: SNAPSHOT is null or a leaked, immutable Snapshot.
    let Some(snap) = (unsafe { SNAPSHOT.load(Ordering::Acquire).as_ref() }) else {
        return false;
    };
    let e = &snap.entries;
    let i = e.partition_point(|x| x.0 <= lo);
    i.checked_sub(1)
        .and_then(|i| e.get(i))
        .is_some_and(|&(start, end, _)| lo >= start && hi <= end && lo < hi)
}

/// Copies a module's unwind sections. Must run inside a dl_iterate_phdr callback (the
/// module cannot be unmapped meanwhile). `hdr` is its PT_GNU_EH_FRAME segment, `loads`
/// its PT_LOAD segments (runtime start, end), bounding the .eh_frame walk.
pub fn build(hdr_addr: u64, hdr_len: u64, loads: &[(u64, u64)]) -> Option<&'static UnwindModule> {
    let readable = |a: u64, n: u64| {
        loads
            .iter()
            .any(|&(s, e)| a >= s && a.checked_add(n).is_some_and(|end| end <= e))
    };
    if hdr_len < 4 || !readable(hdr_addr, hdr_len) {
        return None;
    }
    // SAFETY: [hdr_addr, +hdr_len) lies in a PT_LOAD segment of a module that is loaded
    // (we are called inside dl_iterate_phdr, which holds the loader lock).
    let hdr_mem = unsafe { core::slice::from_raw_parts(hdr_addr as *const u8, hdr_len as usize) };
    let hdr_copy: &'static [u8] = Box::leak(hdr_mem.to_vec().into_boxed_slice());
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = EhFrameHdr::new(hdr_copy, NativeEndian)
        .parse(&bases, 8)
        .ok()?;
    let Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
        return None;
    };
    let seg_end = loads.iter().find(|&&(s, e)| eh_addr >= s && eh_addr < e)?.1;
    // .eh_frame's size is not in the header: walk its length fields to the terminator.
    let mut p = eh_addr;
    while p + 4 <= seg_end {
        // SAFETY: p + 4 <= seg_end, inside the loaded segment.
        let len = unsafe { core::ptr::read_unaligned(p as *const u32) } as u64;
        if len == 0 {
            p += 4;
            break;
        }
        let step = if len == 0xffff_ffff {
            if p + 12 > seg_end {
                break;
            }
            // SAFETY: p + 12 <= seg_end.
            12 + unsafe { core::ptr::read_unaligned((p + 4) as *const u64) }
        } else {
            4 + len
        };
        if p.checked_add(step).is_none_or(|n| n > seg_end) {
            break;
        }
        p += step;
    }
    let eh_len = p - eh_addr;
    // SAFETY: [eh_addr, p) was just checked to lie inside the loaded segment.
    let eh_mem = unsafe { core::slice::from_raw_parts(eh_addr as *const u8, eh_len as usize) };
    let eh_copy: &'static [u8] = Box::leak(eh_mem.to_vec().into_boxed_slice());
    let bases = bases.set_eh_frame(eh_addr);
    let hdr = EhFrameHdr::new(hdr_copy, NativeEndian)
        .parse(&bases, 8)
        .ok()?;
    hdr.table()?;
    let m = UnwindModule {
        hdr,
        eh: EhFrame::new(eh_copy, NativeEndian),
        bases,
    };
    Some(Box::leak(Box::new(m)))
}

/// DWARF register numbers (x86_64 psABI).
const RBP: usize = 6;
const RSP: usize = 7;
const RA: usize = 16;
const NREGS: usize = 17;

#[derive(Clone, Copy)]
pub struct Regs {
    pub r: [u64; NREGS],
}

impl Regs {
    #[cfg(target_arch = "x86_64")]
    pub fn from_ucontext(uc: *const libc::ucontext_t) -> Regs {
        // SAFETY: the kernel passes the interrupted ucontext_t to SA_SIGINFO handlers.
        let g = unsafe { &(*uc).uc_mcontext.gregs };
        let order = [
            libc::REG_RAX,
            libc::REG_RDX,
            libc::REG_RCX,
            libc::REG_RBX,
            libc::REG_RSI,
            libc::REG_RDI,
            libc::REG_RBP,
            libc::REG_RSP,
            libc::REG_R8,
            libc::REG_R9,
            libc::REG_R10,
            libc::REG_R11,
            libc::REG_R12,
            libc::REG_R13,
            libc::REG_R14,
            libc::REG_R15,
            libc::REG_RIP,
        ];
        let mut r = [0u64; NREGS];
        for (slot, &g_idx) in r.iter_mut().zip(order.iter()) {
            *slot = g.get(g_idx as usize).copied().unwrap_or(0) as u64;
        }
        Regs { r }
    }
}

/// Where the unwinder reads stack words from: the interrupted thread's live stack (in the
/// handler), or a copy of a blocked thread's stack (wall mode).
pub trait ReadStack {
    /// The 8-byte word at `addr`, if it lies in the readable range.
    fn read(&self, addr: u64) -> Option<u64>;
    /// May code bytes next to a return address be read in place? (Only on the thread
    /// that will execute them: elsewhere, the code could be unmapped meanwhile.)
    const CODE_READABLE: bool;
    /// See [`Stack::stop`].
    fn stop(&self) -> (u64, u64) {
        (0, 0)
    }
}

impl Regs {
    /// A blocked thread's registers as /proc tells them: pc and sp only. The others are
    /// unknown: a CFA computed from one (a frame-pointer frame before any callee restored
    /// rbp from its save slot) points nowhere readable, and the walk stops there.
    pub fn from_pc_sp(pc: u64, sp: u64) -> Regs {
        let mut r = [u64::MAX; NREGS];
        r[RSP] = sp;
        r[RA] = pc;
        Regs { r }
    }
}

/// Bounded reader of the interrupted thread's stack.
pub struct Stack {
    pub lo: u64,
    pub hi: u64,
    /// Code whose frames end the walk once one is recorded ([0, 0): none): a PyPy sample
    /// keeps only the native frames above the first one in libpypy (pypy_names.rs), so
    /// the deep interpreter recursion below it is not unwound for nothing.
    pub stop: (u64, u64),
}

impl ReadStack for Stack {
    #[inline]
    fn read(&self, addr: u64) -> Option<u64> {
        if addr < self.lo || addr > self.hi.checked_sub(8)? || !addr.is_multiple_of(8) {
            return None;
        }
        // SAFETY: addr is 8-aligned inside [sp, hi - 8]: the live, mapped part of the
        // interrupted thread's own stack.
        Some(unsafe { core::ptr::read_volatile(addr as *const u64) })
    }
    const CODE_READABLE: bool = true;
    fn stop(&self) -> (u64, u64) {
        self.stop
    }
}

/// A copy of another thread's stack: `bytes` held what was at [base, base + len).
pub struct CopiedStack<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl ReadStack for CopiedStack<'_> {
    #[inline]
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        if !off.is_multiple_of(8) {
            return None;
        }
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    }
    const CODE_READABLE: bool = false;
}

enum Step {
    /// Unwound one frame: regs now describe the caller.
    Caller,
    /// The return address is undefined: this was the outermost frame.
    End,
    /// Could not unwind.
    Stop,
}

/// Unwinds from `regs` (the interrupted context), writing return addresses after the leaf
/// (`d.frames[0]`, already set). Returns (depth, flags).
pub fn unwind<S: ReadStack>(
    d: &mut SampleData,
    mut regs: Regs,
    stack: &S,
    ctx: Option<&mut Ctx>,
    max_depth: usize,
) -> (usize, u32) {
    let max = max_depth.clamp(1, d.frames.len());
    let mut depth = 1usize;
    let mut ctx = ctx;
    if let Some(c) = ctx.as_deref_mut() {
        let g = GENERATION.load(Ordering::Acquire);
        if c.generation != g {
            c.cache = [EMPTY; CACHE_SLOTS];
            c.calls = [(0, 0); CALL_SLOTS];
            c.generation = g;
        }
    }
    // Cached steps track only rsp, rbp and the return address; other registers are then
    // unknown, and a CFA computed from one of them must not be trusted.
    let mut stale = false;
    // A leaf in code without unwind tables may not have set up its frame (yet): its
    // caller's return address is then at [rsp], and a frame-pointer step would skip the
    // caller.
    if S::CODE_READABLE && max > 1 && find(regs.r[RA]).is_none() {
        if let Some(ret) = frameless_caller(ctx.as_deref_mut(), &regs, stack) {
            if let Some(slot) = d.frames.get_mut(1) {
                *slot = ret;
                depth = 2;
                regs.r[RA] = ret;
                regs.r[RSP] += 8;
            }
        }
    }
    loop {
        let pc = regs.r[RA];
        // Return addresses point after the call: look up the call instruction itself.
        let lookup = if depth == 1 { pc } else { pc.wrapping_sub(1) };
        let (stop_lo, stop_hi) = stack.stop();
        if lookup >= stop_lo && lookup < stop_hi {
            return (depth, 0);
        }
        let step = match ctx.as_deref_mut() {
            Some(c) => match cached_step(c, lookup, &mut regs, stack, &mut stale) {
                Some(s) => s,
                None => match find(lookup) {
                    Some(m) => match cfi_step(m, c, lookup, &mut regs, stack, &mut stale) {
                        Some(s) => s,
                        // No CFI for this address in a module: code generated into it
                        // (V8's builtins run from node's own .text when not remapped).
                        None if depth == 1 && S::CODE_READABLE => {
                            match frameless_caller(Some(c), &regs, stack) {
                                Some(ret) => {
                                    regs.r[RA] = ret;
                                    regs.r[RSP] += 8;
                                    Step::Caller
                                }
                                None => fp_step(&mut regs, stack),
                            }
                        }
                        None => fp_step(&mut regs, stack),
                    },
                    None => code_without_cfi_step(Some(c), lookup, &mut regs, stack, depth == 1),
                },
            },
            None => code_without_cfi_step(None, lookup, &mut regs, stack, depth == 1),
        };
        match step {
            Step::End => return (depth, 0),
            Step::Stop => return (depth, UNWIND_STOPPED),
            Step::Caller => {}
        }
        if regs.r[RA] == 0 {
            return (depth, 0);
        }
        if depth >= max {
            return (depth, TRUNCATED);
        }
        if let Some(slot) = d.frames.get_mut(depth) {
            *slot = regs.r[RA];
        }
        depth += 1;
    }
}

/// A step through code no module describes (JIT code, trampolines): CPython's perf
/// trampolines are recognized by their exact code; anything else uses frame pointers.
/// Only where a CPython 3.12+ (the versions with trampolines) runs, and the answer for
/// each return address is cached (`lookup` is its cache key).
fn code_without_cfi_step<S: ReadStack>(
    ctx: Option<&mut Ctx>,
    lookup: u64,
    regs: &mut Regs,
    stack: &S,
    leaf: bool,
) -> Step {
    let may_be_trampoline =
        S::CODE_READABLE && crate::python::get().is_some_and(|p| p.layout.minor >= 12);
    if !may_be_trampoline {
        return fp_step(regs, stack);
    }
    let cached = ctx
        .as_deref()
        .and_then(|c| c.cache.get(slot(lookup)))
        .filter(|e| e.pc == lookup && e.cfa_reg != 0)
        .map(|e| e.cfa_reg != FP_ONLY);
    match cached {
        Some(false) => return fp_step(regs, stack),
        // A trampoline row `cached_step` could not follow: its stack read failed.
        Some(true) => return Step::Stop,
        None => {}
    }
    // `sub $8,%rsp; call *%rcx` | `add $8,%rsp; ret`: at the return address (and at a
    // leaf on `call` or `add`) the frame is 8 bytes of padding below the trampoline's own
    // return address: CFA = rsp + 16; at a leaf on `sub` or `ret`, CFA = rsp + 8. The
    // return address is at CFA - 8, rbp untouched.
    let cfa_off = if leaf {
        trampoline_leaf_cfa(regs.r[RA])
    } else {
        is_cpython_trampoline(regs.r[RA]).then_some(16)
    };
    if let Some(e) = ctx.and_then(|c| c.cache.get_mut(slot(lookup))) {
        *e = Compact {
            pc: lookup,
            cfa_reg: if cfa_off.is_some() {
                RSP as u8
            } else {
                FP_ONLY
            },
            cfa_off: cfa_off.unwrap_or(0),
            ra_off: -8,
            rbp_off: NONE,
        };
    }
    if let Some(off) = cfa_off {
        let cfa = regs.r[RSP].wrapping_add(off as u64);
        let Some(ret) = stack.read(cfa - 8) else {
            return Step::Stop;
        };
        regs.r[RSP] = cfa;
        regs.r[RA] = ret;
        return Step::Caller;
    }
    fp_step(regs, stack)
}

/// CPython's perf trampoline, from its first instruction.
const TRAMPOLINE: [u8; 11] = [
    0x48, 0x83, 0xec, 0x08, // sub $8,%rsp
    0xff, 0xd1, // call *%rcx
    0x48, 0x83, 0xc4, 0x08, // add $8,%rsp
    0xc3, // ret
];

/// A leaf `pc` on one of a perf trampoline's four instructions: the CFA's offset from rsp
/// there. Up to four 11-byte process_vm_readv reads (the first sample at each pc only: the
/// answer is cached), since a read that starts before the trampoline could begin on an
/// unmapped page.
fn trampoline_leaf_cfa(pc: u64) -> Option<i32> {
    [(0u64, 8), (4, 16), (6, 16), (10, 8)]
        .into_iter()
        .find(|&(at, _)| {
            let mut b = [0u8; 11];
            pc >= at && crate::sys::safe_read(pc - at, &mut b) == b.len() && b == TRAMPOLINE
        })
        .map(|(_, off)| off)
}

/// CPython 3.12+'s perf trampoline (Python/asm_trampoline.S), copied into anonymous memory
/// once per code object: does the code around return address `pc` match it exactly?
/// Read with process_vm_readv: `pc` comes from a frame-pointer chain through code without
/// unwind tables, which may be garbage, so its page may not be mapped.
fn is_cpython_trampoline(pc: u64) -> bool {
    let mut b = [0u8; 11];
    pc >= 6 && crate::sys::safe_read(pc - 6, &mut b) == b.len() && b == TRAMPOLINE
}

/// The caller of a leaf that runs without a frame of its own, if the word at [rsp] is
/// its return address. V8's builtins (its inline caches above all) run their fast paths
/// frameless, called from JIT code with `call rel32`; V8's optimized functions check
/// their code object before `push %rbp; mov %rsp,%rbp`, called with `call *%reg`. Taken
/// only when the bytes before that word are such a call aimed within 4 MiB of the leaf —
/// for `call rel32` its target, for `call *%reg` the register's value, which still holds
/// the callee's entry at its first instructions — and the word is not the return address
/// of the frame rbp points at (a leaf with a frame of its own). Measured on the acorn
/// parser: 80% of the samples in V8's builtins and ~10% of those in optimized functions
/// (their entry check) were at frameless instructions, and their JS caller was missing
/// from the stack. A value at [rsp] that happens to follow such a call in memory would add
/// a wrong frame; the checks make that unlikely, not impossible.
fn frameless_caller<S: ReadStack>(ctx: Option<&mut Ctx>, regs: &Regs, stack: &S) -> Option<u64> {
    let (pc, sp, fp) = (regs.r[RA], regs.r[RSP], regs.r[RBP]);
    let ret = stack.read(sp)?;
    // A saved rbp (a stack address) is the common word at [rsp] of a framed leaf.
    if ret < 4096 + 7 || stack.read(ret & !7).is_some() {
        return None;
    }
    if fp <= sp || stack.read(fp.wrapping_add(8)) == Some(ret) {
        return None;
    }
    let slot = (ret ^ (ret >> 12)) as usize % CALL_SLOTS;
    let cached = ctx.as_deref().map(|c| c.calls[slot]).filter(|e| e.0 == ret);
    let call = match cached {
        Some((_, t)) => t,
        None => {
            let mut b = [0u8; 7];
            let t = if crate::sys::safe_read(ret - 7, &mut b) == 7 {
                decode_call(&b, ret)
            } else {
                0
            };
            if let Some(c) = ctx {
                c.calls[slot] = (ret, t);
            }
            t
        }
    };
    let near = |target: u64| target != 0 && pc.abs_diff(target) < 4 << 20;
    let ok = if call & REG_CALL == 0 {
        near(call)
    } else {
        // Registers as DWARF numbers + 1: without, and with a REX.B prefix byte.
        [call & 0xff, (call >> 8) & 0xff]
            .iter()
            .any(|&r| r != 0 && near(regs.r[r as usize - 1]))
    };
    ok.then_some(ret)
}

/// Marks a decoded `call *%reg` in [`decode_call`]'s answer.
const REG_CALL: u64 = 1 << 63;

/// The call instruction that ends at `ret` (`b` holds the 7 bytes before it): `call
/// rel32` gives its target; `call *%reg` gives [`REG_CALL`] with the register's DWARF
/// number + 1 in bits 0-7, and in bits 8-15 the same with a REX.B prefix (the byte before
/// `ff` may be one, or the end of another instruction); 0 for anything else.
fn decode_call(b: &[u8; 7], ret: u64) -> u64 {
    if b[2] == 0xe8 {
        let rel = i32::from_le_bytes([b[3], b[4], b[5], b[6]]);
        return ret.wrapping_add(rel as i64 as u64);
    }
    if b[5] == 0xff && b[6] & 0xf8 == 0xd0 {
        // ModRM rm field (rax rcx rdx rbx rsp rbp rsi rdi) -> DWARF (0 2 1 3 7 6 4 5).
        const DWARF: [u64; 8] = [0, 2, 1, 3, 7, 6, 4, 5];
        let rm = (b[6] & 7) as usize;
        let plain = DWARF[rm] + 1;
        let rex = if b[4] & 0xf1 == 0x41 {
            rm as u64 + 8 + 1
        } else {
            0
        };
        return REG_CALL | plain | rex << 8;
    }
    0
}

/// Frame-pointer step: [rbp] = caller's rbp, [rbp+8] = return address.
fn fp_step<S: ReadStack>(regs: &mut Regs, stack: &S) -> Step {
    let fp = regs.r[RBP];
    if fp == 0 {
        return Step::End;
    }
    if fp < regs.r[RSP] {
        return Step::Stop;
    }
    let (Some(next), Some(ret)) = (stack.read(fp), stack.read(fp + 8)) else {
        return Step::Stop;
    };
    if ret == 0 {
        return Step::End;
    }
    regs.r[RBP] = next;
    regs.r[RSP] = fp + 16;
    regs.r[RA] = ret;
    Step::Caller
}

/// A step from the cache, if this address's row is there.
#[inline]
fn cached_step<S: ReadStack>(
    c: &Ctx,
    pc: u64,
    regs: &mut Regs,
    stack: &S,
    stale: &mut bool,
) -> Option<Step> {
    let e = c.cache.get(slot(pc))?;
    if e.pc != pc || e.cfa_reg == 0 || e.cfa_reg == FP_ONLY {
        return None;
    }
    if e.ra_off == NONE {
        return Some(Step::End);
    }
    let cfa = regs.r[e.cfa_reg as usize].wrapping_add(e.cfa_off as i64 as u64);
    let ra = stack.read(cfa.wrapping_add(e.ra_off as i64 as u64))?;
    let rbp_at = cfa.wrapping_add(e.rbp_off as i64 as u64);
    let rbp = if e.rbp_off == NONE || rbp_at < regs.r[RSP] {
        regs.r[RBP] // no rule, or already popped (see cfi_step)
    } else {
        stack.read(rbp_at)?
    };
    if cfa <= regs.r[RSP] {
        return Some(Step::Stop);
    }
    regs.r[RSP] = cfa;
    regs.r[RBP] = rbp;
    regs.r[RA] = ra;
    *stale = true;
    Some(Step::Caller)
}

fn cfi_step<S: ReadStack>(
    m: &UnwindModule,
    c: &mut Ctx,
    pc: u64,
    regs: &mut Regs,
    stack: &S,
    stale: &mut bool,
) -> Option<Step> {
    let table = m.hdr.table()?;
    let row = table
        .unwind_info_for_address(&m.eh, &m.bases, &mut c.gimli, pc, EhFrame::cie_from_offset)
        .ok()?;
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let r = register.0 as usize;
            if *stale && r != RSP && r != RBP {
                return None;
            }
            regs.r.get(r)?.wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => {
            if *stale {
                return None;
            }
            eval(m, e, regs, stack, false)?
        }
    };
    // Remember rows of the common shape.
    if let Some(compact) = compact_row(pc, row) {
        if let Some(s) = c.cache.get_mut(slot(pc)) {
            *s = compact;
        }
    }
    let old = *regs;
    let mut new = old;
    for (reg, slot) in new.r.iter_mut().enumerate() {
        let rule = row.register(Register(reg as u16));
        *slot = match rule {
            // No rule: callee-saved registers keep their value; for the return address
            // it means this is the outermost frame.
            RegisterRule::Undefined if reg == RA => return Some(Step::End),
            RegisterRule::Undefined | RegisterRule::SameValue => old.r[reg],
            // In an epilogue, CFI often still names a save slot the register was already
            // popped from (below sp): the register then holds its caller's value.
            RegisterRule::Offset(n) if cfa.wrapping_add(n as u64) < old.r[RSP] && reg != RA => {
                old.r[reg]
            }
            RegisterRule::Offset(n) => stack.read(cfa.wrapping_add(n as u64))?,
            RegisterRule::ValOffset(n) => cfa.wrapping_add(n as u64),
            RegisterRule::Register(r) => *old.r.get(r.0 as usize)?,
            RegisterRule::Expression(e) => stack.read(eval(m, &e, &old, stack, false)?)?,
            RegisterRule::ValExpression(e) => eval(m, &e, &old, stack, false)?,
            _ => old.r[reg],
        };
    }
    new.r[RSP] = cfa;
    // The stack must grow back toward its top, or the walk could loop.
    if cfa <= old.r[RSP] {
        return Some(Step::Stop);
    }
    *regs = new;
    *stale = false;
    Some(Step::Caller)
}

fn compact_row(pc: u64, row: &UnwindTableRow<usize, Storage>) -> Option<Compact> {
    let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
        return None;
    };
    let cfa_reg = register.0 as usize;
    if cfa_reg != RSP && cfa_reg != RBP {
        return None;
    }
    let off = |rule: RegisterRule<usize>| -> Option<i32> {
        match rule {
            RegisterRule::Undefined | RegisterRule::SameValue => Some(NONE),
            RegisterRule::Offset(n) => i32::try_from(n).ok().filter(|&v| v != NONE),
            _ => None,
        }
    };
    Some(Compact {
        pc,
        cfa_reg: cfa_reg as u8,
        cfa_off: i32::try_from(*offset).ok()?,
        ra_off: off(row.register(Register(RA as u16)))?,
        rbp_off: off(row.register(Register(RBP as u16)))?,
    })
}

/// A small, allocation-free DWARF expression evaluator covering what CFI uses in practice:
/// register-relative addresses, dereferences (signal frames, stack realignment) and the
/// arithmetic of PLT entries.
fn eval<S: ReadStack>(
    m: &UnwindModule,
    e: &gimli::UnwindExpression<usize>,
    regs: &Regs,
    stack: &S,
    _: bool,
) -> Option<u64> {
    let expr = e.get(&m.eh).ok()?;
    let mut code: &[u8] = expr.0.slice();
    let mut st = [0u64; 8];
    let mut sp = 0usize;
    fn uleb(code: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = code.split_first()?;
            *code = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn sleb(code: &mut &[u8]) -> Option<i64> {
        let mut v = 0i64;
        let mut shift = 0;
        loop {
            let (&b, rest) = code.split_first()?;
            *code = rest;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
            if shift > 70 {
                return None;
            }
        }
    }
    macro_rules! push {
        ($v:expr) => {{
            let v = $v;
            *st.get_mut(sp)? = v;
            sp += 1;
        }};
    }
    macro_rules! pop {
        () => {{
            sp = sp.checked_sub(1)?;
            st[sp]
        }};
    }
    let mut steps = 0;
    while let Some((&op, rest)) = code.split_first() {
        code = rest;
        steps += 1;
        if steps > 64 {
            return None;
        }
        match op {
            0x30..=0x4f => push!((op - 0x30) as u64), // DW_OP_lit0..31
            0x70..=0x8f => {
                // DW_OP_breg0..31
                let off = sleb(&mut code)?;
                push!(regs.r.get((op - 0x70) as usize)?.wrapping_add(off as u64))
            }
            0x06 => {
                let a = pop!();
                push!(stack.read(a)?)
            } // DW_OP_deref
            0x08 => {
                let (&b, rest) = code.split_first()?;
                code = rest;
                push!(b as u64)
            } // DW_OP_const1u
            0x10 => push!(uleb(&mut code)?),        // DW_OP_constu
            0x11 => push!(sleb(&mut code)? as u64), // DW_OP_consts
            0x23 => {
                let v = uleb(&mut code)?;
                let a = pop!();
                push!(a.wrapping_add(v))
            } // DW_OP_plus_uconst
            0x1a | 0x1c | 0x22 | 0x24 | 0x2a => {
                let b = pop!();
                let a = pop!();
                push!(match op {
                    0x1a => a & b,
                    0x1c => a.wrapping_sub(b),
                    0x22 => a.wrapping_add(b),
                    0x24 => a.checked_shl(b as u32).unwrap_or(0),
                    _ => ((a as i64) >= (b as i64)) as u64,
                })
            }
            _ => return None,
        }
    }
    if sp == 0 {
        return None;
    }
    Some(st[sp - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack of words at `base` (the test's own memory: only addresses matter).
    struct Words {
        base: u64,
        words: Vec<u64>,
    }

    impl ReadStack for Words {
        fn read(&self, addr: u64) -> Option<u64> {
            let i = addr.checked_sub(self.base)? / 8;
            (addr.is_multiple_of(8)).then(|| self.words.get(i as usize).copied())?
        }
        const CODE_READABLE: bool = true;
    }

    #[test]
    fn frameless_leaf_gets_its_caller_from_rsp() {
        crate::sys::set_pid();
        // Caller code: `call rel32` at 10 to a function at 40; the leaf runs at 42.
        let mut code = [0x90u8; 64];
        code[10] = 0xe8;
        code[11..15].copy_from_slice(&(40i32 - 15).to_le_bytes());
        let at = |i: usize| code.as_ptr() as u64 + i as u64;
        let ret = at(15);
        let base = 0x7000_0000u64;
        // [rsp] = the return address; rbp = the caller's frame, whose return address is
        // elsewhere.
        let stack = Words {
            base,
            words: vec![ret, 0, 0, 0, base + 0x100, 0x1234_5678],
        };
        let mut regs = Regs { r: [0; NREGS] };
        regs.r[RA] = at(42);
        regs.r[RSP] = base;
        regs.r[RBP] = base + 24;
        let mut ctx = new_context();
        assert_eq!(frameless_caller(Some(&mut ctx), &regs, &stack), Some(ret));
        // Cached: the same answer without reading the code again.
        assert_eq!(ctx.calls.iter().filter(|c| c.0 == ret).count(), 1);
        assert_eq!(frameless_caller(Some(&mut ctx), &regs, &stack), Some(ret));
        // The leaf far from the call's target: not its caller.
        let mut far = regs;
        far.r[RA] = at(42) + (8 << 20);
        assert_eq!(frameless_caller(None, &far, &stack), None);
        // The word is the return address of the frame rbp points at: the leaf has a
        // frame of its own.
        let own = Words {
            base,
            words: vec![ret, 0, 0, 0, ret],
        };
        assert_eq!(frameless_caller(None, &regs, &own), None);
        // A saved rbp (a stack address) at [rsp].
        let saved = Words {
            base,
            words: vec![base + 16, 0, 0, 0, 0],
        };
        assert_eq!(frameless_caller(None, &regs, &saved), None);
        // Bytes before the word that are no `call rel32`.
        let plain = Words {
            base,
            words: vec![at(20), 0, 0, 0, 0],
        };
        assert_eq!(frameless_caller(None, &regs, &plain), None);
    }

    #[test]
    fn indirect_calls_are_checked_against_the_register() {
        crate::sys::set_pid();
        // `call *%rcx` (ff d1) ending at 30, `call *%r9` (41 ff d1) ending at 50.
        let mut code = [0x90u8; 64];
        code[28..30].copy_from_slice(&[0xff, 0xd1]);
        code[47..50].copy_from_slice(&[0x41, 0xff, 0xd1]);
        let at = |i: usize| code.as_ptr() as u64 + i as u64;
        let base = 0x7000_0000u64;
        let mut regs = Regs { r: [0; NREGS] };
        regs.r[RA] = 0x5000_0004; // the callee's entry check, 4 bytes in
        regs.r[RSP] = base;
        regs.r[RBP] = base + 16;
        let stack = |ret| Words {
            base,
            words: vec![ret, 0, base + 0x100, 0x1234],
        };
        // rcx holds the callee's entry: the caller is kept.
        regs.r[2] = 0x5000_0000;
        assert_eq!(frameless_caller(None, &regs, &stack(at(30))), Some(at(30)));
        // rcx points elsewhere (the leaf was not called through it, or clobbered it).
        regs.r[2] = 0x9000_0000;
        assert_eq!(frameless_caller(None, &regs, &stack(at(30))), None);
        // With a REX.B prefix the register is r9 (DWARF 9)...
        regs.r[9] = 0x5000_0000;
        assert_eq!(frameless_caller(None, &regs, &stack(at(50))), Some(at(50)));
        // ...unless the 0x41 belongs to the instruction before and the call is `*%rcx`.
        regs.r[9] = 0;
        regs.r[2] = 0x5000_0000;
        assert_eq!(frameless_caller(None, &regs, &stack(at(50))), Some(at(50)));
        assert_eq!(decode_call(&[0x90; 7], 0x1000), 0);
        assert_eq!(
            decode_call(&[0, 0, 0xe8, 0x10, 0, 0, 0], 0x1000),
            0x1010,
            "call rel32"
        );
    }
}

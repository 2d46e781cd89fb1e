//! PyPy Python frames (issue 17), read inside the SIGPROF handler.
//!
//! PyPy keeps, for vmprof, a per-thread linked list of the Python code being run
//! (RPython's `rvmprof`: the thread-local field `vmprof_tl_stack` of
//! `struct pypy_threadlocal_s`, entries `{next, value, kind}`):
//! - `kind` 1 (CODE): pushed by the interpreter around each Python function it evaluates,
//!   `value` = the code object's vmprof unique id; the entry is `malloc`ed, freed by the
//!   same thread when the function returns, after the list head moved past it;
//! - `kind` 3 (JITTED): pushed by the JIT's assembler prologue on the C stack whenever
//!   machine code runs, `value` = the stack pointer of that machine-code frame (its last
//!   call's return address lies just below it).
//!
//! Nothing of this is exported by the (stripped) libpypy: the agent finds its thread-local
//! block from `dl_iterate_phdr` (the library's TLS is static, at a fixed distance below the
//! thread pointer in every thread) and the field's offset by recognizing, in libpypy's
//! code, the interpreter's push: a `movq $1, 0x10(%reg)` (kind = CODE) followed by a
//! store of that register into the thread-local block. Both are checked; a PyPy whose code
//! does not match is profiled with native stacks only, and the user is told.
//!
//! Code names come from PyPy's own `_vmprof` registration (see pypy_names.rs).

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::python::PyFrame;

/// `kind` of a CODE entry (rvmprof's VMPROF_CODE_TAG).
pub const KIND_CODE: u32 = 1;
/// `kind` of a JIT machine-code entry (VMPROF_JITTED_TAG).
pub const KIND_JITTED: u32 = 3;
/// `pypy_threadlocal_s.ready` once RPython set the thread up.
const READY: u32 = 42;

/// What the handler needs to read a thread's PyPy stack.
pub struct Pypy {
    /// The thread pointer minus this is libpypy's TLS block in the current thread.
    pub tls_off: u64,
    /// Offset of `vmprof_tl_stack` in that block.
    pub stack_field: u64,
    /// libpypy's executable ranges (interpreter-internal native frames).
    pub text: Vec<(u64, u64)>,
    /// From the lowest to the highest address of `text`.
    pub text_span: (u64, u64),
    /// Heap entries may be read in place: the code publishes an entry only once it is
    /// whole (see [`find_pushes`]); else every heap entry is read through the kernel.
    pub direct: bool,
}

static PP: AtomicUsize = AtomicUsize::new(0);
static DETECTED: AtomicBool = AtomicBool::new(false);

pub fn get() -> Option<&'static Pypy> {
    let p = PP.load(Ordering::Acquire);
    // SAFETY: PP is 0 or a leaked Box<Pypy>, never freed.
    unsafe { (p as *const Pypy).as_ref() }
}

/// `struct dl_phdr_info` with the TLS fields glibc fills since 2.4 / 2.26 (the libc crate's
/// Linux definition stops before them). Only read when `size` says they are there.
#[repr(C)]
struct PhdrInfo {
    addr: u64,
    name: *const libc::c_char,
    phdr: *const libc::Elf64_Phdr,
    phnum: u16,
    adds: u64,
    subs: u64,
    tls_modid: usize,
    tls_data: *mut c_void,
}

#[derive(Default)]
struct Found {
    lib: String,
    text: Vec<(u64, u64)>,
    tls_data: u64,
    tls_size: u64,
}

/// Records libpypy if `info` is it; true (stop the walk) when found.
fn visit(info: &libc::dl_phdr_info, size: usize, found: &mut Found) -> bool {
    if size < core::mem::size_of::<PhdrInfo>() {
        return false;
    }
    // SAFETY: the loader's info is valid for `size` bytes, checked to cover PhdrInfo
    // (the same leading fields, with the TLS ones).
    let info = unsafe { &*(info as *const libc::dl_phdr_info as *const PhdrInfo) };
    if info.name.is_null() {
        return false;
    }
    // SAFETY: a NUL-terminated name owned by the loader.
    let name = unsafe { CStr::from_ptr(info.name) }.to_string_lossy();
    let base = name.rsplit('/').next().unwrap_or("");
    if !(base.starts_with("libpypy") && base.contains(".so")) {
        return false;
    }
    let mut out = Found {
        lib: name.into_owned(),
        tls_data: info.tls_data as u64,
        ..Default::default()
    };
    for i in 0..info.phnum as usize {
        // SAFETY: phdr points at phnum program headers.
        let ph = unsafe { &*info.phdr.add(i) };
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let start = info.addr.wrapping_add(ph.p_vaddr);
            out.text.push((start, start.wrapping_add(ph.p_memsz)));
        } else if ph.p_type == libc::PT_TLS {
            out.tls_size = ph.p_memsz;
        }
    }
    *found = out;
    true
}

/// The thread pointer (`%fs:0` holds its own address on x86-64 glibc).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads the TCB's self pointer, always mapped for a running thread.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// libpypy was loaded with the program (seen by the constructor): its TLS is static.
static AT_START: AtomicBool = AtomicBool::new(false);

/// Is libpypy loaded in this process? Called by the constructor, which runs after the
/// program's own libraries are loaded and before anything is dlopen'ed.
pub fn loaded() -> bool {
    let yes = scan().tls_size > 0;
    AT_START.store(yes, Ordering::Relaxed);
    yes
}

fn scan() -> Found {
    let mut found = Found::default();
    crate::sys::for_each_loaded_object(|info, size| visit(info, size, &mut found));
    found
}

/// Looks for PyPy in the process (writer thread, once). Returns a message for the user when
/// PyPy was found but its stacks cannot be read.
pub fn detect() -> Option<String> {
    if DETECTED.swap(true, Ordering::AcqRel) {
        return None;
    }
    let found = scan();
    if found.tls_size == 0 {
        return None;
    }
    detect_in(found).err()
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_in(found: Found) -> Result<(), String> {
    Err(format!(
        "{}: Python frames on PyPy are read on x86-64 only; native stacks only",
        found.lib
    ))
}

#[cfg(target_arch = "x86_64")]
fn detect_in(found: Found) -> Result<(), String> {
    let no = |why: &str| {
        format!(
            "{}: {why}; PyPy's Python frames are not recorded (native stacks only)",
            found.lib
        )
    };
    let tp = thread_pointer();
    // Static TLS (the library was loaded with the program) lies just below the thread
    // pointer, at the same distance in every thread; a dlopen'ed PyPy's may not.
    let tls_off = tp.wrapping_sub(found.tls_data);
    // A PyPy dlopen'ed later (embedded) may have its TLS allocated per thread on demand.
    if !AT_START.load(Ordering::Relaxed) {
        return Err(no("it was loaded after the program started"));
    }
    if found.tls_data == 0 || tls_off == 0 || tls_off > 1 << 20 || tls_off < found.tls_size {
        return Err(no("its thread-local storage is not static"));
    }
    let mut votes: Vec<(u64, u32)> = Vec::new();
    let mut ordered = true;
    for &(start, end) in &found.text {
        // SAFETY: an executable PT_LOAD segment of a loaded library: mapped and readable
        // for as long as the library stays loaded (libpypy is never unloaded: it is the
        // program).
        let code =
            unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        let pushes = find_pushes(code);
        ordered &= pushes.ordered;
        for off in pushes.offsets {
            if off % 8 == 0 && off >= 0x20 && off + 8 <= found.tls_size {
                match votes.iter_mut().find(|v| v.0 == off) {
                    Some(v) => v.1 += 1,
                    None => votes.push((off, 1)),
                }
            }
        }
    }
    votes.sort_by_key(|v| core::cmp::Reverse(v.1));
    let stack_field = match votes.as_slice() {
        [] => return Err(no("its vmprof stack was not found in its code")),
        [(off, _)] => *off,
        [(off, a), (_, b), ..] if a > b => *off,
        _ => return Err(no("its vmprof stack's place is ambiguous in its code")),
    };
    let pp = Box::new(Pypy {
        tls_off,
        stack_field,
        text_span: (
            found.text.iter().map(|r| r.0).min().unwrap_or(0),
            found.text.iter().map(|r| r.1).max().unwrap_or(0),
        ),
        text: found.text,
        direct: ordered,
    });
    PP.store(Box::into_raw(pp) as usize, Ordering::Release);
    Ok(())
}

/// What the code of libpypy says about rvmprof's push (`enter_code`): a new entry gets
/// its fields — `next` at 0, `value` at 8, `kind` = CODE (`movq $1, 0x10(%REG)`) — then
/// `__tls_get_addr` is called (general-dynamic TLS: `66 66 48 e8`, the address of the
/// thread-local block comes back in %rax), then `mov %REG, D(%rax)` publishes the entry.
#[derive(Debug, Default, PartialEq)]
struct Pushes {
    /// `D` of every push found.
    offsets: Vec<u64>,
    /// Every push found fills all three fields before the call that precedes its
    /// publication: a published entry is always whole.
    ordered: bool,
}

fn find_pushes(code: &[u8]) -> Pushes {
    const TLS_CALL: [u8; 4] = [0x66, 0x66, 0x48, 0xe8];
    let mut p = Pushes {
        offsets: Vec::new(),
        ordered: true,
    };
    // TLS calls are rare (~2,400 in 35 MB): find them first, then the kind stores in the
    // 72 bytes before each, for which that call is the first one that follows.
    let mut prev_call = 0;
    for call in memchr::memmem::find_iter(code, &TLS_CALL) {
        for i in call.saturating_sub(72).max(prev_call)..call.saturating_sub(7) {
            let rex = code[i];
            if !((rex == 0x48 || rex == 0x49)
                && code[i + 1] == 0xc7
                && (0x40..=0x47).contains(&code[i + 2])
                && code[i + 2] != 0x44 // rsp/r12 need a SIB byte
                && code[i + 3] == 0x10
                && code[i + 4..i + 8] == [1, 0, 0, 0])
            {
                continue;
            }
            let reg = (code[i + 2] & 7) | if rex == 0x49 { 8 } else { 0 };
            // Whatever path leads to the publication (a slow path may jump back to the
            // shared one), the entry must be whole before the TLS call.
            let from = i.saturating_sub(48);
            if !(stores_to(&code[from..call], reg, 0) && stores_to(&code[from..call], reg, 8)) {
                p.ordered = false;
            }
            if let Some(d) = publication(code, call + 8, reg) {
                p.offsets.push(d);
            }
        }
        prev_call = call + 4;
    }
    p
}

/// `mov %REG, D(%rax)` within a few bytes of `from`: D.
fn publication(code: &[u8], from: usize, reg: u8) -> Option<u64> {
    let store_rex = 0x48 | if reg >= 8 { 0x04 } else { 0 };
    let modrm = 0x40 | ((reg & 7) << 3); // [rax + disp8]
    let lim = (from + 16).min(code.len().saturating_sub(3));
    (from..lim)
        .find(|&k| code[k] == store_rex && code[k + 1] == 0x89 && code[k + 2] == modrm)
        .map(|k| code[k + 3] as u64)
}

/// Does `code` hold a `mov %r64, disp(%base)` with that displacement (0 or 8)?
fn stores_to(code: &[u8], base: u8, disp: u8) -> bool {
    let b = base & 7;
    let rex_b = base >= 8;
    (0..code.len().saturating_sub(3)).any(|k| {
        let rex = code[k];
        if rex & 0xf8 != 0x48 || (rex & 1 == 1) != rex_b || code[k + 1] != 0x89 {
            return false;
        }
        let m = code[k + 2];
        (m & 7) == b
            && ((m >> 6 == 1 && code[k + 3] == disp)
                || (m >> 6 == 0 && disp == 0 && b != 4 && b != 5))
    })
}

/// The interrupted thread's PyPy entries, innermost first, into `out` (`code` = the
/// entry's value, `fingerprint` = for JIT entries the word below the machine-code frame's
/// stack pointer — the return address of its last call —, `offset` = the kind). Returns
/// how many. `[sp, hi)` is the live part of the thread's own stack.
///
/// Async-signal-safe: reads of the thread's own static TLS and live stack, and
/// `process_vm_readv` for heap entries.
#[cfg(target_arch = "x86_64")]
pub fn walk(pp: &Pypy, sp: u64, hi: u64, out: &mut [PyFrame]) -> usize {
    let block = thread_pointer().wrapping_sub(pp.tls_off);
    // SAFETY: libpypy's TLS block is static: every thread got it, mapped, when it was made,
    // `tls_off` below its thread pointer (checked at detection), and it is at least
    // `stack_field + 8` bytes long.
    let (ready, mut node) = unsafe {
        (
            core::ptr::read_volatile(block as *const u32),
            core::ptr::read_volatile((block + pp.stack_field) as *const u64),
        )
    };
    if ready != READY {
        return 0; // not a thread RPython has set up (e.g. a C library's own thread)
    }
    let on_stack = |a: u64, len: u64| a >= sp && a.checked_add(len).is_some_and(|e| e <= hi);
    let mut n = 0;
    while node != 0 && n < out.len() && node % 8 == 0 {
        let mut e = [0u64; 3];
        if on_stack(node, 24) {
            // SAFETY: 24 bytes inside [sp, hi), the mapped live stack of this thread.
            unsafe {
                for (k, w) in e.iter_mut().enumerate() {
                    *w = core::ptr::read_volatile((node + 8 * k as u64) as *const u64);
                }
            }
        } else if pp.direct {
            // SAFETY: a malloc'ed entry on this thread's list. Only this thread (the one
            // running this handler) pushes and pops entries; an entry is published only
            // once whole (checked in libpypy's code at detection: every push fills its
            // fields before the call that precedes the publication, and a call is a
            // barrier to the compiler) and freed only after it is unlinked (`free` comes
            // after the store that unlinks it, for the same reason). So every entry on the
            // list is allocated, mapped memory.
            unsafe {
                for (k, w) in e.iter_mut().enumerate() {
                    *w = core::ptr::read_volatile((node + 8 * k as u64) as *const u64);
                }
            }
        } else {
            // A malloc'ed entry: read through the kernel, which fails instead of faulting
            // should the list ever point somewhere unmapped.
            let mut b = [0u8; 24];
            if crate::sys::safe_read(node, &mut b) != 24 {
                break;
            }
            for (k, w) in e.iter_mut().enumerate() {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[8 * k..8 * k + 8]);
                *w = u64::from_ne_bytes(x);
            }
        }
        let [next, value, kind] = e;
        if !(1..=7).contains(&kind) {
            break;
        }
        let ret = if kind == KIND_JITTED as u64 && on_stack(value.wrapping_sub(8), 8) {
            // SAFETY: 8 bytes inside [sp, hi), checked just above.
            unsafe { core::ptr::read_volatile((value - 8) as *const u64) }
        } else {
            0
        };
        put(out, n, value, ret, kind);
        n += 1;
        node = next;
    }
    n
}

#[cfg(not(target_arch = "x86_64"))]
pub fn walk(_: &Pypy, _: u64, _: u64, _: &mut [PyFrame]) -> usize {
    0
}

/// Entry `n`: `code` = the entry's value, `fingerprint` = for JIT entries the return
/// address of the machine code's last call, `offset` = the kind.
fn put(out: &mut [PyFrame], n: usize, value: u64, ret: u64, kind: u64) {
    if let Some(slot) = out.get_mut(n) {
        *slot = PyFrame {
            code: value,
            fingerprint: ret,
            offset: kind as u32,
            entry: 0,
        };
    }
}

/// [`walk`] for another, blocked, thread (wall mode's sampler thread): `tp` is its thread
/// pointer, `sp` its stack pointer. Every read goes through `process_vm_readv`: nothing
/// of another thread's is safe to read directly.
pub fn walk_other(pp: &Pypy, tp: u64, sp: u64, out: &mut [PyFrame]) -> usize {
    use crate::sys::safe_read;
    let word = |a: u64| {
        let mut b = [0u8; 8];
        (safe_read(a, &mut b) == 8).then(|| u64::from_ne_bytes(b))
    };
    if tp == 0 {
        return 0;
    }
    let block = tp.wrapping_sub(pp.tls_off);
    if word(block).map(|w| w as u32) != Some(READY) {
        return 0;
    }
    let mut node = word(block + pp.stack_field).unwrap_or(0);
    let mut n = 0;
    while node != 0 && n < out.len() && node % 8 == 0 {
        let mut b = [0u8; 24];
        if safe_read(node, &mut b) != 24 {
            break;
        }
        let w = |k: usize| u64::from_ne_bytes(b[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
        let (next, value, kind) = (w(0), w(1), w(2));
        if !(1..=7).contains(&kind) {
            break;
        }
        let ret = if kind == KIND_JITTED as u64 && value.wrapping_sub(8) >= sp {
            word(value - 8).unwrap_or(0)
        } else {
            0
        };
        put(out, n, value, ret, kind);
        n += 1;
        node = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's PyPy (installed by scripts/test.sh): two pushes (the interpreter's and the
    /// JIT's copies of `enter_code`), both publishing a whole entry at offset 0x48.
    #[test]
    fn debians_pypy_publishes_whole_entries() {
        let lib = "/usr/lib/x86_64-linux-gnu/libpypy3.9-c.so";
        let bytes = std::fs::read(lib).unwrap_or_else(|e| {
            panic!("{lib}: {e} (apt-get install -y pypy3; scripts/test.sh does)")
        });
        let p = find_pushes(&bytes);
        assert!(p.ordered, "{p:?}");
        assert!(
            !p.offsets.is_empty() && p.offsets.iter().all(|&d| d == 0x48),
            "{p:?}"
        );
    }

    #[test]
    fn finds_the_publishing_store() {
        // Bytes of PyPy 7.3.11's enter_code (libpypy3.9-c.so, Debian 7.3.11+dfsg-2+deb12u3):
        // mov %r14,0x8(%rbp); movq $1,0x10(%rbp); mov %rax,0(%rbp);
        // lea ..(%rip),%rdi; call __tls_get_addr; nopw; mov %rbp,0x48(%rax)
        let code = [
            0x4c, 0x89, 0x75, 0x08, 0x48, 0xc7, 0x45, 0x10, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89,
            0x45, 0x00, 0x66, 0x48, 0x8d, 0x3d, 0x8e, 0xb1, 0x4b, 0x00, 0x66, 0x66, 0x48, 0xe8,
            0x16, 0x32, 0xe8, 0xfe, 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x48, 0x89, 0x68, 0x48,
        ];
        assert_eq!(
            find_pushes(&code),
            Pushes {
                offsets: vec![0x48],
                ordered: true
            }
        );
        // Published before `next` is filled: the order cannot be trusted.
        let mut late = code.to_vec();
        late.drain(12..16); // mov %rax,0x0(%rbp)
        late.extend_from_slice(&[0x48, 0x89, 0x45, 0x00]);
        assert!(!find_pushes(&late).ordered);
        // A kind store with no TLS call after it is no push.
        assert_eq!(
            find_pushes(&code[..26]),
            Pushes {
                offsets: vec![],
                ordered: true
            }
        );
    }
}

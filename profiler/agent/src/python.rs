//! CPython frames, read inside the SIGPROF handler.
//!
//! Detection (writer thread): the `_PyRuntime` and `Py_Version` symbols, and the address
//! range of `_PyEval_EvalFrameDefault`. Field offsets are data: a table for 3.11 and 3.12,
//! and for 3.13+ the `_Py_DebugOffsets` CPython keeps at the start of `_PyRuntime`.
//! The writer maps each sampled thread to its `PyThreadState` by walking the
//! interpreters' thread lists (matching `native_thread_id`).
//!
//! In the handler, every read of interpreter memory goes through `process_vm_readv`, which
//! fails cleanly on an unmapped address: a frame or code object freed at the wrong moment
//! cannot crash the program. For each frame the handler records the code object's address,
//! a fingerprint of it (file name and qualified name object addresses, first line) and the
//! instruction offset; the writer later reads the code object's names and line table once,
//! checking the fingerprint, so a code object freed and its address reused in between is
//! never given the wrong name.

use crate::sys::{safe_read, set_pid};
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One Python frame as the handler records it.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct PyFrame {
    pub code: u64,
    pub fingerprint: u64,
    /// Instruction index (code units) in the code object's bytecode.
    pub offset: u32,
    /// This frame is the outermost of one C-level evaluation (`_PyEval_EvalFrameDefault`).
    pub entry: u32,
}

impl PyFrame {
    /// Not a frame: a C-level evaluation that runs no Python frame (see `walk`).
    pub const EMPTY_GROUP: PyFrame = PyFrame {
        code: 0,
        fingerprint: 0,
        offset: 0,
        entry: 1,
    };

    pub fn is_empty_group(&self) -> bool {
        self.code == 0
    }
}

pub const MAX_PY_FRAMES: usize = 128;

/// Field offsets of one CPython version.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    pub minor: u32,
    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    pub tstate_native_thread_id: u64,
    /// 3.11/3.12: tstate->cframe, then cframe->current_frame. 3.13+: tstate->current_frame.
    pub tstate_cframe: Option<u64>,
    pub cframe_current_frame: u64,
    pub tstate_current_frame: u64,
    pub tstate_datastack_chunk: u64,
    pub frame_code: u64,
    pub frame_previous: u64,
    pub frame_instr: u64,
    pub frame_owner: u64,
    /// 3.11 only: the `is_entry` flag; later versions mark entries with C-stack-owned frames.
    pub frame_is_entry: Option<u64>,
    pub code_filename: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    /// 3.12+: `co_version`, from a counter the interpreter bumps for every code object it
    /// makes: in the fingerprint, it tells apart two code objects that one address, file
    /// name object and qualified name object held in turn (an `exec` loop).
    pub code_version: Option<u64>,
    pub code_adaptive: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    pub ascii_size: u64,
    pub compact_size: u64,
    pub bytes_size: u64,
    pub bytes_data: u64,
}

const FRAME_OWNED_BY_CSTACK: u8 = 3;

fn layout_311() -> Layout {
    Layout {
        minor: 11,
        runtime_interpreters_head: 0x28,
        interp_next: 0,
        interp_threads_head: 0x10,
        tstate_next: 8,
        tstate_native_thread_id: 160,
        tstate_cframe: Some(56),
        cframe_current_frame: 8,
        tstate_current_frame: 0,
        tstate_datastack_chunk: 296,
        frame_code: 32,
        frame_previous: 48,
        frame_instr: 56,
        frame_owner: 69,
        frame_is_entry: Some(68),
        code_filename: 112,
        code_qualname: 128,
        code_linetable: 136,
        code_firstlineno: 72,
        code_version: None,
        code_adaptive: 184,
        unicode_state: 32,
        unicode_length: 16,
        ascii_size: 48,
        compact_size: 72,
        bytes_size: 16,
        bytes_data: 32,
    }
}

fn layout_312() -> Layout {
    Layout {
        minor: 12,
        interp_threads_head: 0x48,
        tstate_native_thread_id: 144,
        tstate_datastack_chunk: 232,
        cframe_current_frame: 0,
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56,
        frame_owner: 70,
        frame_is_entry: None,
        code_firstlineno: 68,
        code_version: Some(92),
        code_adaptive: 192,
        ascii_size: 40,
        compact_size: 56,
        ..layout_311()
    }
}

/// Size of `_Py_DebugOffsets` in the layouts prof knows (3.13).
const DEBUG_OFFSETS_SIZE: usize = 584;

/// Reads `_Py_DebugOffsets` (3.13+) from the start of `_PyRuntime`.
fn layout_from_debug_offsets(runtime: u64, py_version: u32) -> Result<Layout, String> {
    let mut b = [0u8; DEBUG_OFFSETS_SIZE];
    if safe_read(runtime, &mut b) != b.len() {
        return Err("its _Py_DebugOffsets cannot be read".into());
    }
    parse_debug_offsets(&b, py_version)
}

/// The field offsets `_Py_DebugOffsets` gives, once its words have been checked against
/// the layout prof knows: the cookie; the version word against `Py_Version` (the same
/// interpreter, and a minor version whose struct layout prof knows: fields are read at
/// fixed positions, and 3.14 added fields in the middle); a GIL build; and each section's
/// size word (the size of the CPython struct it describes) against the offsets read from
/// that section and the bytes the signal handler reads. A layout that fails any check is
/// refused — reading it would read garbage.
fn parse_debug_offsets(b: &[u8; DEBUG_OFFSETS_SIZE], py_version: u32) -> Result<Layout, String> {
    let w = |off: usize| u64::from_ne_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]));
    if &b[..8] != b"xdebugpy" {
        return Err("_PyRuntime does not start with _Py_DebugOffsets".into());
    }
    let version = w(8);
    if version != py_version as u64 {
        return Err(format!(
            "_Py_DebugOffsets is of version {version:#x}, Py_Version is {py_version:#x}"
        ));
    }
    let minor = (py_version >> 16) & 0xff;
    if py_version >> 24 != 3 || minor != 13 {
        return Err(format!(
            "prof does not know the layout of its _Py_DebugOffsets (version {version:#x}; it knows 3.13's)"
        ));
    }
    if w(16) != 0 {
        return Err("free-threaded builds lay frames out differently; not supported".into());
    }
    let l = Layout {
        minor,
        runtime_interpreters_head: w(40),
        interp_next: w(64),
        interp_threads_head: w(72),
        tstate_next: w(168),
        tstate_native_thread_id: w(200),
        tstate_cframe: None,
        cframe_current_frame: 0,
        tstate_current_frame: w(184),
        tstate_datastack_chunk: w(208),
        frame_previous: w(232),
        frame_code: w(240),
        frame_instr: w(248),
        frame_owner: w(264),
        frame_is_entry: None,
        code_filename: w(280),
        code_qualname: w(296),
        code_linetable: w(304),
        code_firstlineno: w(312),
        // Not in _Py_DebugOffsets: 3.12's place, six ints after co_firstlineno, when the
        // fields around it are where 3.12 has them.
        code_version: (w(312) == 68 && w(280) == 112).then_some(92),
        code_adaptive: w(344),
        unicode_state: w(544),
        unicode_length: w(552),
        ascii_size: w(560),
        // PyCompactUnicodeObject = PyASCIIObject + utf8_length + utf8 pointer.
        compact_size: w(560) + 16,
        bytes_size: w(520),
        bytes_data: w(528),
    };
    let frame = FRAME_BYTES as u64;
    let code_hdr = CODE_HDR as u64;
    // (what, holds): every offset lies inside the struct its section's size word gives,
    // and inside the bytes read from it.
    let checks = [
        ("runtime state", w(24) >= l.runtime_interpreters_head + 8),
        (
            "interpreter state",
            w(48) >= l.interp_next.max(l.interp_threads_head) + 8,
        ),
        (
            // The handler reads datastack_chunk, _top and _limit as three words.
            "thread state",
            w(152)
                >= (l
                    .tstate_next
                    .max(l.tstate_current_frame)
                    .max(l.tstate_native_thread_id)
                    + 8)
                .max(l.tstate_datastack_chunk + 24),
        ),
        (
            "interpreter frame",
            w(224) > l.frame_owner
                && l.frame_previous.max(l.frame_code).max(l.frame_instr) + 8 <= frame
                && l.frame_owner < frame,
        ),
        (
            "code object",
            w(272) >= l.code_adaptive
                && l.code_filename.max(l.code_qualname) + 8 <= code_hdr
                && l.code_firstlineno + 4 <= code_hdr
                && l.code_linetable + 8 <= CODE_READ as u64
                && l.code_adaptive <= CODE_READ as u64,
        ),
        // Object headers are read as (ob_refcnt, ob_type) at 0 and 8.
        ("object header", w(352) == 16 && w(360) == 8),
        (
            "bytes object",
            w(512) >= l.bytes_data && l.bytes_size + 8 <= l.bytes_data,
        ),
        (
            "str object",
            l.unicode_state + 4 <= l.ascii_size
                && l.unicode_length + 8 <= l.ascii_size
                && w(536) == l.ascii_size + 24,
        ),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(format!(
            "its _Py_DebugOffsets has a {what} layout prof does not know"
        )),
        None => Ok(l),
    }
}

pub struct Python {
    pub layout: Layout,
    pub runtime: u64,
    pub code_type: u64,
    pub unicode_type: u64,
    pub bytes_type: u64,
    pub eval_start: u64,
    pub eval_end: u64,
}

static PY: AtomicUsize = AtomicUsize::new(0);
static DETECTED: AtomicBool = AtomicBool::new(false);
pub fn get() -> Option<&'static Python> {
    let p = PY.load(Ordering::Acquire);
    // SAFETY: PY is 0 or a leaked Box<Python>, never freed.
    unsafe { (p as *const Python).as_ref() }
}

#[inline]
fn read_u64(addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    (safe_read(addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
}

fn dlsym(name: &core::ffi::CStr) -> u64 {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches every loaded object.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as u64 }
}

/// The address of an interpreter function or object, if the process exports it.
pub fn symbol(name: &core::ffi::CStr) -> Option<u64> {
    Some(dlsym(name)).filter(|&a| a != 0)
}

/// Looks for a CPython interpreter in the process (writer thread; cheap when absent or
/// already found). Returns a message for the user when a Python was found but cannot be
/// profiled.
pub fn detect() -> Option<String> {
    if DETECTED.load(Ordering::Acquire) {
        return None;
    }
    let runtime = dlsym(c"_PyRuntime");
    let version_sym = dlsym(c"Py_Version");
    if runtime == 0 {
        return None;
    }
    DETECTED.store(true, Ordering::Release);
    set_pid();
    if version_sym == 0 {
        return Some(
            "this Python is older than 3.11: Python frames are not recorded (native stacks only)"
                .into(),
        );
    }
    let hex = read_u64(version_sym).unwrap_or(0) as u32;
    let (major, minor, micro) = (hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
    let version = format!("{major}.{minor}.{micro}");
    let layout = match (major, minor) {
        (3, 11) => Ok(layout_311()),
        (3, 12) => Ok(layout_312()),
        (3, m) if m >= 13 => layout_from_debug_offsets(runtime, hex),
        _ => Err("not a version prof knows".into()),
    };
    let layout = match layout {
        Ok(l) => l,
        Err(why) => {
            return Some(format!(
                "Python {version}: {why}; Python frames are not recorded (native stacks only)"
            ))
        }
    };
    let eval = dlsym(c"_PyEval_EvalFrameDefault");
    let (eval_start, eval_end) = symbol_range(eval);
    let code_type = dlsym(c"PyCode_Type");
    let unicode_type = dlsym(c"PyUnicode_Type");
    let bytes_type = dlsym(c"PyBytes_Type");
    if eval_start == 0 || code_type == 0 || unicode_type == 0 || bytes_type == 0 {
        return Some(format!("Python {version}: _PyEval_EvalFrameDefault or the code, str and bytes types not found; native stacks only"));
    }
    let py = Box::new(Python {
        layout,
        runtime,
        code_type,
        unicode_type,
        bytes_type,
        eval_start,
        eval_end,
    });
    PY.store(Box::into_raw(py) as usize, Ordering::Release);
    None
}

/// [start, end) of the function at `addr`, from its ELF symbol (dladdr1 + st_size).
fn symbol_range(addr: u64) -> (u64, u64) {
    if addr == 0 {
        return (0, 0);
    }
    // SAFETY: dladdr1 fills `info` and points `sym` at the loader's symbol entry.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        let mut sym: *const libc::Elf64_Sym = core::ptr::null();
        const RTLD_DL_SYMENT: libc::c_int = 1;
        extern "C" {
            fn dladdr1(
                addr: *const c_void,
                info: *mut libc::Dl_info,
                extra: *mut *const c_void,
                flags: libc::c_int,
            ) -> libc::c_int;
        }
        if dladdr1(
            addr as *const c_void,
            &mut info,
            &mut sym as *mut _ as *mut *const c_void,
            RTLD_DL_SYMENT,
        ) == 0
            || sym.is_null()
        {
            return (addr, addr + 1);
        }
        let size = (*sym).st_size.max(1);
        (addr, addr + size)
    }
}

/// Finds each thread's PyThreadState by walking every interpreter's thread list. Returns
/// (native thread id, tstate) pairs. Writer thread only.
pub fn thread_states(py: &Python) -> Vec<(u64, u64)> {
    let l = &py.layout;
    let mut out = Vec::new();
    let mut interp = read_u64(py.runtime + l.runtime_interpreters_head).unwrap_or(0);
    let mut guard = 0;
    while interp != 0 && guard < 64 {
        let mut t = read_u64(interp + l.interp_threads_head).unwrap_or(0);
        let mut tg = 0;
        while t != 0 && tg < 100_000 {
            if let Some(tid) = read_u64(t + l.tstate_native_thread_id) {
                out.push((tid, t));
            }
            t = read_u64(t + l.tstate_next).unwrap_or(0);
            tg += 1;
        }
        interp = read_u64(interp + l.interp_next).unwrap_or(0);
        guard += 1;
    }
    out
}

/// Fingerprint of a code object: its file name and qualified name objects, first line and
/// (3.12+) version.
#[inline]
fn fingerprint(filename: u64, qualname: u64, firstlineno: u32, version: u32) -> u64 {
    filename.rotate_left(21)
        ^ qualname
        ^ (firstlineno as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (version as u64)
            .wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            .rotate_left(32)
}

/// Code-object header bytes the handler needs (refcount, type, names, first line).
const CODE_HDR: usize = 144;
/// Code-object bytes the writer reads (up to the line table and bytecode offsets).
const CODE_READ: usize = 208;
/// Code headers read per process_vm_readv call (bounded stack use in the handler).
const BATCH: usize = 8;
/// The thread's frame-stack chunks the handler tracks.
const MAX_CHUNKS: usize = 16;
/// Bytes of `_PyInterpreterFrame` the handler reads.
const FRAME_BYTES: usize = 80;

/// Where the interrupted thread's own stack is known to be mapped: [sp, hi).
#[derive(Clone, Copy)]
pub struct LiveStack {
    pub sp: u64,
    pub hi: u64,
}

#[inline]
fn word(b: &[u8], off: u64) -> u64 {
    let o = off as usize;
    b.get(o..o + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
}

#[inline]
fn iov(ptr: *mut u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    }
}

/// Walks the Python frames of the interrupted thread (signal handler). Returns how many
/// frames were written to `out`, innermost first.
///
/// What is read how, and why it is safe (the cost is in the syscalls: ~1.2 µs each here):
/// - The thread state, with one process_vm_readv: the writer's tid -> tstate map may be
///   stale (a thread state freed by its thread), so its fields are read with the kernel's
///   checks, and a thread state whose `native_thread_id` is not the interrupted thread's is
///   not used.
/// - 3.11/3.12's `_PyCFrame` lives on the eval loop's C stack: read directly when it lies in
///   [sp, hi), the interrupted thread's live, mapped stack.
/// - Frames in the thread's current data-stack chunk below `datastack_top` (or in an older
///   chunk of its chain) are read directly: they belong to the interrupted thread, the one
///   running this handler, so nothing frees them meanwhile. Other frames (generators) are
///   read with process_vm_readv.
/// - Code objects: a frame holds a strong reference to its code object, and only the
///   thread that owns a frame drops it — after unlinking the frame, except that the
///   innermost frame may be mid-teardown (3.11.0 cleared a returning frame before
///   unlinking it; 3.11.1+ unlink first, GH-99729). So the code of every in-chunk frame
///   but the innermost is alive (its frame is linked below a live one) and is
///   read directly; the innermost frame's and non-chunk frames' codes go through
///   process_vm_readv (batched), and a header that is not a live code object ends the
///   stack.
#[inline]
pub fn walk(py: &Python, tstate: u64, tid: u64, stack: LiveStack, out: &mut [PyFrame]) -> usize {
    walk_impl(py, tstate, tid, stack, true, out)
}

/// The Python frames of another, blocked thread (the wall-mode sampler thread): the same
/// walk with every read through process_vm_readv, since none of the reasons that make
/// direct reads safe in the thread's own handler hold from another thread. The thread may
/// wake and change its frames meanwhile: a torn read gives a wrong or short stack (code
/// headers are still checked to be live code objects), never a fault.
pub fn walk_other(py: &Python, tstate: u64, tid: u64, out: &mut [PyFrame]) -> usize {
    walk_impl(py, tstate, tid, LiveStack { sp: 0, hi: 0 }, false, out)
}

#[inline]
fn walk_impl(
    py: &Python,
    tstate: u64,
    tid: u64,
    stack: LiveStack,
    own: bool,
    out: &mut [PyFrame],
) -> usize {
    let l = &py.layout;
    // 1. Thread state: frame pointer (or cframe), datastack chunk/top/limit, native tid.
    let mut ptr = [0u8; 8];
    let mut ds = [0u8; 24];
    let mut ntid = [0u8; 8];
    let frame_field = l.tstate_cframe.unwrap_or(l.tstate_current_frame);
    let local = [
        iov(ptr.as_mut_ptr(), 8),
        iov(ds.as_mut_ptr(), 24),
        iov(ntid.as_mut_ptr(), 8),
    ];
    let remote = [
        iov(tstate.wrapping_add(frame_field) as *mut u8, 8),
        iov(tstate.wrapping_add(l.tstate_datastack_chunk) as *mut u8, 24),
        iov(tstate.wrapping_add(l.tstate_native_thread_id) as *mut u8, 8),
    ];
    if tstate < 4096
        || crate::sys::read_own_memory(&local, &remote) != 40
        || u64::from_ne_bytes(ntid) != tid
    {
        return 0;
    }
    let mut frame = u64::from_ne_bytes(ptr);
    if l.tstate_cframe.is_some() {
        let at = frame.wrapping_add(l.cframe_current_frame);
        frame = if frame % 8 == 0 && at >= stack.sp && at.saturating_add(8) <= stack.hi {
            // SAFETY: [at, at + 8) lies in the interrupted thread's live stack [sp, hi),
            // which is mapped, and is 8-aligned.
            unsafe { core::ptr::read_volatile(at as *const u64) }
        } else if frame != 0 {
            read_u64(at).unwrap_or(0)
        } else {
            0
        };
    }
    // The live chunks: [chunk + header, end). The current one ends at datastack_top; older
    // ones (read lazily, only when a frame lies outside the known ones) at chunk + size.
    let chunk0 = word(&ds, 0);
    let top = word(&ds, 8);
    let limit = word(&ds, 16);
    let mut chunks = [(0u64, 0u64); MAX_CHUNKS];
    let mut nch = 0;
    let mut next_chunk = 0u64;
    if own && chunk0 != 0 && chunk0 < top && top <= limit && limit - chunk0 <= 1 << 30 {
        chunks[0] = (chunk0 + 24, top);
        nch = 1;
        next_chunk = chunk0;
    }
    let mut older_unread = nch == 1;
    // 2. The frame chain.
    let mut n = 0usize;
    let mut in_chunk_mask = 0u128; // bit i: frame i was read from a live chunk
    let mut fb = [0u8; FRAME_BYTES];
    while frame != 0 && n < out.len() {
        let len = FRAME_BYTES as u64;
        let inside = |ch: &[(u64, u64)]| {
            ch.iter()
                .any(|&(s, e)| frame >= s && frame.saturating_add(len) <= e)
        };
        let mut direct = frame % 8 == 0 && inside(&chunks[..nch]);
        // An older chunk holds the outer frames: read the chain's headers as needed.
        while !direct && older_unread && nch < MAX_CHUNKS && frame % 8 == 0 {
            let mut h = [0u8; 16];
            if safe_read(next_chunk, &mut h) != 16 {
                older_unread = false;
                break;
            }
            let prev = word(&h, 0);
            if prev == 0 {
                older_unread = false;
                break;
            }
            let mut h2 = [0u8; 16];
            if safe_read(prev, &mut h2) != 16 || word(&h2, 8) > 1 << 30 {
                older_unread = false;
                break;
            }
            chunks[nch] = (prev + 24, prev.saturating_add(word(&h2, 8)));
            nch += 1;
            next_chunk = prev;
            direct = inside(&chunks[nch - 1..nch]);
        }
        if direct {
            // SAFETY: [frame, frame + 80) lies in a live data-stack chunk of this very
            // thread (see above), so it is mapped and cannot be freed while we read.
            unsafe {
                core::ptr::copy_nonoverlapping(frame as *const u8, fb.as_mut_ptr(), fb.len())
            };
        } else if safe_read(frame, &mut fb) != fb.len() {
            break;
        }
        let code = word(&fb, l.frame_code);
        let previous = word(&fb, l.frame_previous);
        let instr = word(&fb, l.frame_instr);
        let owner = fb.get(l.frame_owner as usize).copied().unwrap_or(0);
        if l.frame_is_entry.is_none() && owner == FRAME_OWNED_BY_CSTACK {
            // 3.12+: a C-stack shim frame separates two C-level evaluations; the frame
            // before it (inner) is the outermost of the inner evaluation. With none (the
            // shim is the innermost frame, or follows another shim), that evaluation runs
            // no Python frame at the moment — its frame returned and is being torn down,
            // which in 3.12+ happens inside the evaluation — so an empty group is
            // recorded: the evaluation frames on the native stack still match one-to-one.
            match n.checked_sub(1).and_then(|i| out.get_mut(i)) {
                Some(prev) if prev.entry == 0 => prev.entry = 1,
                _ => {
                    if let Some(slot) = out.get_mut(n) {
                        *slot = PyFrame::EMPTY_GROUP;
                        n += 1;
                    }
                }
            }
            frame = previous;
            continue;
        }
        let base = code.wrapping_add(l.code_adaptive);
        let offset = if instr >= base {
            ((instr - base) / 2).min(u32::MAX as u64) as u32
        } else {
            0
        };
        let entry = match l.frame_is_entry {
            Some(off) => fb.get(off as usize).copied().unwrap_or(0) as u32,
            None => 0,
        };
        if let Some(slot) = out.get_mut(n) {
            *slot = PyFrame {
                code,
                fingerprint: 0,
                offset,
                entry,
            };
        }
        if direct && n < 128 {
            in_chunk_mask |= 1 << n;
        }
        n += 1;
        frame = previous;
    }
    // 3. Code headers; the stack ends at the first frame whose code object is not a live
    // code object (3.13 may run other executables).
    let hdr = CODE_HDR.min(
        (l.code_qualname.max(l.code_filename) + 8)
            .max(l.code_firstlineno + 4)
            .max(l.code_version.map_or(0, |v| v + 4)) as usize,
    );
    let mut bufs = [[0u8; CODE_HDR]; BATCH];
    let mut pending = [0usize; BATCH]; // frame indexes whose header goes in `bufs`
    let mut np = 0usize;
    let mut end = n;
    // The innermost real frame's code object may be mid-teardown (see `walk`).
    let innermost = out[..n]
        .iter()
        .position(|f| !f.is_empty_group())
        .unwrap_or(n);
    for i in 0..=n {
        if i < n && out[i].is_empty_group() {
            continue;
        }
        if i < n {
            if i > innermost && in_chunk_mask & (1 << i) != 0 {
                match direct_code_header(py, out[i].code, hdr) {
                    Some(fp) => out[i].fingerprint = fp,
                    None => end = i,
                }
            } else if let Some(p) = pending.get_mut(np) {
                *p = i;
                np += 1;
            }
        }
        let last = i == n || end < n;
        if np > 0 && (np == BATCH || last) {
            let mut local = [iov(core::ptr::null_mut(), 0); BATCH];
            let mut remote = local;
            for (j, &fi) in pending[..np].iter().enumerate() {
                local[j] = iov(bufs[j].as_mut_ptr(), hdr);
                remote[j] = iov(out[fi].code as *mut u8, hdr);
            }
            let whole = crate::sys::read_own_memory(&local[..np], &remote[..np]) / hdr;
            for (j, &fi) in pending[..np].iter().enumerate() {
                let b = &bufs[j];
                if j >= whole
                    || out[fi].code < 4096
                    || !live_header(word(b, 0), word(b, 8), py.code_type)
                {
                    end = end.min(fi);
                    break;
                }
                out[fi].fingerprint = header_fingerprint(l, b);
            }
            np = 0;
        }
        if last || end < n {
            break;
        }
    }
    end
}

/// The fingerprint of a code object that a live, non-innermost, in-chunk frame of the
/// interrupted thread references (see `walk`), or None if it is not a code object.
#[inline]
fn direct_code_header(py: &Python, code: u64, hdr: usize) -> Option<u64> {
    if !code.is_multiple_of(8) || code < 4096 {
        return None;
    }
    // SAFETY: the object is referenced by a live frame of this thread that is not the
    // innermost one (see `walk`), so it is a live object whose 16-byte header is readable.
    let (rc, ty) = unsafe {
        (
            core::ptr::read_volatile(code as *const u64),
            core::ptr::read_volatile((code + 8) as *const u64),
        )
    };
    if !live_header(rc, ty, py.code_type) {
        return None;
    }
    let mut b = [0u8; CODE_HDR];
    // SAFETY: as above, and it is a code object: `hdr` bytes are fewer than any
    // PyCodeObject's size.
    unsafe { core::ptr::copy_nonoverlapping(code as *const u8, b.as_mut_ptr(), hdr.min(CODE_HDR)) };
    Some(header_fingerprint(&py.layout, &b))
}

/// The fingerprint of a code object from its header bytes.
#[inline]
fn header_fingerprint(l: &Layout, b: &[u8]) -> u64 {
    let u32_at = |o: u64| {
        b.get(o as usize..o as usize + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])))
            .unwrap_or(0)
    };
    let version = l.code_version.map_or(0, u32_at);
    fingerprint(
        word(b, l.code_filename),
        word(b, l.code_qualname),
        u32_at(l.code_firstlineno),
        version,
    )
}

/// Does an object header (ob_refcnt, ob_type) look like a live object of type `ty`?
/// Freed memory fails: pymalloc and glibc overwrite the first word with a free-list link
/// (an address, or 0), and glibc's tcache also the second.
#[inline]
fn live_header(refcnt: u64, ob_type: u64, ty: u64) -> bool {
    // Immortal objects (3.12+) have a refcount of u32::MAX.
    refcnt >= 1 && refcnt <= u32::MAX as u64 && ob_type == ty
}

fn live(obj: u64, ty: u64) -> bool {
    let mut h = [0u8; 16];
    safe_read(obj, &mut h) == 16 && {
        let w = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
        live_header(w(0), w(8), ty)
    }
}

/// A code object's names and line table, read by the writer thread.
pub struct CodeInfo {
    pub qualname: String,
    pub filename: String,
    pub firstlineno: u32,
    pub linetable: Vec<u8>,
}

/// Is this one of the interpreter's own shim code objects, not the program's code? 3.13's
/// `_Py_InitCleanup` (a frame under every `__init__` that `CALL_ALLOC_AND_ENTER_INIT` runs)
/// is a static code object named `__init__` in a file named `__init__`, at line 0 (code
/// compiled from source always starts at line 1 or later).
pub fn is_shim(c: &CodeInfo) -> bool {
    c.qualname == "__init__" && c.filename == "__init__" && c.firstlineno == 0
}

/// Reads a code object, checking it still has the fingerprint the handler saw. The code
/// object may have been freed since the sample (and its names freed and reused): every
/// object is checked to be alive before and after its contents are read, so a freed code
/// object yields None rather than someone else's name.
pub fn read_code(py: &Python, code: u64, fp: u64) -> Option<CodeInfo> {
    let l = &py.layout;
    let header = || -> Option<(u64, u64, u64, u32)> {
        let mut cb = [0u8; CODE_READ];
        if safe_read(code, &mut cb) < l.code_adaptive as usize {
            return None;
        }
        let word = |off: u64| -> u64 {
            u64::from_ne_bytes(
                cb[off as usize..off as usize + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            )
        };
        if !live_header(word(0), word(8), py.code_type) {
            return None;
        }
        let o = l.code_firstlineno as usize;
        let first = u32::from_ne_bytes(cb[o..o + 4].try_into().unwrap_or([0; 4]));
        let (filename, qualname) = (word(l.code_filename), word(l.code_qualname));
        (header_fingerprint(l, &cb) == fp).then_some((
            filename,
            qualname,
            word(l.code_linetable),
            first,
        ))
    };
    let before = header()?;
    let (filename, qualname, linetable, first) = before;
    if !live(filename, py.unicode_type)
        || !live(qualname, py.unicode_type)
        || !live(linetable, py.bytes_type)
    {
        return None;
    }
    let info = CodeInfo {
        qualname: read_unicode(l, qualname)?,
        filename: read_unicode(l, filename)?,
        firstlineno: first,
        linetable: read_bytes(l, linetable)?,
    };
    // Still the same live objects after the reads: the contents were theirs.
    let still = header()? == before
        && live(filename, py.unicode_type)
        && live(qualname, py.unicode_type)
        && live(linetable, py.bytes_type);
    still.then_some(info)
}

fn read_unicode(l: &Layout, obj: u64) -> Option<String> {
    unicode_with(l, obj, safe_read)
}

fn read_bytes(l: &Layout, obj: u64) -> Option<Vec<u8>> {
    bytes_with(l, obj, safe_read)
}

/// Reads memory for [`unicode_with`] / [`bytes_with`]: (address, destination) -> bytes read.
type Read = fn(u64, &mut [u8]) -> usize;

fn u64_with(read: Read, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    (read(addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
}

/// A compact str object's text (1-, 2- or 4-byte kind).
fn unicode_with(l: &Layout, obj: u64, read: Read) -> Option<String> {
    let len = u64_with(read, obj + l.unicode_length)? as usize;
    if len > 1 << 16 {
        return None;
    }
    let mut st = [0u8; 4];
    read(obj + l.unicode_state, &mut st);
    let state = u32::from_ne_bytes(st);
    // state bits: interned:2, kind:3, compact:1, ascii:1
    let kind = ((state >> 2) & 7) as usize;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact || !(1..=4).contains(&kind) || kind == 3 {
        return None;
    }
    let data = obj + if ascii { l.ascii_size } else { l.compact_size };
    let mut raw = vec![0u8; len * kind];
    if read(data, &mut raw) != raw.len() {
        return None;
    }
    Some(match kind {
        1 => raw.iter().map(|&b| b as char).collect(),
        2 => raw
            .chunks_exact(2)
            .map(|c| char::from_u32(u16::from_ne_bytes([c[0], c[1]]) as u32).unwrap_or('?'))
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
    })
}

fn bytes_with(l: &Layout, obj: u64, read: Read) -> Option<Vec<u8>> {
    let len = u64_with(read, obj + l.bytes_size)? as usize;
    if len > 1 << 24 {
        return None;
    }
    let mut v = vec![0u8; len];
    (read(obj + l.bytes_data, &mut v) == len).then_some(v)
}

/// Copies `out.len()` bytes at `addr` of memory the caller knows to be live.
fn read_in_place(addr: u64, out: &mut [u8]) -> usize {
    // SAFETY: only used by `read_code_in_place`, whose caller guarantees that the code
    // object and the str/bytes objects it references are alive while it runs (a code
    // watcher holding the GIL); the lengths read are those the objects declare.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
    out.len()
}

/// A code object's fingerprint and contents, read in place (no syscalls).
///
/// # Safety
/// `code` must be a live code object of this interpreter, and stay alive and unchanged
/// during the call: a code watcher's callback, run with the GIL held, as the object is
/// being destroyed.
pub unsafe fn read_code_in_place(py: &Python, code: u64) -> Option<(u64, CodeInfo)> {
    let l = &py.layout;
    let mut hdr = [0u8; CODE_HDR];
    read_in_place(code, &mut hdr);
    if word(&hdr, 8) != py.code_type {
        return None;
    }
    let (filename, qualname) = (word(&hdr, l.code_filename), word(&hdr, l.code_qualname));
    let linetable = u64_with(read_in_place, code + l.code_linetable)?;
    let of_type = |obj: u64, ty: u64| obj >= 4096 && u64_with(read_in_place, obj + 8) == Some(ty);
    if !of_type(filename, py.unicode_type)
        || !of_type(qualname, py.unicode_type)
        || !of_type(linetable, py.bytes_type)
    {
        return None;
    }
    let info = CodeInfo {
        qualname: unicode_with(l, qualname, read_in_place)?,
        filename: unicode_with(l, filename, read_in_place)?,
        firstlineno: {
            let o = l.code_firstlineno as usize;
            u32::from_ne_bytes(hdr[o..o + 4].try_into().unwrap_or([0; 4]))
        },
        linetable: bytes_with(l, linetable, read_in_place)?,
    };
    Some((header_fingerprint(l, &hdr), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 72 words after the cookie of CPython 3.13.0's `_Py_DebugOffsets`, as pyenv's
    /// libpython3.13.so.1.0 initializes them (read with gdb).
    const WORDS_3130: [u64; 72] = [
        0x30d00f0, 0x0, 0x452b8, 0x260, 0x278, 0x2f998, 0x1c68, 0x1c60, 0x1cb0, 0x1ce8, 0x1de8,
        0x1dd8, 0x1de0, 0x10, 0x1e48, 0x0, 0x1e58, 0x1e50, 0x130, 0x0, 0x8, 0x10, 0x48, 0x98, 0xa0,
        0xe8, 0x20, 0x50, 0x8, 0x0, 0x38, 0x48, 0x46, 0xd0, 0x70, 0x78, 0x80, 0x88, 0x44, 0x34,
        0x60, 0x68, 0xc8, 0x10, 0x8, 0x1a0, 0x18, 0x58, 0xa8, 0x20, 0x18, 0x10, 0x28, 0x18, 0x10,
        0x30, 0x20, 0x28, 0x18, 0x10, 0x20, 0x10, 0x18, 0x28, 0x10, 0x20, 0x40, 0x20, 0x10, 0x28,
        0xf0, 0xc8,
    ];

    fn offsets(words: &[u64; 72]) -> [u8; DEBUG_OFFSETS_SIZE] {
        let mut b = [0u8; DEBUG_OFFSETS_SIZE];
        b[..8].copy_from_slice(b"xdebugpy");
        for (i, w) in words.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    const V3130: u32 = 0x030d_00f0;

    #[test]
    fn cpython_3_13_debug_offsets_are_read() {
        let l = parse_debug_offsets(&offsets(&WORDS_3130), V3130).unwrap();
        assert_eq!(l.minor, 13);
        assert_eq!(
            (
                l.tstate_current_frame,
                l.tstate_native_thread_id,
                l.tstate_datastack_chunk
            ),
            (0x48, 0xa0, 0xe8)
        );
        assert_eq!(
            (l.frame_previous, l.frame_code, l.frame_instr),
            (8, 0, 0x38)
        );
        assert_eq!(
            (l.frame_owner, l.code_qualname, l.code_adaptive),
            (0x46, 0x80, 0xc8)
        );
        assert_eq!((l.ascii_size, l.compact_size), (0x28, 0x38));
        assert_eq!((l.bytes_size, l.bytes_data), (0x10, 0x20));
    }

    /// Word index (after the cookie) of a field at byte offset `off` of the struct.
    fn at(off: usize) -> usize {
        (off - 8) / 8
    }

    #[test]
    fn unknown_debug_offsets_are_refused() {
        let refuse = |b: [u8; DEBUG_OFFSETS_SIZE], v: u32, want: &str| {
            let e = parse_debug_offsets(&b, v).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        };
        // Not the debug offsets at all.
        let mut b = offsets(&WORDS_3130);
        b[0] = b'X';
        refuse(b, V3130, "does not start with _Py_DebugOffsets");
        // Another interpreter's version word.
        refuse(offsets(&WORDS_3130), 0x030d_01f0, "Py_Version is 0x30d01f0");
        // 3.14 (fields added in the middle of the struct).
        let mut w = WORDS_3130;
        w[0] = 0x030e_00f0;
        refuse(offsets(&w), 0x030e_00f0, "it knows 3.13's");
        // A free-threaded build.
        let mut w = WORDS_3130;
        w[at(16)] = 1;
        refuse(offsets(&w), V3130, "free-threaded");
        // Size words that do not fit the offsets: the thread state too small for its
        // data-stack fields, a frame owner beyond the bytes the handler reads, a code
        // object's qualname beyond the header it reads, a different object header, and
        // a str struct that is not PyASCIIObject + 24 bytes.
        for (field, value, what) in [
            (152, 0xe8, "thread state"),
            (264, 0x60, "interpreter frame"),
            (296, 0x90, "code object"),
            (360, 0x10, "object header"),
            (536, 0x48, "str object"),
            (24, 0x100, "runtime state"),
        ] {
            let mut w = WORDS_3130;
            w[at(field)] = value;
            refuse(offsets(&w), V3130, what);
        }
    }
}

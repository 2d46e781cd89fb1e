//! CPython 3.12+: the names of sampled code objects that are freed before the writer
//! reads them.
//!
//! The writer names a sampled code object by reading it milliseconds after the sample. By
//! then a module's body (`<module>`, run once by `import` and dropped as the import ends)
//! or the code an `exec` compiled is often gone: 3.8% of a Django run's samples were
//! `<freed code object>`, nearly all import-time module bodies. A code watcher
//! (`PyCode_AddWatcher`, 3.12+) is told of every code object as it is destroyed, still
//! intact; those the handler sampled lately are read there and kept for the writer.
//!
//! The watcher must be added with the GIL held. The writer asks the main thread to add it
//! with `Py_AddPendingCall` (callable from any thread without the GIL once the interpreter
//! is initialized); the interpreter runs the call at its next eval-breaker check, as it
//! does Python-level signal handlers. A main thread that never runs bytecode again (it
//! only waits for other threads) never adds it: names are then as without a watcher.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::python::{self, CodeInfo, PyFrame};
use crate::state;

/// Code addresses the handler sampled lately, direct-mapped: the watcher reads only
/// those (every other destruction costs it one load), and collisions only lose names.
const SLOTS: usize = 4096;
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static SAMPLED: [AtomicU64; SLOTS] = [ZERO; SLOTS];

/// 0: not asked yet; 1: the pending call is queued; 2: watching; 3: not available.
static STATE: AtomicU8 = AtomicU8::new(0);
const ASKED: u8 = 1;
const WATCHING: u8 = 2;
const UNAVAILABLE: u8 = 3;

/// How many destroyed code objects wait for the writer at most (the oldest go first).
const KEEP: usize = 4096;

#[derive(Default)]
struct Freed {
    order: VecDeque<(u64, u64)>,
    infos: HashMap<(u64, u64), CodeInfo>,
}

/// Destroyed code objects' contents by (address, fingerprint). Both sides only try the
/// lock: after a fork it may be held by a thread that no longer exists.
static FREED: Mutex<Option<Freed>> = Mutex::new(None);

/// PyCodeEvent's PY_CODE_EVENT_DESTROY.
const EVENT_DESTROY: i32 = 1;

#[inline]
fn slot(code: u64) -> usize {
    ((code >> 4) ^ (code >> 16)) as usize % SLOTS
}

/// Handler (async-signal-safe: relaxed stores only): the code objects of a sample's frames.
#[inline]
pub fn note_sampled(frames: &[PyFrame]) {
    if STATE.load(Ordering::Relaxed) != WATCHING {
        return;
    }
    for f in frames {
        if f.code != 0 {
            if let Some(s) = SAMPLED.get(slot(f.code)) {
                s.store(f.code, Ordering::Relaxed);
            }
        }
    }
}

/// Writer thread, every drain: asks the main thread to add the watcher, once, when a
/// CPython 3.12+ is initialized.
pub fn request() {
    if STATE.load(Ordering::Acquire) != 0 {
        return;
    }
    let Some(py) = python::get() else { return };
    if py.layout.minor < 12 {
        STATE.store(UNAVAILABLE, Ordering::Release);
        return;
    }
    let (Some(initialized), Some(add_pending)) = (
        python::symbol(c"Py_IsInitialized"),
        python::symbol(c"Py_AddPendingCall"),
    ) else {
        STATE.store(UNAVAILABLE, Ordering::Release);
        return;
    };
    if python::symbol(c"PyCode_AddWatcher").is_none() || python::symbol(c"PyErr_Clear").is_none() {
        STATE.store(UNAVAILABLE, Ordering::Release);
        return;
    }
    // SAFETY: Py_IsInitialized (int(void)) reads one field of the runtime; any thread may
    // call it at any time.
    let initialized: extern "C" fn() -> i32 = unsafe { core::mem::transmute(initialized) };
    if initialized() == 0 {
        return; // not yet (or no longer): ask at a later drain
    }
    // SAFETY: Py_AddPendingCall (int(int (*)(void *), void *)) may be called from any
    // thread without the GIL once the interpreter is initialized, which it just said.
    let add_pending: extern "C" fn(extern "C" fn(*mut c_void) -> i32, *mut c_void) -> i32 =
        unsafe { core::mem::transmute(add_pending) };
    *FREED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Freed::default());
    if add_pending(add_watcher, core::ptr::null_mut()) == 0 {
        STATE.store(ASKED, Ordering::Release);
    }
}

/// The pending call: runs in the main thread with the GIL held.
extern "C" fn add_watcher(_: *mut c_void) -> i32 {
    state::guard("adding a code watcher", || 0, add_watcher_now)
}

fn add_watcher_now() -> i32 {
    let (Some(add), Some(clear)) = (
        python::symbol(c"PyCode_AddWatcher"),
        python::symbol(c"PyErr_Clear"),
    ) else {
        STATE.store(UNAVAILABLE, Ordering::Release);
        return 0;
    };
    type Watch = extern "C" fn(i32, *mut c_void) -> i32;
    // SAFETY: the 3.12+ signature int PyCode_AddWatcher(PyCode_WatchCallback); this runs
    // with the GIL held, as it requires.
    let add = unsafe { core::mem::transmute::<u64, extern "C" fn(Watch) -> i32>(add) };
    // SAFETY: void PyErr_Clear(void), GIL held.
    let clear = unsafe { core::mem::transmute::<u64, extern "C" fn()>(clear) };
    if add(on_code) >= 0 {
        STATE.store(WATCHING, Ordering::Release);
    } else {
        // All watcher ids taken by the program: say nothing, raise nothing.
        clear();
        STATE.store(UNAVAILABLE, Ordering::Release);
    }
    0
}

/// The code watcher: called with the GIL held for each code object created or destroyed.
extern "C" fn on_code(event: i32, code: *mut c_void) -> i32 {
    let code = code as u64;
    if event != EVENT_DESTROY || !state::sampling() {
        return 0;
    }
    let Some(s) = SAMPLED.get(slot(code)) else {
        return 0;
    };
    if s.load(Ordering::Relaxed) != code {
        return 0;
    }
    s.store(0, Ordering::Relaxed);
    state::guard("the code watcher", || 0, || keep(code))
}

fn keep(code: u64) -> i32 {
    let Some(py) = python::get() else { return 0 };
    // SAFETY: a code watcher's DESTROY event comes with the GIL held, before the object is
    // torn down: it and the objects it references are alive during this call.
    let Some((fp, info)) = (unsafe { python::read_code_in_place(py, code) }) else {
        return 0;
    };
    let Ok(mut g) = FREED.try_lock() else {
        return 0;
    };
    let Some(f) = g.as_mut() else { return 0 };
    if f.infos.insert((code, fp), info).is_none() {
        f.order.push_back((code, fp));
    }
    while f.order.len() > KEEP {
        if let Some(old) = f.order.pop_front() {
            f.infos.remove(&old);
        }
    }
    0
}

/// Writer thread: the contents of the code object (address, fingerprint) if it was
/// destroyed after a sample took it.
pub fn take(code: u64, fp: u64) -> Option<CodeInfo> {
    let mut g = FREED.try_lock().ok()?;
    let f = g.as_mut()?;
    let info = f.infos.remove(&(code, fp))?;
    f.order.retain(|k| *k != (code, fp));
    Some(info)
}

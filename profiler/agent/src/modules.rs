//! Loaded ELF objects, from dl_iterate_phdr: path, GNU build id, load bias and executable
//! ranges. Rescanned by the writer when the loader's add/remove counters change.

use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};
use std::collections::HashMap;

use prof_format::Module;

use crate::unwind::{self, UnwindModule};

pub struct Loaded {
    pub path: String,
    pub bias: u64,
    pub ranges: Vec<(u64, u64)>,
    pub build_id: Vec<u8>,
    pub unwind: Option<&'static UnwindModule>,
}

/// Copied unwind tables by (path, bias, .eh_frame_hdr address): a module is copied once,
/// however often the module list is rescanned.
type UnwindCache = HashMap<(String, u64, u64), Option<&'static UnwindModule>>;

struct Scan<'a> {
    counters: Option<(u64, u64)>,
    out: Vec<Loaded>,
    skip_if: Option<(u64, u64)>,
    cache: &'a mut UnwindCache,
}

/// Executable ranges of every loaded module, for the wall sampler's return-address check.
/// Published as an immutable snapshot behind an atomic pointer, never a lock: the sampler
/// thread reads it every tick, and a fork at that moment would leave a lock held forever
/// in the child. Old snapshots are leaked (module sets change rarely).
static EXEC_RANGES: AtomicPtr<Vec<(u64, u64)>> = AtomicPtr::new(core::ptr::null_mut());

/// The executable ranges of every loaded module, as of the last scan.
pub fn exec_ranges() -> &'static [(u64, u64)] {
    // SAFETY: null or a leaked, never-mutated Box<Vec>.
    unsafe { EXEC_RANGES.load(Ordering::Acquire).as_ref() }
        .map(|v| &v[..])
        .unwrap_or(&[])
}

const NT_GNU_BUILD_ID: u32 = 3;

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info of `size` bytes and our Scan.
    let (info, scan) = unsafe { (&*info, &mut *(data as *mut Scan)) };
    if scan.counters.is_none() && size >= core::mem::size_of::<libc::dl_phdr_info>() {
        let c = (info.dlpi_adds, info.dlpi_subs);
        scan.counters = Some(c);
        if scan.skip_if == Some(c) {
            return 1; // nothing was loaded or unloaded since the last scan
        }
    }
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let path = if name.is_empty() {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else if name.starts_with("linux-vdso") || name.starts_with("linux-gate") {
        "[vdso]".to_string()
    } else {
        std::fs::canonicalize(&name)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(name)
    };
    let bias = info.dlpi_addr;
    let mut ranges = Vec::new();
    let mut loads = Vec::new();
    let mut eh_frame_hdr = None;
    let mut build_id = Vec::new();
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = bias.wrapping_add(ph.p_vaddr);
        if ph.p_type == libc::PT_LOAD {
            loads.push((start, start + ph.p_memsz));
            if ph.p_flags & libc::PF_X != 0 {
                ranges.push((start, start + ph.p_memsz));
            }
        } else if ph.p_type == libc::PT_GNU_EH_FRAME {
            eh_frame_hdr = Some((start, ph.p_memsz));
        } else if ph.p_type == libc::PT_NOTE && build_id.is_empty() {
            // SAFETY: a PT_NOTE segment of a loaded object is mapped (it lies inside a
            // PT_LOAD segment) for p_memsz bytes.
            let notes =
                unsafe { core::slice::from_raw_parts(start as *const u8, ph.p_memsz as usize) };
            build_id = find_build_id(notes).unwrap_or_default();
        }
    }
    if ranges.is_empty() {
        return 0;
    }
    let unwind = match eh_frame_hdr {
        Some((addr, len)) => *scan
            .cache
            .entry((path.clone(), bias, addr))
            .or_insert_with(|| unwind::build(addr, len, &loads)),
        None => None,
    };
    scan.out.push(Loaded {
        path,
        bias,
        ranges,
        build_id,
        unwind,
    });
    0
}

fn find_build_id(mut notes: &[u8]) -> Option<Vec<u8>> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let namesz = word(notes, 0)? as usize;
        let descsz = word(notes, 4)? as usize;
        let ntype = word(notes, 8)?;
        let name_end = 12usize.checked_add(align4(namesz))?;
        let desc_end = name_end.checked_add(align4(descsz))?;
        if ntype == NT_GNU_BUILD_ID && notes.get(12..12 + namesz)? == b"GNU\0" {
            return Some(notes.get(name_end..name_end + descsz)?.to_vec());
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// Tracks which modules the log already describes.
#[derive(Default)]
pub struct Tracker {
    known: HashMap<(String, u64), u32>,
    next_id: u32,
    counters: Option<(u64, u64)>,
    cache: UnwindCache,
}

impl Tracker {
    /// Returns modules that appeared and ids of modules that disappeared since last call.
    pub fn refresh(&mut self) -> (Vec<Module>, Vec<u32>) {
        let mut scan = Scan {
            counters: None,
            out: Vec::new(),
            skip_if: self.counters,
            cache: &mut self.cache,
        };
        // SAFETY: visit matches dl_iterate_phdr's callback type; scan outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), &mut scan as *mut Scan as *mut c_void) };
        if scan.counters.is_some() && scan.counters == self.counters {
            return (Vec::new(), Vec::new());
        }
        self.counters = scan.counters;
        let mut added = Vec::new();
        let mut present = Vec::new();
        let mut ranges = Vec::new();
        let mut unwind_entries = Vec::new();
        for l in scan.out {
            ranges.extend_from_slice(&l.ranges);
            if let Some(u) = l.unwind {
                unwind_entries.extend(l.ranges.iter().map(|&(s, e)| (s, e, u)));
            }
            let key = (l.path.clone(), l.bias);
            let id = match self.known.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.known.insert(key.clone(), id);
                    added.push(Module {
                        id,
                        path: l.path,
                        build_id: l.build_id,
                        bias: l.bias,
                        ranges: l.ranges,
                    });
                    id
                }
            };
            present.push(id);
        }
        let mut removed = Vec::new();
        self.known.retain(|_, id| {
            let keep = present.contains(id);
            if !keep {
                removed.push(*id);
            }
            keep
        });
        unwind::publish(unwind_entries);
        EXEC_RANGES.store(Box::into_raw(Box::new(ranges)), Ordering::Release);
        (added, removed)
    }
}

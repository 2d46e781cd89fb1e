//! Loaded ELF objects, from dl_iterate_phdr: path, GNU build id, load bias and executable
//! ranges. Rescanned by the writer when the loader's add/remove counters change.
//!
//! Also *aliases*: a loaded file's pages mapped a second time, executable, at another
//! address, behind the loader's back. V8 does this (node 20 on x86_64, `short builtin
//! calls`): at isolate start it maps the embedded builtins' pages of the node executable
//! again next to its JIT code (`/proc/self/maps`: `7f..-7f.. r-xp 014c4000 ... /usr/bin/node`)
//! and runs them there, so JIT code can reach them with 32-bit calls. dl_iterate_phdr
//! knows nothing of that mapping; [`Tracker::aliases`] finds it in `/proc/self/maps` and
//! records it as a module of its own, with the same file and build id and a bias that
//! makes `address - bias` the ELF address of the same bytes in the original image.

use core::ffi::CStr;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::collections::HashMap;

use prof_format::Module;

use crate::unwind::{self, UnwindModule};

pub struct Loaded {
    pub path: String,
    pub bias: u64,
    pub ranges: Vec<(u64, u64)>,
    /// Lowest and highest runtime address of its PT_LOAD segments.
    pub span: (u64, u64),
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

/// Records one loaded object; true stops the walk.
fn visit(info: &libc::dl_phdr_info, size: usize, scan: &mut Scan) -> bool {
    if scan.counters.is_none() && size >= core::mem::size_of::<libc::dl_phdr_info>() {
        let c = (info.dlpi_adds, info.dlpi_subs);
        scan.counters = Some(c);
        if scan.skip_if == Some(c) {
            return true; // nothing was loaded or unloaded since the last scan
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
        return false;
    }
    let span = (
        loads.iter().map(|l| l.0).min().unwrap_or(0),
        loads.iter().map(|l| l.1).max().unwrap_or(0),
    );
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
        span,
        build_id,
        unwind,
    });
    false
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

/// A loaded image, as the alias search needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: String,
    pub bias: u64,
    pub build_id: Vec<u8>,
    /// Lowest and highest runtime address of its PT_LOAD segments.
    pub span: (u64, u64),
}

/// Tracks which modules the log already describes.
#[derive(Default)]
pub struct Tracker {
    known: HashMap<(String, u64), u32>,
    next_id: u32,
    counters: Option<(u64, u64)>,
    cache: UnwindCache,
    /// The images of the last scan.
    images: Vec<Image>,
    /// Executable ranges of the last scan.
    ranges: Vec<(u64, u64)>,
    /// Aliases recorded: (path, start, end, bias) -> module id.
    aliases: HashMap<(String, u64, u64, u64), u32>,
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
        crate::sys::for_each_loaded_object(|info, size| visit(info, size, &mut scan));
        if scan.counters.is_some() && scan.counters == self.counters {
            return (Vec::new(), Vec::new());
        }
        self.counters = scan.counters;
        let mut added = Vec::new();
        let mut present = Vec::new();
        let mut ranges = Vec::new();
        let mut unwind_entries = Vec::new();
        self.images.clear();
        for l in scan.out {
            self.images.push(Image {
                path: l.path.clone(),
                bias: l.bias,
                build_id: l.build_id.clone(),
                span: l.span,
            });
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
        self.ranges = ranges;
        self.publish_ranges();
        (added, removed)
    }

    /// Executable ranges of modules and aliases, for the wall sampler (no unwind tables
    /// for aliases: their code is found by address, and V8's builtins have no CFI).
    fn publish_ranges(&self) {
        let mut all = self.ranges.clone();
        all.extend(self.aliases.keys().map(|&(_, s, e, _)| (s, e)));
        EXEC_RANGES.store(Box::into_raw(Box::new(all)), Ordering::Release);
    }

    /// Aliases (see the module docs) in `maps` (the text of `/proc/self/maps`) that appeared
    /// since the last call, as modules, and the ids of those that went away.
    pub fn aliases(&mut self, maps: &str) -> (Vec<Module>, Vec<u32>) {
        let found = find_aliases(maps, &self.images);
        let mut added = Vec::new();
        for a in &found {
            let key = (a.path.clone(), a.start, a.end, a.bias);
            if self.aliases.contains_key(&key) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.aliases.insert(key, id);
            added.push(Module {
                id,
                path: a.path.clone(),
                build_id: a.build_id.clone(),
                bias: a.bias,
                ranges: vec![(a.start, a.end)],
            });
        }
        let mut removed = Vec::new();
        self.aliases.retain(|(path, s, e, b), id| {
            let keep = found
                .iter()
                .any(|a| a.path == *path && a.start == *s && a.end == *e && a.bias == *b);
            if !keep {
                removed.push(*id);
            }
            keep
        });
        if !added.is_empty() || !removed.is_empty() {
            self.publish_ranges();
        }
        (added, removed)
    }
}

/// An alias of a loaded image: `[start, end)` holds the image's bytes at ELF addresses
/// `address - bias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub path: String,
    pub build_id: Vec<u8>,
    pub start: u64,
    pub end: u64,
    pub bias: u64,
}

/// One line of `/proc/PID/maps`.
struct MapLine<'a> {
    start: u64,
    end: u64,
    exec: bool,
    offset: u64,
    /// device and inode, as written.
    file: (&'a str, &'a str),
    path: &'a str,
}

fn map_line(line: &str) -> Option<MapLine<'_>> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let (range, perms, offset, dev, inode) = (field(), field(), field(), field(), field());
    let path = rest.trim_start_matches(' ');
    let (a, b) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    Some(MapLine {
        start,
        end,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        file: (dev, inode),
        path,
    })
}

/// Executable mappings of a loaded image's file outside that image: for each, the image
/// mapping of the same file (device and inode) that holds the same file offset gives the
/// address the bytes have in the image, hence the alias's bias.
pub fn find_aliases(maps: &str, images: &[Image]) -> Vec<Alias> {
    let lines: Vec<MapLine> = maps
        .lines()
        .filter_map(map_line)
        .filter(|l| l.path.starts_with('/') && l.inode_known())
        .collect();
    let inside = |l: &MapLine, im: &Image| l.start >= im.span.0 && l.end <= im.span.1;
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l.exec) {
        let Some(im) = images.iter().find(|im| im.path == l.path) else {
            continue;
        };
        if images.iter().any(|im| im.path == l.path && inside(l, im)) {
            continue; // the image itself
        }
        // The image's own mapping of the same file holding this offset.
        let orig = lines.iter().find(|o| {
            o.file == l.file
                && inside(o, im)
                && o.offset <= l.offset
                && l.offset - o.offset < o.end - o.start
        });
        let Some(o) = orig else { continue };
        let image_addr = o.start + (l.offset - o.offset);
        out.push(Alias {
            path: im.path.clone(),
            build_id: im.build_id.clone(),
            start: l.start,
            end: l.end,
            bias: im.bias.wrapping_add(l.start.wrapping_sub(image_addr)),
        });
    }
    out
}

impl MapLine<'_> {
    fn inode_known(&self) -> bool {
        self.file.1 != "0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// node 20 (nodesource build) with its embedded builtins mapped again next to the
    /// code space; `Builtins_LoadIC` is at ELF address 0x190bcc0.
    const NODE_MAPS: &str = "\
00400000-00b6f000 r--p 00000000 fe:00 247584                             /usr/bin/node
00b6f000-00b71000 r-xp 0076f000 fe:00 247584                             /usr/bin/node
00b72000-025fe000 r-xp 00772000 fe:00 247584                             /usr/bin/node
02600000-02601000 r-xp 02200000 fe:00 247584                             /usr/bin/node
02601000-0563a000 r--p 02201000 fe:00 247584                             /usr/bin/node
0563a000-0563e000 r--p 05239000 fe:00 247584                             /usr/bin/node
0563e000-0565d000 rw-p 0523d000 fe:00 247584                             /usr/bin/node
7f2fc0003000-7f2fc003f000 rwxp 00000000 00:00 0 
7f2fdfe40000-7f2fdffd2000 r-xp 014c4000 fe:00 247584                     /usr/bin/node
7f2fe0000000-7f2fe0001000 r-xp 00001000 fe:00 999                        /usr/lib/libother.so
7f3000aad000-7f3000aaf000 r-xp 00000000 00:00 0                          [vdso]
";

    fn node() -> Image {
        Image {
            path: "/usr/bin/node".into(),
            bias: 0,
            build_id: vec![0xeb, 0xea],
            span: (0x400000, 0x565d000),
        }
    }

    #[test]
    fn v8_embedded_builtins_remapped() {
        let a = find_aliases(NODE_MAPS, &[node()]);
        assert_eq!(
            a,
            vec![Alias {
                path: "/usr/bin/node".into(),
                build_id: vec![0xeb, 0xea],
                start: 0x7f2fdfe40000,
                end: 0x7f2fdffd2000,
                bias: 0x7f2fdfe40000 - 0x18c4000,
            }]
        );
        // A pc in the alias lands on the ELF address of the same bytes.
        let pc = 0x7f2fdfe40000 + (0x190bcc0 - 0x18c4000);
        assert_eq!(pc - a[0].bias, 0x190bcc0);
        // A position-independent image: the same with a load bias.
        let bias = 0x55d0_0000_0000u64;
        let shifted: String = NODE_MAPS
            .lines()
            .map(|l| match l.split_once('-') {
                Some((s, r)) if l.contains("/usr/bin/node") && !l.starts_with("7f") => {
                    let (e, rest) = r.split_once(' ').unwrap();
                    let s = u64::from_str_radix(s, 16).unwrap() + bias;
                    let e = u64::from_str_radix(e, 16).unwrap() + bias;
                    format!("{s:x}-{e:x} {rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let im = Image {
            bias,
            span: (0x400000 + bias, 0x565d000 + bias),
            ..node()
        };
        let a = find_aliases(&shifted, &[im]);
        assert_eq!(a.len(), 1);
        assert_eq!(pc - a[0].bias, 0x190bcc0);
    }

    #[test]
    fn no_aliases_without_a_second_mapping() {
        let plain: String = NODE_MAPS
            .lines()
            .filter(|l| !l.starts_with("7f2fdfe4"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(find_aliases(&plain, &[node()]).is_empty());
        // Files that are no loaded image are not aliases (libother.so is not in images).
        assert!(find_aliases(NODE_MAPS, &[]).is_empty());
    }

    #[test]
    fn tracker_records_each_alias_once_and_its_removal() {
        let mut t = Tracker {
            images: vec![node()],
            next_id: 7,
            ..Default::default()
        };
        let (added, removed) = t.aliases(NODE_MAPS);
        assert_eq!(added.len(), 1);
        assert!(removed.is_empty());
        assert_eq!(added[0].id, 7);
        assert_eq!(added[0].ranges, vec![(0x7f2fdfe40000, 0x7f2fdffd2000)]);
        let (added, removed) = t.aliases(NODE_MAPS);
        assert!(added.is_empty() && removed.is_empty());
        let (added, removed) = t.aliases("");
        assert!(added.is_empty());
        assert_eq!(removed, vec![7]);
    }
}

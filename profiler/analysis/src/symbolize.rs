//! Native symbolization: runtime address -> function frames (inlined frames expanded).
//!
//! Per module file (keyed by recorded path + build id) we load, once:
//! - the file on disk, after checking its GNU build id against the recorded one;
//! - a separate debug file, found by build id under the debug directories
//!   (`/usr/lib/debug/.build-id/xx/yyyy.debug`, Debian's layout) or by `.gnu_debuglink`;
//! - DWARF (from the file itself, else from the debug file, plus a dwz supplementary file
//!   named by `.gnu_debugaltlink`) as an addr2line [`Context`](addr2line::Context);
//! - a sorted function symbol table (`.symtab` of the file, else of the debug file, else
//!   `.dynsym`), used when DWARF has nothing for an address.
//!
//! A file whose build id differs from the recorded one is never used: its frames are
//! shown as `module+0xSVMA`. Every distinct address is looked up once (cache).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, SymbolKind};
use serde::{Deserialize, Serialize};

/// One symbolized stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    /// Function name (demangled), or a placeholder: `libfoo.so+0x1234` (no symbols),
    /// `0x7f...` (address in no module), `[vdso]`, `[syscall nanosleep]`, `[plt]`.
    pub name: String,
    /// File name of the module (`libc.so.6`), `[unknown]` for addresses in no module,
    /// `[kernel]` for syscall frames, `[vdso]`.
    pub module: String,
    /// Source file (as DWARF names it, usually absolute).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True when this function was inlined into the frame before it (its caller).
    pub inlined: bool,
}

impl Frame {
    /// A frame with no source location.
    pub fn bare(name: impl Into<String>, module: impl Into<String>) -> Frame {
        Frame {
            name: name.into(),
            module: module.into(),
            file: None,
            line: None,
            inlined: false,
        }
    }
}

/// Why a module's file could not be used for symbols.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("{path}: cannot read the file ({reason})")]
    Unreadable { path: String, reason: String },
    #[error("{path}: not an object file this build can parse ({reason})")]
    Parse { path: String, reason: String },
    #[error(
        "{path}: build id on disk ({found}) differs from the recorded one ({expected}); \
         the file was rebuilt or replaced since the profile was taken"
    )]
    BuildIdMismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("{path}: not a file (pseudo module)")]
    NotAFile { path: String },
    #[error("{path}: not among the files this symbolizer may read")]
    NotAllowed { path: String },
}

/// Which files a [`Symbolizer`] may read. Every file it opens (binaries a profile names,
/// debug files, files given to [`Symbolizer::add_file`]) goes through one of these, so a
/// server symbolizing uploaded profiles decides the policy in one place.
pub trait FileAccess: Send + Sync {
    /// Opens `path` for reading, or says why not. Must not block (on a FIFO, a device).
    fn open(&self, path: &Path) -> Result<File, SymbolError>;
}

/// Any regular file: the default, for `prof report` on the machine that recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyFile;

impl FileAccess for AnyFile {
    fn open(&self, path: &Path) -> Result<File, SymbolError> {
        let unreadable = |e: std::io::Error| SymbolError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let not_a_file = || SymbolError::NotAFile {
            path: path.display().to_string(),
        };
        // Check before opening: opening a FIFO (a profile can name any path) would block.
        if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
            return Err(not_a_file());
        }
        let file = File::open(path).map_err(unreadable)?;
        if !file.metadata().map_err(unreadable)?.is_file() {
            return Err(not_a_file());
        }
        Ok(file)
    }
}

/// Regular files under the given directories only (symbolic links resolved before the
/// check, so a link cannot point outside).
#[derive(Debug, Clone, Default)]
pub struct UnderDirs {
    dirs: Vec<PathBuf>,
}

impl UnderDirs {
    /// Directories that do not exist (yet) are kept as given.
    pub fn new<I: IntoIterator<Item = PathBuf>>(dirs: I) -> UnderDirs {
        UnderDirs {
            dirs: dirs
                .into_iter()
                .map(|d| d.canonicalize().unwrap_or(d))
                .collect(),
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl FileAccess for UnderDirs {
    fn open(&self, path: &Path) -> Result<File, SymbolError> {
        let real = path.canonicalize().map_err(|e| SymbolError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if !self.dirs.iter().any(|d| real.starts_with(d)) {
            return Err(SymbolError::NotAllowed {
                path: path.display().to_string(),
            });
        }
        AnyFile.open(&real)
    }
}

/// Lower-case hex of a build id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The display name of a module path: its file name (`/lib/x/libc.so.6` -> `libc.so.6`).
pub fn module_name(path: &str) -> String {
    if path.is_empty() {
        return "[anonymous]".to_string();
    }
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => path.to_string(),
    }
}

/// Demangles Rust (legacy and v0) and C++ (Itanium) names; returns others unchanged.
///
/// Only names that look mangled (`_Z…`, `_R…`) are touched: a C++ demangler happily reads
/// a C function called `f` as the type `float`.
pub fn demangle(name: &str) -> String {
    let mangled = name.strip_prefix('_').unwrap_or(name);
    if !(name.starts_with("_Z") || name.starts_with("_R") || mangled.starts_with("_Z")) {
        return name.to_string();
    }
    if let Some(d) = addr2line::demangle(name, gimli::DW_LANG_Rust) {
        return d;
    }
    addr2line::demangle(name, gimli::DW_LANG_C_plus_plus).unwrap_or_else(|| name.to_string())
}

// ---------------------------------------------------------------------------------------
// Section bytes shared out of a memory map, so DWARF readers own what they read.

#[derive(Clone)]
enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // In bounds: checked when the value was made (`section_bytes`).
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }
}

// SAFETY: both variants point into heap/mapped memory owned by an `Arc`; moving or cloning
// a `Bytes` never moves the bytes, and the mapping lives as long as any clone.
unsafe impl gimli::StableDeref for Bytes {}
unsafe impl gimli::CloneStableDeref for Bytes {}

type Reader = gimli::EndianReader<gimli::RunTimeEndian, Bytes>;

/// An object file mapped into memory.
struct Mapped {
    path: PathBuf,
    map: Arc<Mmap>,
}

impl Mapped {
    fn open(path: &Path, access: &dyn FileAccess) -> Result<Mapped, SymbolError> {
        let unreadable = |e: std::io::Error| SymbolError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let file = access.open(path)?;
        // SAFETY: the map is read-only; a file truncated while mapped would fault, the
        // risk every symbolizer that maps binaries (addr2line, perf) accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(unreadable)?;
        Ok(Mapped {
            path: path.to_path_buf(),
            map: Arc::new(map),
        })
    }

    fn parse(&self) -> Result<object::File<'_>, SymbolError> {
        object::File::parse(&**self.map).map_err(|e| SymbolError::Parse {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The named section's contents (decompressed when needed); empty when absent.
    fn section_bytes(&self, obj: &object::File<'_>, name: &str) -> Bytes {
        let empty = || Bytes::Owned(Arc::from(&[][..]));
        let Some(section) = obj.section_by_name(name) else {
            return empty();
        };
        match section.uncompressed_data() {
            Ok(Cow::Borrowed(b)) => {
                let base = self.map.as_ptr() as usize;
                let p = b.as_ptr() as usize;
                if p >= base && p + b.len() <= base + self.map.len() {
                    Bytes::Mapped {
                        map: self.map.clone(),
                        start: p - base,
                        len: b.len(),
                    }
                } else {
                    Bytes::Owned(Arc::from(b))
                }
            }
            Ok(Cow::Owned(v)) => Bytes::Owned(Arc::from(v)),
            Err(_) => empty(),
        }
    }
}

fn has_dwarf(obj: &object::File<'_>) -> bool {
    obj.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
}

fn file_build_id(obj: &object::File<'_>) -> Option<Vec<u8>> {
    obj.build_id()
        .ok()
        .flatten()
        .filter(|b| !b.is_empty())
        .map(|b| b.to_vec())
}

// ---------------------------------------------------------------------------------------
// Symbol tables.

#[derive(Debug, Clone, Copy)]
struct Sym {
    addr: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
    /// Lower is better when several symbols share an address.
    rank: u32,
    /// End of the symbol's section: a zero-sized symbol covers up to the next symbol but
    /// never past this.
    limit: u64,
}

/// Function symbols sorted by address, one per address.
#[derive(Debug, Default)]
struct SymTab {
    syms: Vec<Sym>,
    names: String,
}

impl SymTab {
    fn push(&mut self, addr: u64, size: u64, name: &str, rank: u32, limit: u64) {
        if name.is_empty() || self.names.len() + name.len() > u32::MAX as usize {
            return;
        }
        let name_start = self.names.len() as u32;
        self.names.push_str(name);
        self.syms.push(Sym {
            addr,
            size,
            name_start,
            name_len: name.len() as u32,
            rank,
            limit,
        });
    }

    fn from_object(obj: &object::File<'_>, dynamic: bool) -> SymTab {
        let mut t = SymTab::default();
        let table = if dynamic {
            obj.dynamic_symbol_table()
        } else {
            obj.symbol_table()
        };
        let Some(table) = table else { return t };
        for s in table.symbols() {
            if s.kind() != SymbolKind::Text || s.is_undefined() || s.address() == 0 {
                continue;
            }
            let Ok(name) = s.name() else { continue };
            // Prefer global names to weak ones to local ones, then fewer leading
            // underscores (`nanosleep` over `__nanosleep` over `__GI___nanosleep`).
            let binding = if s.is_global() {
                0
            } else if s.is_weak() {
                1
            } else {
                2
            };
            let underscores = name.bytes().take_while(|&b| b == b'_').count().min(15) as u32;
            let limit = match s.section_index().and_then(|i| obj.section_by_index(i).ok()) {
                Some(sec) => sec.address().saturating_add(sec.size()),
                None => u64::MAX,
            };
            t.push(
                s.address(),
                s.size(),
                name,
                binding * 16 + underscores,
                limit,
            );
        }
        t.finish();
        t
    }

    fn finish(&mut self) {
        self.syms.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then((b.size > 0).cmp(&(a.size > 0)))
                .then(a.rank.cmp(&b.rank))
                .then(a.name_len.cmp(&b.name_len))
        });
        self.syms.dedup_by_key(|s| s.addr);
        // Zero-sized symbols (hand-written assembly, crt code) extend to the next symbol,
        // within their section.
        for i in 0..self.syms.len() {
            if self.syms[i].size == 0 {
                let next = self.syms.get(i + 1).map_or(u64::MAX, |n| n.addr);
                let s = &mut self.syms[i];
                s.size = next.min(s.limit).saturating_sub(s.addr);
            }
        }
    }

    fn name(&self, s: &Sym) -> &str {
        self.names
            .get(s.name_start as usize..(s.name_start + s.name_len) as usize)
            .unwrap_or("")
    }

    fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The function containing `addr`: the nearest symbol at or below it, if `addr` lies
    /// within its size.
    fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        // Symbols may nest (a large symbol around smaller ones): look a few back.
        self.syms[..i]
            .iter()
            .rev()
            .take(4)
            .find(|s| addr - s.addr < s.size)
            .map(|s| self.name(s))
    }
}

// ---------------------------------------------------------------------------------------
// One module file, loaded.

struct ModFile {
    module: String,
    symtab: SymTab,
    /// PLT sections [start, end) (stubs have no symbols).
    plt: Vec<(u64, u64)>,
    dwarf: Option<addr2line::Context<Reader>>,
    /// Where the DWARF came from, for diagnostics.
    dwarf_source: Option<PathBuf>,
}

enum Slot {
    Loaded(Box<ModFile>),
    Failed(SymbolError),
}

struct Debug {
    file: Mapped,
}

/// Turns module-relative addresses into [`Frame`]s; caches loaded files and lookups.
///
/// One `Symbolizer` can serve many analyses (a server keeps one): files are keyed by path
/// and build id, so a rebuilt file is loaded afresh.
pub struct Symbolizer {
    access: Arc<dyn FileAccess>,
    debug_dirs: Vec<PathBuf>,
    by_build_id: HashMap<Vec<u8>, PathBuf>,
    slots: Vec<Slot>,
    slot_index: HashMap<(String, Vec<u8>), usize>,
    cache: HashMap<(usize, u64, bool), Arc<[Frame]>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbolizer")
            .field("debug_dirs", &self.debug_dirs)
            .field("files", &self.slots.len())
            .field("cached_addresses", &self.cache.len())
            .finish()
    }
}

impl Symbolizer {
    /// A symbolizer that looks for debug files under `/usr/lib/debug`.
    pub fn new() -> Self {
        Symbolizer {
            access: Arc::new(AnyFile),
            debug_dirs: vec![PathBuf::from("/usr/lib/debug")],
            by_build_id: HashMap::new(),
            slots: Vec::new(),
            slot_index: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// Forgets every loaded file and cached lookup, and the tables given to
    /// [`add_symbols`](Self::add_symbols) (keeps debug directories and files registered with
    /// [`add_file`](Self::add_file)). A long-lived server can call this between profiles to
    /// bound memory.
    pub fn clear_cache(&mut self) {
        self.slots.clear();
        self.slot_index.clear();
        self.cache.clear();
    }

    /// A symbolizer with no debug directories at all (tests, sandboxes).
    pub fn without_debug_dirs() -> Self {
        Symbolizer {
            debug_dirs: Vec::new(),
            ..Self::new()
        }
    }

    /// Reads files only through `access` (default: [`AnyFile`]).
    pub fn set_file_access(&mut self, access: Arc<dyn FileAccess>) {
        self.access = access;
        self.clear_cache();
    }

    /// Also look for debug files under `dir`: `dir/.build-id/xx/yyyy.debug` (or without
    /// `.debug`: a whole unstripped binary stored by build id), searched before the
    /// directories added earlier.
    pub fn add_debug_dir(&mut self, dir: impl Into<PathBuf>) {
        self.debug_dirs.insert(0, dir.into());
    }

    /// Registers a file (binary or debug file) by its own build id: modules recorded with
    /// that build id are symbolized from it, wherever they were loaded from. Returns the
    /// build id.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<u8>, SymbolError> {
        let path = path.as_ref();
        let m = Mapped::open(path, &*self.access)?;
        let obj = m.parse()?;
        let id = file_build_id(&obj).ok_or_else(|| SymbolError::Parse {
            path: path.display().to_string(),
            reason: "the file has no GNU build id".to_string(),
        })?;
        self.by_build_id.insert(id.clone(), path.to_path_buf());
        // Forget failures for this build id: the new file may fix them.
        let stale: Vec<usize> = self
            .slot_index
            .iter()
            .filter(|((_, b), _)| *b == id)
            .map(|(_, &i)| i)
            .collect();
        self.slot_index.retain(|(_, b), _| *b != id);
        self.cache.retain(|(slot, _, _), _| !stale.contains(slot));
        Ok(id)
    }

    /// Registers a synthetic symbol table for the module recorded as (`path`, `build_id`):
    /// `(svma start, size, name)`, names demangled on lookup. For JIT maps and tests.
    pub fn add_symbols<I, S>(&mut self, path: &str, build_id: &[u8], symbols: I)
    where
        I: IntoIterator<Item = (u64, u64, S)>,
        S: AsRef<str>,
    {
        let mut symtab = SymTab::default();
        for (addr, size, name) in symbols {
            symtab.push(addr, size, name.as_ref(), 0, u64::MAX);
        }
        symtab.finish();
        let file = ModFile {
            module: module_name(path),
            symtab,
            plt: Vec::new(),
            dwarf: None,
            dwarf_source: None,
        };
        let key = (path.to_string(), build_id.to_vec());
        let idx = self.slots.len();
        self.slots.push(Slot::Loaded(Box::new(file)));
        self.slot_index.insert(key, idx);
    }

    /// Why the module recorded as (`path`, `build_id`) cannot be symbolized from a file,
    /// if it cannot (loads it if not loaded yet).
    pub fn load_error(&mut self, path: &str, build_id: &[u8]) -> Option<&SymbolError> {
        let i = self.slot(path, build_id);
        match &self.slots[i] {
            Slot::Failed(e) => Some(e),
            Slot::Loaded(_) => None,
        }
    }

    /// Where the DWARF for a module comes from (the file itself or a debug file), if any.
    pub fn dwarf_source(&mut self, path: &str, build_id: &[u8]) -> Option<&Path> {
        let i = self.slot(path, build_id);
        match &self.slots[i] {
            Slot::Loaded(f) => f.dwarf_source.as_deref(),
            Slot::Failed(_) => None,
        }
    }

    /// Frames (outermost first) for runtime address `addr` in `module`. `return_address`:
    /// `addr` is a return address (every frame but the sample's leaf), so the call
    /// instruction before it is looked up. Never fails: unknown code gets a placeholder.
    pub fn symbolize(
        &mut self,
        module: &prof_format::Module,
        addr: u64,
        return_address: bool,
    ) -> Arc<[Frame]> {
        let name = module_name(&module.path);
        if module.path == "[vdso]" {
            return Arc::from(vec![Frame::bare("[vdso]", "[vdso]")]);
        }
        let svma = addr.wrapping_sub(module.bias);
        let slot = self.slot(&module.path, &module.build_id);
        let key = (slot, svma, return_address);
        if let Some(f) = self.cache.get(&key) {
            return f.clone();
        }
        let probe = if return_address {
            svma.wrapping_sub(1)
        } else {
            svma
        };
        let frames: Arc<[Frame]> = match &self.slots[slot] {
            Slot::Loaded(file) => {
                let mut frames = file.lookup(probe, svma);
                // A "return address" that is no call's: runtimes push function entries
                // as return addresses (V8's deoptimizer returns into
                // Builtins_InterpreterEnterAtNextBytecode's first byte). When the byte
                // before it is in no function, the address itself names the code.
                if return_address && matches!(&frames[..], [f] if is_offset_frame(f)) {
                    let own = file.lookup(svma, svma);
                    if !matches!(&own[..], [f] if is_offset_frame(f)) {
                        frames = own;
                    }
                }
                Arc::from(frames)
            }
            Slot::Failed(_) => Arc::from(vec![offset_frame(&name, svma)]),
        };
        self.cache.insert(key, frames.clone());
        frames
    }

    fn slot(&mut self, path: &str, build_id: &[u8]) -> usize {
        let key = (path.to_string(), build_id.to_vec());
        if let Some(&i) = self.slot_index.get(&key) {
            return i;
        }
        let slot = match self.load(path, build_id) {
            Ok(f) => Slot::Loaded(Box::new(f)),
            Err(e) => Slot::Failed(e),
        };
        let i = self.slots.len();
        self.slots.push(slot);
        self.slot_index.insert(key, i);
        i
    }

    fn load(&self, path: &str, build_id: &[u8]) -> Result<ModFile, SymbolError> {
        // The main file: a registered file with this build id, else the recorded path.
        let registered = if build_id.is_empty() {
            None
        } else {
            self.by_build_id.get(build_id)
        };
        let main: Result<Mapped, SymbolError> = match registered {
            Some(p) => Mapped::open(p, &*self.access),
            None if path.starts_with('/') => Mapped::open(Path::new(path), &*self.access),
            None => Err(SymbolError::NotAFile {
                path: path.to_string(),
            }),
        };
        let main = main.and_then(|m| {
            let obj = m.parse()?;
            if !build_id.is_empty() {
                let found = file_build_id(&obj).unwrap_or_default();
                if found != build_id {
                    return Err(SymbolError::BuildIdMismatch {
                        path: m.path.display().to_string(),
                        expected: hex(build_id),
                        found: if found.is_empty() {
                            "none".into()
                        } else {
                            hex(&found)
                        },
                    });
                }
            }
            drop(obj);
            Ok(m)
        });

        // A separate debug file: by build id (trustworthy even when the binary on disk
        // changed), else by the binary's .gnu_debuglink.
        let debug = self
            .find_debug_by_build_id(build_id)
            .or_else(|| match &main {
                Ok(m) => self.find_debug_by_link(m, path),
                Err(_) => None,
            });

        let (main, debug) = match (main, debug) {
            (Err(e), None) => return Err(e),
            (Ok(m), d) => (Some(m), d),
            (Err(_), Some(d)) => (None, Some(d)),
        };
        let main_obj = match &main {
            Some(m) => Some(m.parse()?),
            None => None,
        };
        let debug_obj = debug.as_ref().and_then(|d| d.file.parse().ok());

        // Symbols: the file's full table, else the debug file's, else dynamic symbols.
        let mut symtab = main_obj
            .as_ref()
            .map(|o| SymTab::from_object(o, false))
            .unwrap_or_default();
        if symtab.is_empty() {
            if let Some(o) = &debug_obj {
                symtab = SymTab::from_object(o, false);
            }
        }
        if symtab.is_empty() {
            if let Some(o) = &main_obj {
                symtab = SymTab::from_object(o, true);
            }
        }

        let plt = main_obj
            .as_ref()
            .or(debug_obj.as_ref())
            .map(|o| {
                o.sections()
                    .filter(|s| matches!(s.name(), Ok(".plt" | ".plt.sec" | ".plt.got")))
                    .map(|s| (s.address(), s.address().saturating_add(s.size())))
                    .collect()
            })
            .unwrap_or_default();

        // DWARF: the file's own, else the debug file's.
        let mut dwarf = None;
        let mut dwarf_source = None;
        let candidates = [
            main.as_ref().zip(main_obj.as_ref()),
            debug.as_ref().map(|d| &d.file).zip(debug_obj.as_ref()),
        ];
        for (m, o) in candidates.into_iter().flatten() {
            if has_dwarf(o) {
                if let Some(ctx) = self.load_dwarf(m, o) {
                    dwarf = Some(ctx);
                    dwarf_source = Some(m.path.clone());
                    break;
                }
            }
        }

        Ok(ModFile {
            module: module_name(path),
            symtab,
            plt,
            dwarf,
            dwarf_source,
        })
    }

    fn load_dwarf(&self, m: &Mapped, obj: &object::File<'_>) -> Option<addr2line::Context<Reader>> {
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let load = |m: &Mapped, o: &object::File<'_>, id: gimli::SectionId| {
            Ok::<_, gimli::Error>(Reader::new(m.section_bytes(o, id.name()), endian))
        };
        let mut dwarf = gimli::Dwarf::load(|id| load(m, obj, id)).ok()?;
        // dwz: a supplementary file holding DWARF shared between packages.
        if let Some(sup) = self.find_sup(m, obj) {
            if let Ok(sup_obj) = sup.parse() {
                let _ = dwarf.load_sup(|id| load(&sup, &sup_obj, id));
            }
        }
        addr2line::Context::from_dwarf(dwarf).ok()
    }

    fn find_debug_by_build_id(&self, build_id: &[u8]) -> Option<Debug> {
        if build_id.len() < 2 {
            return None;
        }
        let h = hex(build_id);
        for dir in &self.debug_dirs {
            for suffix in [".debug", ""] {
                let p = dir
                    .join(".build-id")
                    .join(&h[..2])
                    .join(format!("{}{}", &h[2..], suffix));
                if let Some(d) = open_verified(&p, build_id, &*self.access) {
                    return Some(d);
                }
            }
        }
        None
    }

    fn find_debug_by_link(&self, main: &Mapped, recorded_path: &str) -> Option<Debug> {
        let obj = main.parse().ok()?;
        let (name, crc) = obj.gnu_debuglink().ok().flatten()?;
        let name = std::str::from_utf8(name).ok()?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let own_id = file_build_id(&obj);
        let dir = Path::new(recorded_path).parent()?;
        let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
        for d in &self.debug_dirs {
            candidates.push(d.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
        }
        for p in candidates {
            if p == main.path {
                continue;
            }
            let Ok(file) = Mapped::open(&p, &*self.access) else {
                continue;
            };
            let ok = match &own_id {
                Some(id) => file.parse().ok().and_then(|o| file_build_id(&o)).as_ref() == Some(id),
                None => crc32(&file.map) == crc,
            };
            if ok {
                return Some(Debug { file });
            }
        }
        None
    }

    fn find_sup(&self, m: &Mapped, obj: &object::File<'_>) -> Option<Mapped> {
        let (name, id) = obj.gnu_debugaltlink().ok().flatten()?;
        if let Some(d) = self.find_debug_by_build_id(id) {
            return Some(d.file);
        }
        let name = Path::new(std::str::from_utf8(name).ok()?);
        let p = if name.is_absolute() {
            name.to_path_buf()
        } else {
            m.path.parent()?.join(name)
        };
        open_verified(&p, id, &*self.access).map(|d| d.file)
    }
}

fn open_verified(path: &Path, build_id: &[u8], access: &dyn FileAccess) -> Option<Debug> {
    let file = Mapped::open(path, access).ok()?;
    let id = file_build_id(&file.parse().ok()?)?;
    (id == build_id).then_some(Debug { file })
}

/// `libfoo.so+0x1234`: code we cannot name.
fn offset_frame(module: &str, svma: u64) -> Frame {
    Frame::bare(format!("{module}+{svma:#x}"), module)
}

/// True for the placeholder of code a module's file could not name (`libfoo.so+0x1234`).
pub(crate) fn is_offset_frame(f: &Frame) -> bool {
    f.name
        .strip_prefix(f.module.as_str())
        .and_then(|r| r.strip_prefix("+0x"))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl ModFile {
    /// Frames for `probe` (the svma looked up); `svma` is what placeholders show.
    fn lookup(&self, probe: u64, svma: u64) -> Vec<Frame> {
        let mut dwarf_frames: Vec<(Option<String>, Option<String>, Option<u32>)> = Vec::new();
        if let Some(ctx) = &self.dwarf {
            if let Ok(mut iter) = ctx.find_frames(probe).skip_all_loads() {
                while let Ok(Some(f)) = iter.next() {
                    // Our own demangling, not addr2line's per-language one: that one
                    // turns a C++ `extern "C"` function named `f` into `float`.
                    let name = f
                        .function
                        .as_ref()
                        .and_then(|func| func.raw_name().ok().map(|n| demangle(&n)));
                    let (file, line) = match &f.location {
                        Some(l) => (l.file.map(str::to_string), l.line),
                        None => (None, None),
                    };
                    dwarf_frames.push((name, file, line));
                    if dwarf_frames.len() > 256 {
                        break;
                    }
                }
            }
        }
        // addr2line gives innermost first; the last is the real (non-inlined) function.
        if let Some((Some(_), _, _)) = dwarf_frames.last() {
            let sym = self.symtab.lookup(probe);
            return dwarf_frames
                .into_iter()
                .rev()
                .enumerate()
                .map(|(i, (name, file, line))| Frame {
                    name: name.unwrap_or_else(|| match (i, sym) {
                        (0, Some(s)) => demangle(s),
                        _ => "[unknown inlined]".to_string(),
                    }),
                    module: self.module.clone(),
                    file,
                    line,
                    inlined: i > 0,
                })
                .collect();
        }
        // No DWARF function: the symbol table names it; DWARF lines may still help.
        let name = match self.symtab.lookup(probe) {
            Some(s) => demangle(s),
            None if self.plt.iter().any(|&(s, e)| probe >= s && probe < e) => "[plt]".to_string(),
            None => return vec![offset_frame(&self.module, svma)],
        };
        let (file, line) = match dwarf_frames.first() {
            Some((_, f, l)) => (f.clone(), *l),
            None => (None, None),
        };
        vec![Frame {
            name,
            module: self.module.clone(),
            file,
            line,
            inlined: false,
        }]
    }
}

/// CRC-32 (IEEE), as `.gnu_debuglink` uses.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(
            demangle("_ZN2ns6Widget7computeEi"),
            "ns::Widget::compute(int)"
        );
        assert_eq!(demangle("plain_c"), "plain_c");
        assert_eq!(demangle("f"), "f");
        assert_eq!(demangle("g"), "g");
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("/lib/x86_64-linux-gnu/libc.so.6"), "libc.so.6");
        assert_eq!(module_name(""), "[anonymous]");
        assert_eq!(module_name("[vdso]"), "[vdso]");
        assert_eq!(module_name("/weird/"), "/weird/");
    }

    #[test]
    fn symtab_lookup_respects_sizes() {
        let mut t = SymTab::default();
        t.push(0x1000, 0x10, "a", 0, u64::MAX);
        t.push(0x1020, 0, "b_nosize", 0, u64::MAX);
        t.push(0x1040, 0x100, "big", 0, u64::MAX);
        t.push(0x1050, 0x8, "nested", 0, u64::MAX);
        t.push(0x1000, 0x10, "a_alias_worse", 5, u64::MAX);
        t.push(0x2000, 0, "asm_end", 0, 0x2010);
        t.finish();
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(t.lookup(0x1000), Some("a"));
        assert_eq!(t.lookup(0x100f), Some("a"));
        assert_eq!(t.lookup(0x1010), None);
        assert_eq!(t.lookup(0x1030), Some("b_nosize"));
        assert_eq!(t.lookup(0x1052), Some("nested"));
        assert_eq!(t.lookup(0x1060), Some("big"));
        assert_eq!(t.lookup(0x1140), None);
        assert_eq!(t.lookup(0x200f), Some("asm_end"));
        assert_eq!(t.lookup(0x2010), None);
        assert_eq!(t.lookup(u64::MAX), None);
    }

    #[test]
    fn symbolizer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Symbolizer>();
    }
}

//! PyPy code names and stacks, on the writer side (issue 17). Ordinary Rust, never called
//! from the signal handler.
//!
//! - **Names.** The handler records code objects by their vmprof unique id; only PyPy
//!   knows the names, and it tells them to `_vmprof` when vmprof is on. So in a PyPy
//!   process the agent's constructor puts a start-up hook (`sitecustomize`, in prof's
//!   temporary directory, first on `PYTHONPATH`) that turns `_vmprof` on with its timer
//!   stopped: PyPy then writes `py:name:firstline:file` for every code object, existing
//!   and new, to a file the writer tails. The hook restores `PYTHONPATH`, `sys.path` and
//!   any `sitecustomize` of the program's own, so the program sees what it would without
//!   prof. At exit it turns vmprof off, which flushes the names PyPy still buffers.
//! - **Stacks.** A sample's PyPy entries become `PYPY` nodes (one per Python frame, with
//!   its tier) and `PYPY_JIT` nodes (an address in JIT code, named by the analysis from
//!   PyPy's JIT log); the native frames above the innermost frame of libpypy or JIT code
//!   (C libraries called from Python) follow as the leaf. The interpreter's own native
//!   frames (libpypy is stripped: they would only be addresses) and the process's entry
//!   frames are left out, so every sample of a Python frame has the same callers.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;

use prof_format::{flags, node_kind, tier_hint, PyCode};
use rustc_hash::FxHashMap as HashMap;

use crate::pypy::{Pypy, KIND_CODE, KIND_JITTED};
use crate::ring::{SampleData, NO_SYSCALL};

/// Node value bit of a `PYPY_JIT` node: the machine code is the JIT-compiled loop of the
/// Python frame just before it (its outermost inlined function is that frame's).
pub const JIT_OF_PREVIOUS: u64 = 1 << 63;
/// Node value bit of a `PYPY_JIT` node: the address is the interrupted instruction, not a
/// return address.
pub const JIT_LEAF: u64 = 1 << 62;
/// `PY_CODE` ids of PyPy code objects start here (CPython's count up from 1).
const FIRST_ID: u32 = 1 << 31;

/// The start-up hook. Runs inside the program: keep it small, failure-proof and silent.
const HOOK: &str = r#"# prof's start-up hook for PyPy, written by prof's agent (profiler/agent/src/pypy_names.rs).
# Turns on the code-object registration of PyPy's _vmprof (vmprof's own timer stopped) so
# that prof can name Python frames, then removes every trace of itself.
def _prof_boot():
    import os, sys
    env = os.environ
    here = os.path.dirname(os.path.abspath(__file__))
    saved = env.pop("PROF_PYPY_PYTHONPATH", None)
    if saved is not None:
        if saved[:1] == "=":
            env["PYTHONPATH"] = saved[1:]
        else:
            env.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != here]
    sys.path_importer_cache.pop(here, None)
    fd = env.pop("PROF_PYPY_NAMES_FD", None)
    try:
        import importlib.machinery as m
        spec = m.PathFinder.find_spec("sitecustomize", sys.path)
    except Exception:
        spec = None
    if spec is not None and spec.loader is not None:
        import importlib.util as u
        mod = u.module_from_spec(spec)
        sys.modules["sitecustomize"] = mod
        spec.loader.exec_module(mod)
    if fd is None or sys.implementation.name != "pypy":
        return
    try:
        import _vmprof, signal, atexit
        fd = int(fd)
        _vmprof.enable(fd, 0.5, 0, 0, 0, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        _vmprof.stop_sampling()
    except Exception:
        return

    def child():
        # Code ids go on from the parent's count in a forked child: its names go to a file
        # of its own, under the same descriptor number, which first says how much of the
        # parent's file (names of the code made before the fork) holds for the child too.
        try:
            # Writes the parent's pending names (code made before the fork) to its file,
            # and closes the descriptor.
            _vmprof.disable()
        except Exception:
            pass
        try:
            d = os.environ.get("PROF_DIR")
            parent = os.stat(os.path.join(d, "pypy-names-%d" % os.getppid())).st_size
            new = os.open(os.path.join(d, "pypy-names-%d" % os.getpid()),
                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.write(new, b"PROFPARENT %d %d\n" % (os.getppid(), parent))
            os.dup2(new, fd, inheritable=False)
            os.close(new)
            _vmprof.enable(fd, 0.5, 0, 0, 0, 0)
            signal.setitimer(signal.ITIMER_PROF, 0)
            _vmprof.stop_sampling()
            # Forked children (multiprocessing's) end with os._exit, skipping atexit: flush
            # the names of code made in the child first.
            real_exit = os._exit

            def _exit(status):
                flush()
                real_exit(status)

            _exit.__doc__ = real_exit.__doc__
            os._exit = _exit
        except Exception:
            pass

    def flush():
        try:
            _vmprof.disable()
        except Exception:
            pass

    os.register_at_fork(after_in_child=child)
    atexit.register(flush)


try:
    _prof_boot()
except Exception:
    pass
del _prof_boot
"#;

/// Constructor of a process with libpypy loaded: writes the hook into `dir`, opens the
/// names file and points the environment at both. Only one thread exists here.
pub fn install_hook(dir: &str) {
    if std::env::var_os("PROF_PYPY_HOOK").is_some_and(|v| v == "0") {
        return;
    }
    let hook_dir = format!("{dir}/pypy-hook");
    let path = format!("{hook_dir}/sitecustomize.py");
    if std::fs::metadata(&path).is_err() {
        // Several processes may start at once: write aside, then rename into place.
        let _ = std::fs::create_dir_all(&hook_dir);
        // SAFETY: getpid cannot fail.
        let tmp = format!("{hook_dir}/.sitecustomize.{}", unsafe { libc::getpid() });
        if std::fs::write(&tmp, HOOK).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            crate::state::warn(
                "cannot write the PyPy start-up hook: Python frames will have no names",
            );
            return;
        }
    }
    // SAFETY: getpid cannot fail.
    let names = format!("{dir}/pypy-names-{}", unsafe { libc::getpid() });
    let Ok(c) = std::ffi::CString::new(names) else {
        return;
    };
    // SAFETY: a NUL-terminated path; O_CREAT with a mode.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return;
    }
    // A high number, out of the way of the program's own descriptors.
    let fd = crate::sys::move_fd_high(fd);
    let saved = match std::env::var_os("PYTHONPATH") {
        Some(v) => format!("={}", v.to_string_lossy()),
        None => "-".to_string(),
    };
    let path_value = match std::env::var_os("PYTHONPATH") {
        Some(v) if !v.is_empty() => format!("{hook_dir}:{}", v.to_string_lossy()),
        _ => hook_dir,
    };
    for (k, v) in [
        ("PROF_PYPY_PYTHONPATH", saved),
        ("PROF_PYPY_NAMES_FD", fd.to_string()),
        ("PYTHONPATH", path_value),
    ] {
        let (Ok(k), Ok(v)) = (std::ffi::CString::new(k), std::ffi::CString::new(v)) else {
            continue;
        };
        // SAFETY: NUL-terminated strings; the constructor runs before any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { libc::setenv(k.as_ptr(), v.as_ptr(), 1) };
    }
}

/// Code names read from PyPy's vmprof stream, and the PY_CODE records they became.
#[derive(Default)]
pub struct Names {
    file: Option<File>,
    path: String,
    dir: String,
    /// Bytes read but not yet parsed (a record cut by the read).
    buf: Vec<u8>,
    /// The stream's static header and HEADER record were consumed.
    header_done: bool,
    /// Parsing stopped at bytes it does not understand.
    broken: bool,
    /// vmprof id -> (name, first line, file).
    known: HashMap<u64, (String, u32, String)>,
    /// vmprof id -> PY_CODE id, for ids samples used.
    ids: HashMap<u64, u32>,
    /// Used ids whose name was not known yet.
    pending: HashSet<u64>,
    next: u32,
    /// Records to write.
    pub fresh: Vec<PyCode>,
    sources: Sources,
}

/// Qualified names from the source files: PyPy 3.9's code objects carry no `co_qualname`,
/// so `filter` of `class QuerySet` is named `QuerySet.filter` from the classes and
/// functions its `def` line is nested in, as CPython names it. Any doubt (no such file, no
/// `def NAME` at the code's first line) leaves the plain name.
#[derive(Default)]
struct Sources {
    files: HashMap<String, Option<Vec<String>>>,
    /// Cut file names already resolved.
    resolved: HashMap<String, String>,
}

/// `.py` files under `dir` (at most `depth` levels down) whose path starts with `prefix`.
fn collect_py(dir: &std::path::Path, prefix: &str, depth: u32, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let p = path.to_string_lossy().into_owned();
        // Only paths that agree with the prefix as far as both go.
        let n = p.len().min(prefix.len());
        if p.as_bytes()[..n] != prefix.as_bytes()[..n] || out.len() > 64 {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => collect_py(&path, prefix, depth - 1, out),
            Ok(t) if t.is_file() && p.len() >= prefix.len() && p.ends_with(".py") => out.push(p),
            _ => {}
        }
    }
}

impl Sources {
    /// PyPy cuts file names longer than 110 characters to 107 and `...`: find the file the
    /// prefix stands for — among the `.py` files whose path starts with it, the one that
    /// defines `name` at line `first` (for comprehensions and lambdas, whose line cannot be
    /// checked so, the only candidate). Unresolved names stay as PyPy wrote them.
    fn full_path(&mut self, file: &str, first: u32, name: &str) -> String {
        let Some(prefix) = file.strip_suffix("...") else {
            return file.to_string();
        };
        if let Some(p) = self.resolved.get(file) {
            return p.clone();
        }
        let (dir, _) = prefix.rsplit_once('/').unwrap_or((".", prefix));
        let mut candidates = Vec::new();
        collect_py(
            std::path::Path::new(if dir.is_empty() { "/" } else { dir }),
            prefix,
            3,
            &mut candidates,
        );
        let defines = |l: &Vec<String>| {
            first > 0
                && (first as usize - 1..l.len().min(first as usize + 40))
                    .any(|i| definer(&l[i]).is_some_and(|(_, n)| n == name))
        };
        // A comprehension or lambda at `first`: that line has its keyword.
        let keyword = match name {
            "<listcomp>" | "<genexpr>" | "<setcomp>" | "<dictcomp>" => Some(" for "),
            "<lambda>" => Some("lambda"),
            _ => None,
        };
        let found = if let Some(k) = keyword {
            let fits: Vec<&String> = candidates
                .iter()
                .filter(|c| {
                    self.lines(c)
                        .and_then(|l| l.get((first as usize).wrapping_sub(1)))
                        .is_some_and(|l| l.contains(k))
                })
                .collect();
            (fits.len() == 1).then(|| fits[0].clone())
        } else if name.starts_with('<') {
            (candidates.len() == 1).then(|| candidates[0].clone())
        } else {
            candidates
                .iter()
                .find(|c| self.lines(c).is_some_and(defines))
                .cloned()
        };
        match found {
            Some(p) => {
                // One file per cut name, as long as it is unambiguous.
                if candidates.len() == 1 {
                    self.resolved.insert(file.to_string(), p.clone());
                }
                p
            }
            None => file.to_string(),
        }
    }

    fn lines(&mut self, file: &str) -> Option<&Vec<String>> {
        self.files
            .entry(file.to_string())
            .or_insert_with(|| {
                let meta = std::fs::metadata(file).ok()?;
                if meta.len() > 4 << 20 {
                    return None;
                }
                let text = std::fs::read_to_string(file).ok()?;
                Some(text.lines().map(str::to_string).collect())
            })
            .as_ref()
    }

    fn qualname(&mut self, file: &str, first: u32, name: &str) -> String {
        if name.starts_with('<') || first == 0 {
            return name.to_string();
        }
        self.lines(file)
            .and_then(|l| nest(l, first as usize - 1, name))
            .unwrap_or_else(|| name.to_string())
    }
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// The definer of a line: (`def` | `class`, its name).
fn definer(l: &str) -> Option<(&'static str, &str)> {
    let t = l.trim_start();
    let t = t.strip_prefix("async ").map(str::trim_start).unwrap_or(t);
    for kw in ["def", "class"] {
        if let Some(r) = t.strip_prefix(kw).and_then(|r| r.strip_prefix(' ')) {
            let r = r.trim_start();
            let end = r
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            if end > 0 {
                return Some((kw, &r[..end]));
            }
        }
    }
    None
}

/// The qualified name of `name` defined at line index `first` (or a few lines below it:
/// a decorated function's first line is its first decorator's).
fn nest(lines: &[String], first: usize, name: &str) -> Option<String> {
    let at = (first..lines.len().min(first + 40))
        .find(|&i| definer(&lines[i]).is_some_and(|(_, n)| n == name))?;
    let mut level = indent(&lines[at]);
    let mut parts = vec![name.to_string()];
    for l in lines[..at].iter().rev() {
        if level == 0 {
            break;
        }
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || indent(l) >= level {
            continue;
        }
        level = indent(l);
        match definer(l) {
            Some(("class", n)) => parts.push(n.to_string()),
            Some((_, n)) => parts.push(format!("{n}.<locals>")),
            // A less indented line that defines nothing (if/for/with/try): look further out.
            None => {}
        }
    }
    parts.reverse();
    Some(parts.join("."))
}

impl Names {
    pub fn new(pid: i32, dir: &str) -> Names {
        Names {
            path: format!("{dir}/pypy-names-{pid}"),
            dir: dir.to_string(),
            next: FIRST_ID,
            ..Default::default()
        }
    }

    /// Reads what PyPy appended, and records names that used ids were waiting for.
    pub fn poll(&mut self) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = &mut self.file else { return };
        let mut chunk = Vec::new();
        if f.read_to_end(&mut chunk).is_err() || chunk.is_empty() {
            return;
        }
        self.buf.extend_from_slice(&chunk);
        if !self.header_done && !self.prefix_seen() {
            return;
        }
        self.parse();
        if !self.pending.is_empty() {
            let ready: Vec<u64> = self
                .pending
                .iter()
                .copied()
                .filter(|u| self.known.contains_key(u))
                .collect();
            for uid in ready {
                self.pending.remove(&uid);
                self.record(uid);
            }
        }
    }

    /// A forked child's file starts with `PROFPARENT <ppid> <bytes>\n`: the names of the
    /// parent's first `bytes` bytes (code made before the fork) hold in the child too,
    /// unless the child's own file names an id otherwise. False until the first line is
    /// whole.
    fn prefix_seen(&mut self) -> bool {
        const P: &[u8] = b"PROFPARENT ";
        if self.buf.len() < P.len() && P.starts_with(&self.buf) {
            return false;
        }
        if !self.buf.starts_with(P) {
            return true;
        }
        let Some(nl) = self.buf.iter().position(|&c| c == b'\n') else {
            return self.buf.len() > 64; // not ours after all: let the parser refuse it
        };
        let line = String::from_utf8_lossy(&self.buf[P.len()..nl]).into_owned();
        self.buf.drain(..=nl);
        let mut it = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        if let (Some(Some(ppid)), Some(Some(size))) = (it.next(), it.next()) {
            let mut parent = Names::new(ppid as i32, &self.dir);
            if let Ok(f) = File::open(&parent.path) {
                let mut b = Vec::new();
                if f.take(size).read_to_end(&mut b).is_ok() {
                    parent.buf = b;
                    if parent.prefix_seen() {
                        parent.parse();
                    }
                    for (k, v) in parent.known {
                        self.known.entry(k).or_insert(v);
                    }
                }
            }
        }
        true
    }

    /// At exit: ids never named get a placeholder so every PYPY node has its PY_CODE.
    pub fn finish(&mut self) {
        self.poll();
        for uid in std::mem::take(&mut self.pending) {
            self.record(uid);
        }
    }

    /// True when PyPy never wrote a name (the hook did not run: `-E`, `-I`, `-S`).
    pub fn silent(&self) -> bool {
        self.known.is_empty()
    }

    fn parse(&mut self) {
        let mut pos = 0;
        let b = &self.buf;
        let word = |p: usize| -> Option<u64> {
            b.get(p..p + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        };
        while !self.broken {
            if !self.header_done {
                // Five words, then marker 0x05, version (2), flags, name length, name.
                let Some(&len) = b.get(40 + 4) else { break };
                let end = 40 + 5 + len as usize;
                if b.len() < end {
                    break;
                }
                if b[40] != 0x05 || word(8) != Some(3) {
                    self.broken = true;
                    break;
                }
                pos = end;
                self.header_done = true;
                continue;
            }
            let Some(&marker) = b.get(pos) else { break };
            let used = match marker {
                // Code: id, then a word-length string.
                0x02 => match (word(pos + 1), word(pos + 9)) {
                    (Some(uid), Some(n)) if n <= 1 << 16 => {
                        let end = pos + 17 + n as usize;
                        match b.get(pos + 17..end) {
                            Some(s) => {
                                if let Some(entry) = parse_name(&String::from_utf8_lossy(s)) {
                                    self.known.insert(uid, entry);
                                }
                                Some(end - pos)
                            }
                            None => None,
                        }
                    }
                    (Some(_), Some(_)) => {
                        self.broken = true;
                        None
                    }
                    _ => None,
                },
                // Time and zone / trailer: two words and 8 bytes of zone.
                0x06 | 0x03 => (b.len() >= pos + 25).then_some(25),
                // Meta: two word-length strings.
                0x07 => word(pos + 1).and_then(|k| {
                    let v_at = pos + 9 + k as usize;
                    word(v_at).and_then(|v| {
                        let end = v_at + 8 + v as usize;
                        (k < 1 << 16 && v < 1 << 16 && b.len() >= end).then_some(end - pos)
                    })
                }),
                // Stack records only appear if vmprof's own timer fired: skip them.
                0x01 => word(pos + 9).and_then(|depth| {
                    let n = 1 + 16 + 8 * depth as usize + 8;
                    (depth < 1 << 16 && b.len() >= pos + n).then_some(n)
                }),
                _ => {
                    self.broken = true;
                    None
                }
            };
            match used {
                Some(n) => pos += n,
                None => break,
            }
        }
        self.buf.drain(..pos.min(self.buf.len()));
    }

    /// The PY_CODE id of vmprof id `uid` (recorded now if its name is known, else when it
    /// arrives).
    pub fn id(&mut self, uid: u64) -> u32 {
        if let Some(&id) = self.ids.get(&uid) {
            return id;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(FIRST_ID);
        self.ids.insert(uid, id);
        if self.known.contains_key(&uid) {
            self.record(uid);
        } else {
            self.pending.insert(uid);
        }
        id
    }

    fn record(&mut self, uid: u64) {
        let Some(&id) = self.ids.get(&uid) else {
            return;
        };
        let c = match self.known.get(&uid) {
            Some((name, line, file)) => {
                let file = self.sources.full_path(file, *line, name);
                PyCode {
                    id,
                    qualname: self.sources.qualname(&file, *line, name),
                    filename: file,
                    firstlineno: *line,
                    python_minor: 0,
                    linetable: Vec::new(),
                }
            }
            None => PyCode {
                id,
                qualname: "<unnamed PyPy code>".into(),
                filename: String::new(),
                firstlineno: 0,
                python_minor: 0,
                linetable: Vec::new(),
            },
        };
        self.fresh.push(c);
    }
}

/// `py:name:firstline:file` (the file may itself hold colons; PyPy replaced any in the name).
fn parse_name(s: &str) -> Option<(String, u32, String)> {
    let rest = s.strip_prefix("py:")?;
    let (name, rest) = rest.split_once(':')?;
    let (line, file) = rest.split_once(':')?;
    Some((
        name.to_string(),
        line.parse().unwrap_or(0),
        file.to_string(),
    ))
}

/// The sample's stack, root first: Python frames from PyPy's entries, then the native
/// leaf frames outside libpypy and JIT code. `in_module` tells addresses of loaded modules
/// (anything else executable is JIT code). Returns the sample's flags: with Python frames,
/// where the native unwinder stopped (JIT code has no unwind tables) does not matter.
pub fn merged_stack(
    d: &SampleData,
    pp: &Pypy,
    names: &mut Names,
    in_module: impl Fn(u64) -> bool,
    out: &mut Vec<(u32, u64)>,
) -> u32 {
    out.clear();
    let native = d.native();
    let entries = d.py_frames();
    let npy = entries.len();
    if !entries
        .iter()
        .any(|e| e.offset == KIND_CODE || e.offset == KIND_JITTED)
    {
        out.extend(native.iter().rev().map(|&a| (node_kind::NATIVE, a)));
        if d.syscall != NO_SYSCALL {
            out.push((node_kind::SYSCALL, d.syscall));
        }
        return d.flags;
    }
    let in_pypy = |a: u64| pp.text.iter().any(|&(s, e)| a >= s && a < e);
    // Native frames from the leaf up to the first one in libpypy or JIT code: C code the
    // Python frames called (a return address a is in its function at a - 1).
    let leaf_end = native
        .iter()
        .enumerate()
        .position(|(i, &a)| {
            let a = if i == 0 { a } else { a.wrapping_sub(1) };
            in_pypy(a) || !in_module(a)
        })
        .unwrap_or(native.len());
    let leaf_in_jit = leaf_end == 0
        && native
            .first()
            .is_some_and(|&a| !in_pypy(a) && !in_module(a));
    // Root first. A CODE entry right before (outside) a JITTED one is the function whose
    // loop the machine code runs: its frame is JIT time.
    let mut prev_code = false;
    for (k, e) in entries.iter().enumerate().rev() {
        match e.offset {
            KIND_CODE => {
                let inner_jit = k > 0 && entries[k - 1].offset == KIND_JITTED;
                let tier = if inner_jit {
                    tier_hint::JIT
                } else {
                    tier_hint::INTERPRETER
                };
                let id = names.id(e.code);
                out.push((node_kind::PYPY, ((id as u64) << 8) | tier as u64));
                prev_code = true;
            }
            KIND_JITTED => {
                // The innermost entry of a sample taken in machine code: the interrupted
                // pc; otherwise the return address of the machine code's last call.
                let (pc, leaf) = if k == 0 && leaf_in_jit {
                    (native[0], JIT_LEAF)
                } else {
                    (e.fingerprint, 0)
                };
                if pc != 0 && pc & (JIT_OF_PREVIOUS | JIT_LEAF) == 0 {
                    let of_prev = if prev_code { JIT_OF_PREVIOUS } else { 0 };
                    out.push((node_kind::PYPY_JIT, pc | leaf | of_prev));
                }
                prev_code = false;
            }
            _ => prev_code = false,
        }
    }
    out.extend(
        native[..leaf_end]
            .iter()
            .rev()
            .map(|&a| (node_kind::NATIVE, a)),
    );
    if d.syscall != NO_SYSCALL {
        out.push((node_kind::SYSCALL, d.syscall));
    }
    let mut f = d.flags & !(flags::UNWIND_STOPPED | flags::TRUNCATED);
    if npy >= d.py.len() {
        f |= flags::TRUNCATED;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_vmprof_stream() {
        let mut b = Vec::new();
        for w in [0u64, 3, 0, 500_000, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&[0x05, 0, 6, 8, 4]);
        b.extend_from_slice(b"pypy");
        b.push(0x06);
        b.extend_from_slice(&[0u8; 24]);
        for (k, v) in [("os", "linux"), ("bits", "64")] {
            b.push(0x07);
            b.extend_from_slice(&(k.len() as u64).to_le_bytes());
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        let name = b"py:handle:12:/srv/app/views.py";
        b.push(0x02);
        b.extend_from_slice(&40u64.to_le_bytes());
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        let mut n = Names::new(1, "/nonexistent");
        // Fed in two pieces cut inside a record, as a tail may read it.
        let cut = b.len() - 7;
        n.buf.extend_from_slice(&b[..cut]);
        n.parse();
        assert!(n.known.is_empty());
        n.buf.extend_from_slice(&b[cut..]);
        n.parse();
        assert!(!n.broken);
        assert_eq!(
            n.known[&40],
            ("handle".into(), 12, "/srv/app/views.py".into())
        );
        let id = n.id(40);
        assert_eq!(n.fresh.len(), 1);
        assert_eq!(n.fresh[0].id, id);
        assert_eq!(n.fresh[0].qualname, "handle");
        // An id named later is recorded when its name arrives.
        let id2 = n.id(44);
        assert_eq!(n.fresh.len(), 1);
        n.finish();
        assert_eq!(n.fresh.len(), 2);
        assert_eq!(n.fresh[1].id, id2);
    }

    #[test]
    fn qualified_names_from_the_source() {
        let src: Vec<String> = "import x\n\nclass QuerySet(Base):\n    \"\"\"doc\"\"\"\n\n    @property\n    def filter(self, *a):\n        def inner():\n            pass\n        return inner\n\n    async def get(self): pass\n\nif X:\n    def top(): pass\n"
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(nest(&src, 5, "filter").as_deref(), Some("QuerySet.filter"));
        assert_eq!(
            nest(&src, 7, "inner").as_deref(),
            Some("QuerySet.filter.<locals>.inner")
        );
        assert_eq!(nest(&src, 11, "get").as_deref(), Some("QuerySet.get"));
        assert_eq!(nest(&src, 14, "top").as_deref(), Some("top"));
        assert_eq!(nest(&src, 2, "QuerySet").as_deref(), Some("QuerySet"));
        // Not what the code object says is there: no guess.
        assert_eq!(nest(&src, 12, "filter"), None);
    }

    #[test]
    fn names_with_colons_in_the_file() {
        assert_eq!(
            parse_name("py:<module>:1:C:/x/y.py"),
            Some(("<module>".into(), 1, "C:/x/y.py".into()))
        );
        assert_eq!(parse_name("n:foo:0:-"), None);
    }
}

//! JIT code (issue 5): names for addresses in no module, from a process's JIT_CODE
//! records, and the runtime phases (JIT_PHASE) samples fall in.
//!
//! An address is looked up among the named entries (perf maps, PyPy's JIT log) first, then
//! among anonymous executable mappings. Among the entries of one kind that contain the
//! address, a node takes the last one recorded before the node was defined, else the
//! first one recorded after it (docs/FORMAT.md, JIT_CODE).
//!
//! Frames: perf map names are kept as the runtime wrote them, with a trailing
//! `file:line[:col]` moved into the frame's location (`JS:*fib /app.js:3:13` becomes
//! `JS:*fib` at /app.js:3): the tier rules read V8's markers from the name. Module
//! `[jit]`, except HotSpot methods, which are `[jit c1]` (profiled code heap: C1 with
//! profiling, a warm-up tier) or `[jit c2]` (non-profiled heap: C2, and C1's trivial
//! methods) where the heap segments can be told apart. PyPy loops are named after their
//! Python function (`kernel` at /app.py:4), bridges `[pypy bridge]`, anonymous code
//! `[anonymous code]`.

use prof_format::{JitCode, JitSource, Process};

use crate::symbolize::Frame;

/// Module name of JIT frames.
pub const JIT_MODULE: &str = "[jit]";

/// Entries of one kind, sorted by start, for "which entries contain this address".
#[derive(Debug, Default)]
struct Ranges {
    /// (start, end, index into Process::jit_code), sorted by start.
    items: Vec<(u64, u64, usize)>,
    /// Running maximum of `end` over `items[..=i]`.
    max_end: Vec<u64>,
}

impl Ranges {
    fn new(mut items: Vec<(u64, u64, usize)>) -> Ranges {
        items.sort_unstable();
        let mut m = 0;
        let max_end = items
            .iter()
            .map(|&(_, e, _)| {
                m = m.max(e);
                m
            })
            .collect();
        Ranges { items, max_end }
    }

    /// Indices (into jit_code) of the entries containing `addr`.
    fn containing(&self, addr: u64, out: &mut Vec<usize>) {
        out.clear();
        let mut i = self.items.partition_point(|&(s, _, _)| s <= addr);
        while i > 0 && self.max_end[i - 1] > addr {
            i -= 1;
            let (s, e, k) = self.items[i];
            if s <= addr && addr < e {
                out.push(k);
            }
        }
    }
}

/// A process's JIT entries and phases, ready for lookups.
#[derive(Debug, Default)]
pub(crate) struct JitIndex {
    named: Ranges,
    anon: Ranges,
    /// Frame of each jit_code entry, built on first use.
    frames: Vec<Option<Frame>>,
    /// HotSpot's code heap segments: methods below `.0` are profiled, above `.1`
    /// non-profiled (None: not HotSpot, or the segments cannot be told apart).
    hotspot: Option<(u64, u64)>,
    /// Phases sorted by start: (start_ns, end_ns, index into Process::jit_phases).
    phases: Vec<(u64, u64, usize)>,
}

impl JitIndex {
    pub fn new(p: &Process) -> JitIndex {
        let (mut named, mut anon) = (Vec::new(), Vec::new());
        for (i, c) in p.jit_code.iter().enumerate() {
            let Some(end) = c.start.checked_add(c.size).filter(|&e| e > c.start) else {
                continue;
            };
            match c.source {
                JitSource::AnonExec => anon.push((c.start, end, i)),
                JitSource::PerfMap | JitSource::PypyLog => named.push((c.start, end, i)),
            }
        }
        let mut phases: Vec<(u64, u64, usize)> = p
            .jit_phases
            .iter()
            .enumerate()
            .filter(|(_, ph)| ph.end_ns > ph.start_ns)
            .map(|(i, ph)| (ph.start_ns, ph.end_ns, i))
            .collect();
        phases.sort_unstable();
        JitIndex {
            named: Ranges::new(named),
            anon: Ranges::new(anon),
            frames: vec![None; p.jit_code.len()],
            hotspot: hotspot_segments(&p.jit_code),
            phases,
        }
    }

    /// The jit_code entry describing `addr` for the node `node` (see the module docs).
    pub fn resolve(&self, p: &Process, addr: u64, node: u32) -> Option<usize> {
        let mut hits = Vec::new();
        for ranges in [&self.named, &self.anon] {
            ranges.containing(addr, &mut hits);
            if hits.is_empty() {
                continue;
            }
            hits.sort_unstable();
            let before = hits
                .iter()
                .rev()
                .find(|&&k| p.jit_code[k].nodes_before < node);
            return Some(*before.unwrap_or(&hits[0]));
        }
        None
    }

    /// A perf-map name for `addr` in module `mi` whose file has no symbol for it. V8
    /// lists its builtins in the map (`Builtin:LoadIC`, `BytecodeHandler:Ldar`) at their
    /// addresses in the loaded image; the same bytes may run at another address, in an
    /// alias of the image (a module with the same file and build id, another bias).
    /// Named like the file's own symbols (`Builtins_LoadIC`, `Builtins_LdarHandler`), so
    /// that a stripped and an unstripped build of the runtime give the same frames.
    pub fn image_code(&mut self, p: &Process, mi: usize, addr: u64, node: u32) -> Option<Frame> {
        let m = &p.modules[mi];
        let svma = addr.wrapping_sub(m.bias);
        let mut hits = Vec::new();
        for other in p
            .modules
            .iter()
            .filter(|o| o.path == m.path && o.build_id == m.build_id)
        {
            let at = svma.wrapping_add(other.bias);
            if !other.ranges.iter().any(|&(s, e)| s <= at && at < e) {
                continue;
            }
            self.named.containing(at, &mut hits);
            hits.retain(|&k| p.jit_code[k].source == JitSource::PerfMap);
            hits.sort_unstable();
            let k = hits
                .iter()
                .rev()
                .find(|&&k| p.jit_code[k].nodes_before < node)
                .or(hits.first());
            if let Some(&k) = k {
                let name = builtin_symbol(&p.jit_code[k].name)?;
                return Some(Frame::bare(name, crate::symbolize::module_name(&m.path)));
            }
        }
        None
    }

    /// The frame of jit_code entry `k`.
    pub fn frame(&mut self, p: &Process, k: usize) -> Frame {
        if let Some(Some(f)) = self.frames.get(k) {
            return f.clone();
        }
        let f = make_frame(&p.jit_code[k], self.hotspot);
        if let Some(slot) = self.frames.get_mut(k) {
            *slot = Some(f.clone());
        }
        f
    }

    /// The phase (index into Process::jit_phases) a sample at `time_ns` fell in.
    pub fn phase_at(&self, time_ns: u64) -> Option<usize> {
        let i = self.phases.partition_point(|&(s, _, _)| s <= time_ns);
        // Phases can overlap only across kinds the agent nests; check a few back.
        self.phases[..i]
            .iter()
            .rev()
            .take(4)
            .find(|&&(s, e, _)| s <= time_ns && time_ns < e)
            .map(|&(_, _, k)| k)
    }

    pub fn has_phases(&self) -> bool {
        !self.phases.is_empty()
    }
}

/// HotSpot's segmented code cache (JDK 9+, the default with tiered compilation and a
/// code cache of 240 MB): profiled methods | non-methods (interpreter, stubs, adapters) |
/// non-profiled methods, from low to high addresses (OpenJDK 17 here,
/// `-XX:+PrintCodeCache`).
fn hotspot_segments(codes: &[JitCode]) -> Option<(u64, u64)> {
    let perf = || codes.iter().filter(|c| c.source == JitSource::PerfMap);
    if !perf().any(|c| c.name == "Interpreter") || !perf().any(|c| c.name == "I2C/C2I adapters") {
        return None;
    }
    let stubs = perf().filter(|c| !c.name.contains('('));
    let lo = stubs.clone().map(|c| c.start).min()?;
    let hi = stubs.map(|c| c.start.saturating_add(c.size)).max()?;
    Some((lo, hi))
}

fn make_frame(c: &JitCode, hotspot: Option<(u64, u64)>) -> Frame {
    match c.source {
        JitSource::AnonExec => Frame::bare("[anonymous code]", JIT_MODULE),
        JitSource::PypyLog => pypy_frame(&c.name),
        JitSource::PerfMap => {
            let module = match hotspot {
                Some((lo, hi)) if c.name.contains('(') => {
                    if c.start.saturating_add(c.size) <= lo {
                        "[jit c1]"
                    } else if c.start >= hi {
                        "[jit c2]"
                    } else {
                        JIT_MODULE
                    }
                }
                _ => JIT_MODULE,
            };
            let (name, file, line) = split_location(&c.name);
            let mut f = Frame::bare(name, module);
            f.file = file;
            f.line = line;
            f
        }
    }
}

/// V8's perf-map name of a builtin as the symbol the unstripped runtime has for it:
/// `Builtin:LoadIC` -> `Builtins_LoadIC`, `BytecodeHandler:Ldar.Wide` ->
/// `Builtins_LdarWideHandler`. Other names (JIT code cannot live in a file) -> None.
fn builtin_symbol(name: &str) -> Option<String> {
    if let Some(b) = name.strip_prefix("Builtin:") {
        return Some(format!("Builtins_{b}"));
    }
    let h = name.strip_prefix("BytecodeHandler:")?;
    let (op, scale) = h.split_once('.').unwrap_or((h, ""));
    Some(format!("Builtins_{op}{scale}Handler"))
}

/// `JS:*fib /app.js:3:13` -> (`JS:*fib`, /app.js, 3); `py::f:/x.py` -> unchanged (CPython
/// writes no line); names without a trailing `path:line` are returned whole.
/// V8 names a function without a name by its tier mark alone (`JS:~`, `JS:*`): say
/// `(anonymous)`, as browsers' profilers do, instead of showing a bare prefix.
fn anonymous_js(func: &str) -> String {
    match func.strip_prefix("JS:") {
        Some(rest) if rest.len() <= 1 && rest.chars().all(|c| "~^+*".contains(c)) => {
            format!("{func}(anonymous)")
        }
        _ => func.to_string(),
    }
}

fn split_location(name: &str) -> (String, Option<String>, Option<u32>) {
    if let Some((func, loc)) = name.rsplit_once(' ') {
        let mut parts = loc.rsplitn(3, ':');
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        // file:line:col or file:line
        let (file, line) = match (a, b, c) {
            (Some(col), Some(line), Some(file)) if col.parse::<u32>().is_ok() => {
                (file, line.parse::<u32>().ok())
            }
            (Some(line), Some(file), None) => (file, line.parse::<u32>().ok()),
            _ => ("", None),
        };
        if let Some(line) = line.filter(|_| !file.is_empty() && !func.is_empty()) {
            return (anonymous_js(func), Some(file.to_string()), Some(line));
        }
    }
    (name.to_string(), None, None)
}

/// `Loop 1 (kernel;/app.py:2-4~#12 FOR_ITER)` -> `kernel` at /app.py:4 (the loop's line);
/// bridges (no Python name in the log) -> `[pypy bridge]`.
fn pypy_frame(name: &str) -> Frame {
    let inner = name
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or("");
    if let Some((func, rest)) = inner.split_once(';') {
        let loc = rest.split('~').next().unwrap_or("");
        if let Some((file, lines)) = loc.rsplit_once(':') {
            let line = lines.rsplit('-').next().and_then(|l| l.parse().ok());
            let mut f = Frame::bare(func, JIT_MODULE);
            f.file = Some(file.to_string());
            f.line = line;
            return f;
        }
        return Frame::bare(func, JIT_MODULE);
    }
    if name.starts_with("bridge") {
        return Frame::bare("[pypy bridge]", JIT_MODULE);
    }
    Frame::bare(name, JIT_MODULE)
}

/// [issue 17] A `PYPY_JIT` node's value (docs/FORMAT.md).
#[derive(Debug, Clone, Copy)]
pub struct PypyJit {
    pub addr: u64,
    /// The address is the interrupted instruction (else a return address).
    pub leaf: bool,
    /// The code is the loop of the Python frame just before the node.
    pub of_previous: bool,
}

impl PypyJit {
    pub fn from_value(v: u64) -> PypyJit {
        PypyJit {
            addr: v & ((1 << 62) - 1),
            leaf: v & (1 << 62) != 0,
            of_previous: v & (1 << 63) != 0,
        }
    }

    /// The address to look up: a return address lies after its call.
    pub fn lookup_addr(&self) -> u64 {
        if self.leaf {
            self.addr
        } else {
            self.addr.wrapping_sub(1)
        }
    }
}

/// The Python frames of PyPy JIT code `c` at `v`: the loop's function (unless it is the
/// frame before, already shown) as a Python frame like the interpreter's; none when the
/// log names no function.
pub fn pypy_jit_frames(c: &JitCode, v: PypyJit) -> Vec<Frame> {
    if v.of_previous {
        return Vec::new();
    }
    // Code PyPy's log names no function for (`Loop -1 ()`: an entry it compiled for
    // `call_assembler`; a bridge whose jump was not seen) is JIT time of the frame
    // before it: no frame of its own, rather than a name that is no Python function's.
    pypy_function(&c.name).into_iter().collect()
}

/// `Loop 3 (f;/app.py:6-9~#12 FOR_ITER)` -> `f` at /app.py:6, module `app.py`, as the
/// interpreter's frames of `f` read.
fn pypy_function(name: &str) -> Option<Frame> {
    let inner = name.split_once('(')?.1.strip_suffix(')')?;
    let (func, rest) = inner.split_once(';')?;
    let loc = rest.split('~').next()?;
    let (file, lines) = loc.rsplit_once(':')?;
    let first = lines.split('-').next()?.parse().ok()?;
    let module = match file.rsplit('/').next() {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => crate::python::PYTHON_MODULE.to_string(),
    };
    let mut f = Frame::bare(func, module);
    f.file = Some(file.to_string());
    f.line = Some(first);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prof_format::{JitPhase, Mode, ProcessInfo, TimerSource};

    fn process(codes: Vec<JitCode>) -> Process {
        let mut w = prof_format::LogWriter::new(Vec::new());
        w.process(&ProcessInfo {
            pid: 1,
            ppid: 0,
            start_unix_ns: 0,
            period_ns: 1_000_000,
            mode: Mode::Cpu,
            timer: TimerSource::PerfEvent,
            time_unit_ns: 1,
            max_depth: 64,
            exe: String::new(),
            argv: vec![],
            agent_version: String::new(),
        });
        let mut p = prof_format::read_profile(&w.into_inner().unwrap())
            .unwrap()
            .processes
            .remove(0);
        p.jit_code = codes;
        p
    }

    fn code(start: u64, size: u64, name: &str, source: JitSource, nodes_before: u32) -> JitCode {
        JitCode {
            start,
            size,
            time_ns: 0,
            source,
            name: name.into(),
            nodes_before,
        }
    }

    #[test]
    fn replaced_code_resolves_by_node_order() {
        let p = process(vec![
            code(0x1000, 0x1000, "", JitSource::AnonExec, 0),
            code(0x1100, 0x80, "JS:~f /a.js:1:1", JitSource::PerfMap, 5),
            code(0x1100, 0x40, "JS:*f /a.js:1:1", JitSource::PerfMap, 20),
            code(0x1180, 0x10, "JS:^g /a.js:9:1", JitSource::PerfMap, 30),
        ]);
        let mut j = JitIndex::new(&p);
        // A node defined before any named entry: the first one recorded after it.
        assert_eq!(j.resolve(&p, 0x1110, 3), Some(1));
        assert_eq!(j.resolve(&p, 0x1110, 6), Some(1));
        assert_eq!(j.resolve(&p, 0x1110, 21), Some(2));
        // Past the replacement's shorter range: only the old entry contains it.
        assert_eq!(j.resolve(&p, 0x1150, 21), Some(1));
        // Named entries first, anonymous memory as the fallback.
        assert_eq!(j.resolve(&p, 0x1800, 1), Some(0));
        assert_eq!(j.resolve(&p, 0x3000, 1), None);
        let f = j.frame(&p, 2);
        assert_eq!(
            (
                f.name.as_str(),
                f.module.as_str(),
                f.file.as_deref(),
                f.line
            ),
            ("JS:*f", "[jit]", Some("/a.js"), Some(1))
        );
        assert_eq!(j.frame(&p, 0).name, "[anonymous code]");
    }

    #[test]
    fn builtins_of_a_stripped_image() {
        assert_eq!(
            builtin_symbol("Builtin:LoadIC").as_deref(),
            Some("Builtins_LoadIC")
        );
        assert_eq!(
            builtin_symbol("BytecodeHandler:Ldar").as_deref(),
            Some("Builtins_LdarHandler")
        );
        assert_eq!(
            builtin_symbol("BytecodeHandler:Ldar.ExtraWide").as_deref(),
            Some("Builtins_LdarExtraWideHandler")
        );
        assert_eq!(builtin_symbol("JS:*f /a.js:1:1"), None);
        let mut p = process(vec![
            code(0x1_0000, 0x100, "Builtin:LoadIC", JitSource::PerfMap, 0),
            code(0x1_0100, 0x20, "JS:*f", JitSource::PerfMap, 0),
        ]);
        let module = |id, bias, ranges| prof_format::Module {
            id,
            path: "/usr/lib/libnode.so.115".into(),
            build_id: vec![1, 2],
            bias,
            ranges,
        };
        // The image at bias 0x8000 (ELF address 0x8000 at 0x10000), and an alias of its
        // builtins at 0x7f00_0000 (bias 0x7f00_0000 - 0x8000).
        p.modules = vec![
            module(0, 0x8000, vec![(0x9000, 0x2_0000)]),
            module(1, 0x7eff_8000, vec![(0x7f00_0000, 0x7f00_1000)]),
        ];
        let mut j = JitIndex::new(&p);
        let f = j.image_code(&p, 0, 0x1_0010, 1).unwrap();
        assert_eq!(
            (f.name.as_str(), f.module.as_str()),
            ("Builtins_LoadIC", "libnode.so.115")
        );
        let f = j.image_code(&p, 1, 0x7f00_0010, 1).unwrap();
        assert_eq!(f.name, "Builtins_LoadIC");
        // Past the builtin: nothing (never the nearest entry), and JIT names never.
        assert_eq!(j.image_code(&p, 1, 0x7f00_0100, 1), None);
        assert_eq!(j.image_code(&p, 0, 0x2_0000, 1), None);
    }

    #[test]
    fn hotspot_heaps() {
        let p = process(vec![
            code(0x1000, 0x100, "int Hot.k(int)", JitSource::PerfMap, 0),
            code(0x5000, 0x1000, "Interpreter", JitSource::PerfMap, 0),
            code(0x6000, 0x100, "I2C/C2I adapters", JitSource::PerfMap, 0),
            code(0x9000, 0x100, "int Hot.k(int)", JitSource::PerfMap, 0),
        ]);
        let mut j = JitIndex::new(&p);
        assert_eq!(j.frame(&p, 0).module, "[jit c1]");
        assert_eq!(j.frame(&p, 3).module, "[jit c2]");
        assert_eq!(j.frame(&p, 1).module, "[jit]");
        assert_eq!(j.frame(&p, 0).name, "int Hot.k(int)");
    }

    #[test]
    fn names() {
        assert_eq!(
            split_location("JS:~hotKernel /tmp/js_jit.js:4:19"),
            (
                "JS:~hotKernel".into(),
                Some("/tmp/js_jit.js".into()),
                Some(4)
            )
        );
        assert_eq!(
            split_location("JS:~ node:internal/main/run_main_module:1:1"),
            (
                "JS:~(anonymous)".into(),
                Some("node:internal/main/run_main_module".into()),
                Some(1)
            )
        );
        assert_eq!(split_location("JS:* /app/a.js:3:13").0, "JS:*(anonymous)");
        assert_eq!(split_location("JS:~f /app/a.js:3:13").0, "JS:~f");
        assert_eq!(
            split_location("int Hot.hotKernel(int, int)"),
            ("int Hot.hotKernel(int, int)".into(), None, None)
        );
        assert_eq!(
            split_location("py::f:/x.py"),
            ("py::f:/x.py".into(), None, None)
        );
        let f = pypy_frame("Loop 1 (kernel;/t/loop.py:2-4~#12 FOR_ITER)");
        assert_eq!(
            (f.name.as_str(), f.file.as_deref(), f.line),
            ("kernel", Some("/t/loop.py"), Some(4))
        );
        assert_eq!(
            pypy_frame("bridge out of Guard 0x7f5805fca020").name,
            "[pypy bridge]"
        );
    }

    #[test]
    fn phases() {
        let mut p = process(vec![]);
        p.jit_phases = vec![
            JitPhase {
                start_ns: 100,
                end_ns: 200,
                name: "jit-tracing".into(),
            },
            JitPhase {
                start_ns: 300,
                end_ns: 310,
                name: "gc-minor".into(),
            },
        ];
        let j = JitIndex::new(&p);
        assert_eq!(j.phase_at(99), None);
        assert_eq!(j.phase_at(100), Some(0));
        assert_eq!(j.phase_at(199), Some(0));
        assert_eq!(j.phase_at(200), None);
        assert_eq!(j.phase_at(305), Some(1));
    }
}

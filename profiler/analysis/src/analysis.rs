//! A symbolized profile: every stack node's frames, computed once, and the samples
//! aggregated by leaf node so reports cost O(distinct stacks), not O(samples).

use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;

use prof_format::{flags, node_kind, Mode, Module, Process, Profile};

use crate::symbolize::{Frame, Symbolizer};
use crate::syscalls::syscall_name;
use crate::tiers::{Tier, TierCounts, TierRules};

/// Index into [`Analysis::frames`].
pub type FrameId = u32;

/// A range of [`Analysis`]'s frame-id arena: one node's frames, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };
}

/// Weight of one (thread, leaf node) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafWeight {
    pub tid: u32,
    /// Leaf node id (0: the sample had no stack or named a node that does not exist).
    pub leaf: u32,
    /// Sum of the samples' weights.
    pub weight: u64,
    /// Number of samples.
    pub samples: u64,
}

/// Per-process facts and aggregates.
#[derive(Debug, Clone)]
pub(crate) struct ProcData {
    pub pid: u32,
    pub ppid: u32,
    pub command: String,
    pub exe: String,
    pub mode: Mode,
    pub timer: &'static str,
    pub period_ns: u64,
    pub start_unix_ns: u64,
    /// Duration: PROCESS_END's, else the last sample's time.
    pub duration_ns: u64,
    pub ended: bool,
    pub cpu_ns: Option<u64>,
    pub lost: u64,
    pub samples: u64,
    pub weight: u64,
    pub truncated: u64,
    pub unwind_stopped: u64,
    /// Samples whose Python frames the agent could not match to evaluation frames.
    pub merge_mismatch: u64,
    pub off_cpu: u64,
    /// Weight of the off-CPU samples (wall mode), which no CPU time stands behind.
    pub off_cpu_weight: u64,
    /// Samples whose leaf named no node.
    pub bad_leaf: u64,
    pub notices: Vec<String>,
    /// tid -> latest name.
    pub thread_names: HashMap<u32, String>,
    /// Sanitized parents: always < the node's id, so walks terminate.
    parent: Vec<u32>,
    /// Frames of each node as a caller (return address), where needed.
    caller: Vec<Span>,
    /// Frames of each node as a sample's leaf (exact pc), for leaves.
    leaf: HashMap<u32, Span>,
    /// Sorted by (tid, leaf).
    pub leaves: Vec<LeafWeight>,
    /// Tier of each leaf's stack (from its frames).
    pub leaf_tier: HashMap<u32, Tier>,
    /// Threads whose name decides their samples' tier (compiler, GC threads).
    pub thread_tier: HashMap<u32, Tier>,
    /// The warmup curve: tier weights in buckets of `bucket_ns` of CPU time since the
    /// process started (wall time in wall mode).
    pub timeline: Vec<TierCounts>,
    pub bucket_ns: u64,
    /// [issue 5] Weight per tier of the samples a runtime phase classified, by (tid, leaf).
    pub phased: HashMap<(u32, u32), Vec<(Tier, u64)>>,
    /// [issue 5] The process's runtime phases, and the tier each gives (by phase index).
    pub phases: std::sync::Arc<crate::jit::JitIndex>,
    pub phase_tiers: Vec<Option<Tier>>,
    /// [issue 14] The process's request markers, placed on its timeline.
    pub markers: Vec<crate::markers::MarkerInfo>,
}

/// A symbolized profile. Built by [`analyze`]; reports are methods and [`crate::summary`].
#[derive(Debug, Clone)]
pub struct Analysis {
    frames: Vec<Frame>,
    /// Frames that are Python frames (by FrameId).
    is_python: Vec<bool>,
    native_internals: bool,
    /// Tier each frame's name/module gives by itself (None: no rule matches).
    frame_tier: Vec<Option<Tier>>,
    ids: Vec<FrameId>,
    pub(crate) procs: Vec<ProcData>,
    pub(crate) profile_truncated: bool,
    pub(crate) warnings: Vec<String>,
    /// [issue 14] Python functions' `def` lines, by (name, module).
    pub(crate) def_lines: HashMap<(String, String), u32>,
}

/// Options for [`Analysis::collapsed_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollapseOptions {
    /// Start every stack with a `command (pid N)` frame.
    pub process: bool,
    /// Then a `thread name (tid N)` frame.
    pub thread: bool,
}

/// Module ranges flattened into disjoint segments; where ranges overlap, the module loaded
/// last wins.
struct ModuleMap {
    /// (start, end, module index), sorted, disjoint.
    segs: Vec<(u64, u64, usize)>,
}

impl ModuleMap {
    fn new(modules: &[Module]) -> ModuleMap {
        let mut ivs: Vec<(u64, u64, usize)> = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            for &(s, e) in &m.ranges {
                if s < e {
                    ivs.push((s, e, i));
                }
            }
        }
        ivs.sort_unstable();
        let mut points: Vec<u64> = ivs.iter().flat_map(|&(s, e, _)| [s, e]).collect();
        points.sort_unstable();
        points.dedup();
        let mut segs: Vec<(u64, u64, usize)> = Vec::new();
        // Max-heap of (load order, end) over intervals started so far; expired ones are
        // dropped lazily when they reach the top.
        let mut heap: BinaryHeap<(usize, u64)> = BinaryHeap::new();
        let mut next = 0;
        for w in points.windows(2) {
            let (a, b) = (w[0], w[1]);
            while next < ivs.len() && ivs[next].0 <= a {
                heap.push((ivs[next].2, ivs[next].1));
                next += 1;
            }
            while heap.peek().is_some_and(|&(_, end)| end <= a) {
                heap.pop();
            }
            if let Some(&(m, _)) = heap.peek() {
                match segs.last_mut() {
                    Some(last) if last.1 == a && last.2 == m => last.1 = b,
                    _ => segs.push((a, b, m)),
                }
            }
        }
        ModuleMap { segs }
    }

    fn lookup(&self, addr: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.0 <= addr);
        let &(_, end, m) = self.segs.get(i.checked_sub(1)?)?;
        (addr < end).then_some(m)
    }
}

struct Builder<'s> {
    /// Ids of frames made for Python nodes.
    python_frames: Vec<FrameId>,
    sym: &'s mut Symbolizer,
    frames: Vec<Frame>,
    frame_index: HashMap<Frame, FrameId>,
    ids: Vec<FrameId>,
    warnings: Vec<String>,
    /// [issue 5] The current process's JIT code, for addresses in no module.
    jit: crate::jit::JitIndex,
    /// [issue 14] Python functions' `def` lines, by (name, module).
    def_lines: HashMap<(String, String), u32>,
}

impl Builder<'_> {
    fn intern(&mut self, f: &Frame) -> FrameId {
        if let Some(&id) = self.frame_index.get(f) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(f.clone());
        self.frame_index.insert(f.clone(), id);
        id
    }

    fn note_def_line(&mut self, f: &Frame, code: Option<&prof_format::PyCode>) {
        if let Some(c) = code.filter(|c| c.firstlineno > 0) {
            // Two functions of one name in one file (PyPy's `<listcomp>`s have no
            // qualified names): no def line is theirs (0), the hot line is shown instead.
            let e = self
                .def_lines
                .entry((f.name.clone(), f.module.clone()))
                .or_insert(c.firstlineno);
            if *e != c.firstlineno {
                *e = 0;
            }
        }
    }

    fn push_frames(&mut self, frames: &[Frame]) -> Span {
        let start = self.ids.len() as u32;
        for f in frames {
            let id = self.intern(f);
            self.ids.push(id);
        }
        Span {
            start,
            len: self.ids.len() as u32 - start,
        }
    }

    fn node_span(
        &mut self,
        id: usize,
        ret: bool,
        p: &Process,
        map: &ModuleMap,
        used: &mut [bool],
        cache: &mut HashMap<(u32, u64, bool), Span>,
    ) -> Span {
        let node = p.nodes[id];
        let ret = ret && node.kind == node_kind::NATIVE;
        // [issue 5] Code in no module: JIT code, resolved per node (crate::jit).
        let jit = (node.kind == node_kind::NATIVE && map.lookup(node.value).is_none())
            .then(|| {
                // A return address at a piece of code's first byte (pushed, not left by a
                // call): the address itself, when the byte before it is in no code.
                self.jit
                    .resolve(p, node.value.wrapping_sub(ret as u64), id as u32)
                    .or_else(|| ret.then(|| self.jit.resolve(p, node.value, id as u32))?)
            })
            .flatten();
        let key = match jit {
            Some(k) => (u32::MAX, k as u64, false),
            None => (node.kind, node.value, ret),
        };
        if let Some(&s) = cache.get(&key) {
            return s;
        }
        let frames: Vec<Frame> = match node.kind {
            node_kind::NATIVE => match map.lookup(node.value) {
                // The agent's thread-start trampoline sits under every thread's frames:
                // profiler plumbing, not the program's code.
                Some(mi) if ret && is_agent(&p.modules[mi].path) => Vec::new(),
                Some(mi) => {
                    used[mi] = true;
                    let frames = self.sym.symbolize(&p.modules[mi], node.value, ret);
                    match &frames[..] {
                        // A stripped file: the runtime's perf map may name the code
                        // (V8's builtins in Debian's libnode).
                        [f] if crate::symbolize::is_offset_frame(f) => self
                            .jit
                            .image_code(p, mi, node.value.wrapping_sub(ret as u64), id as u32)
                            .or_else(|| {
                                ret.then(|| self.jit.image_code(p, mi, node.value, id as u32))?
                            })
                            .map_or_else(|| frames.to_vec(), |f| vec![f]),
                        _ => frames.to_vec(),
                    }
                }
                None => match jit {
                    Some(k) => vec![self.jit.frame(p, k)],
                    None => vec![Frame::bare(format!("{:#x}", node.value), "[unknown]")],
                },
            },
            node_kind::PYTHON => {
                let code = p.py_code.iter().find(|c| c.id as u64 == node.value >> 32);
                let f = crate::python::frame(code, node.value as u32);
                self.note_def_line(&f, code);
                vec![f]
            }
            node_kind::SYSCALL => {
                let name = match syscall_name(node.value) {
                    Some(n) => format!("[syscall {n}]"),
                    None if node.value == prof_format::UNKNOWN_SYSCALL => "[kernel]".into(),
                    None => format!("[syscall {}]", node.value),
                };
                vec![Frame::bare(name, "[kernel]")]
            }
            node_kind::FRAME => vec![crate::import::sym_frame(p, node.value)],
            // [issue 17] PyPy: a Python frame, and JIT-compiled code named by PyPy's log.
            node_kind::PYPY => {
                let code = p.py_code.iter().find(|c| c.id as u64 == node.value >> 8);
                let f = crate::python::frame(code, 0);
                self.note_def_line(&f, code);
                vec![f]
            }
            node_kind::PYPY_JIT => {
                let v = crate::jit::PypyJit::from_value(node.value);
                match self.jit.resolve(p, v.lookup_addr(), id as u32) {
                    Some(k) => crate::jit::pypy_jit_frames(&p.jit_code[k], v),
                    None => Vec::new(),
                }
            }
            k => vec![Frame::bare(format!("[unknown frame kind {k}]"), "")],
        };
        let span = self.push_frames(&frames);
        if matches!(
            node.kind,
            node_kind::PYTHON | node_kind::PYPY | node_kind::PYPY_JIT
        ) {
            let ids = &self.ids[span.start as usize..(span.start + span.len) as usize];
            self.python_frames.extend_from_slice(ids);
        }
        cache.insert(key, span);
        span
    }

    fn process(&mut self, p: &Process) -> ProcData {
        let n = p.nodes.len();
        let parent: Vec<u32> = p
            .nodes
            .iter()
            .enumerate()
            .map(|(i, nd)| {
                if (nd.parent as usize) < i {
                    nd.parent
                } else {
                    0
                }
            })
            .collect();

        let mut d = ProcData {
            pid: p.info.pid,
            ppid: p.info.ppid,
            command: if p.info.argv.is_empty() {
                p.info.exe.clone()
            } else {
                p.info.argv.join(" ")
            },
            exe: p.info.exe.clone(),
            mode: p.info.mode,
            timer: p.info.timer.name(),
            period_ns: p.info.period_ns,
            start_unix_ns: p.info.start_unix_ns,
            duration_ns: 0,
            ended: p.end.is_some(),
            cpu_ns: p.end.map(|e| e.cpu_user_ns.saturating_add(e.cpu_system_ns)),
            lost: p.lost,
            samples: 0,
            weight: 0,
            truncated: 0,
            unwind_stopped: 0,
            merge_mismatch: 0,
            off_cpu: 0,
            off_cpu_weight: 0,
            bad_leaf: 0,
            notices: p.notices.iter().map(|n| n.text.clone()).collect(),
            thread_names: p.threads.iter().cloned().collect(),
            parent,
            caller: vec![Span::NONE; n],
            leaf: HashMap::new(),
            leaves: Vec::new(),
            leaf_tier: HashMap::new(),
            thread_tier: HashMap::new(),
            timeline: Vec::new(),
            bucket_ns: 0,
            phased: HashMap::new(),
            phases: Default::default(),
            phase_tiers: Vec::new(),
            markers: Vec::new(),
        };

        let mut agg: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
        let mut last_time = 0u64;
        for s in &p.samples {
            let leaf = if (s.leaf as usize) < n {
                s.leaf
            } else {
                d.bad_leaf += 1;
                0
            };
            let w = s.weight as u64;
            d.samples += 1;
            d.weight += w;
            if s.flags & flags::TRUNCATED != 0 {
                d.truncated += 1;
            }
            if s.flags & flags::UNWIND_STOPPED != 0 {
                d.unwind_stopped += 1;
            }
            if s.flags & flags::MERGE_MISMATCH != 0 {
                d.merge_mismatch += 1;
            }
            if s.flags & flags::OFF_CPU != 0 {
                d.off_cpu += 1;
                d.off_cpu_weight += w;
            }
            last_time = last_time.max(s.time_ns);
            let e = agg.entry((s.tid, leaf)).or_default();
            e.0 += w;
            e.1 += 1;
        }
        d.duration_ns = match p.end {
            Some(e) => e.duration_ns,
            None => last_time,
        };
        d.leaves = agg
            .into_iter()
            .map(|((tid, leaf), (weight, samples))| LeafWeight {
                tid,
                leaf,
                weight,
                samples,
            })
            .collect();
        d.leaves.sort_unstable_by_key(|l| (l.tid, l.leaf));

        // Which nodes are needed in which role.
        let mut need_caller = vec![false; n];
        let mut leaves: Vec<u32> = d
            .leaves
            .iter()
            .map(|l| l.leaf)
            .filter(|&l| l != 0)
            .collect();
        leaves.sort_unstable();
        leaves.dedup();
        for &leaf in &leaves {
            let mut id = d.parent[leaf as usize];
            while id != 0 && !need_caller[id as usize] {
                need_caller[id as usize] = true;
                id = d.parent[id as usize];
            }
        }

        let map = ModuleMap::new(&p.modules);
        self.jit = crate::jit::JitIndex::new(p); // [issue 5]
        let mut used = vec![false; p.modules.len()];
        let mut cache = HashMap::new();
        for (id, &needed) in need_caller.iter().enumerate() {
            if needed {
                d.caller[id] = self.node_span(id, true, p, &map, &mut used, &mut cache);
            }
        }
        for &leaf in &leaves {
            let span = self.node_span(leaf as usize, false, p, &map, &mut used, &mut cache);
            d.leaf.insert(leaf, span);
        }

        for (m, _) in p.modules.iter().zip(&used).filter(|(_, &u)| u) {
            // Pseudo modules ("[vdso]", "", JIT names) are not files: nothing to warn about.
            if !m.path.starts_with('/') {
                continue;
            }
            if let Some(e) = self.sym.load_error(&m.path, &m.build_id) {
                let w = e.to_string();
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
        }
        d
    }
}

/// Symbolizes every stack the profile's samples use (each distinct address once, each
/// node once) and aggregates the samples by leaf. Never fails: bad node ids, garbage
/// module ranges and unreadable files yield placeholder frames, not errors.
pub fn analyze(profile: &Profile, sym: &mut Symbolizer) -> Analysis {
    static BUILTIN: std::sync::OnceLock<TierRules> = std::sync::OnceLock::new();
    analyze_with(profile, sym, BUILTIN.get_or_init(TierRules::builtin))
}

/// [`analyze`] with explicit tier rules (e.g. the built-ins plus a user file).
pub fn analyze_with(profile: &Profile, sym: &mut Symbolizer, rules: &TierRules) -> Analysis {
    let mut b = Builder {
        python_frames: Vec::new(),
        sym,
        frames: Vec::new(),
        frame_index: HashMap::new(),
        ids: Vec::new(),
        warnings: Vec::new(),
        jit: Default::default(),
        def_lines: HashMap::new(),
    };
    let procs = profile.processes.iter().map(|p| b.process(p)).collect();
    let frame_tier = b.frames.iter().map(|f| rules.frame_tier(f)).collect();
    let mut is_python = vec![false; b.frames.len()];
    for &id in &b.python_frames {
        is_python[id as usize] = true;
    }
    let mut a = Analysis {
        is_python,
        native_internals: false,
        frames: b.frames,
        frame_tier,
        ids: b.ids,
        procs,
        profile_truncated: profile.truncated,
        warnings: b.warnings,
        def_lines: b.def_lines,
    };
    for (pi, p) in profile.processes.iter().enumerate() {
        a.classify(pi, p, rules);
    }
    a
}

/// Finest timeline resolution kept, and the most buckets kept per process.
const MIN_BUCKET_NS: u64 = 10_000_000;
const MAX_BUCKETS: u64 = 4000;

impl Analysis {
    /// Tiers of every leaf and thread of process `pi`, and its timeline.
    fn classify(&mut self, pi: usize, p: &Process, rules: &TierRules) {
        let mut ids = Vec::new();
        let mut leaf_tier = HashMap::new();
        // Imported profiles may carry tiers on their frames (PyPy's JIT tags).
        let hinted = crate::import::has_tier_hints(p);
        for lw in &self.procs[pi].leaves {
            if leaf_tier.contains_key(&lw.leaf) {
                continue;
            }
            let t = if hinted {
                self.hinted_leaf_tier(pi, p, lw.leaf)
            } else {
                self.stack_into(pi, lw.leaf, &mut ids);
                ids.iter()
                    .rev()
                    .find_map(|&id| self.frame_tier[id as usize])
            };
            leaf_tier.insert(lw.leaf, t.unwrap_or(Tier::Native));
        }
        let thread_tier: HashMap<u32, Tier> = self.procs[pi]
            .thread_names
            .iter()
            .filter_map(|(&tid, name)| rules.thread_tier(name).map(|t| (tid, t)))
            .collect();
        // x axis: cumulative CPU time (weight x period, in time order) in cpu mode.
        let d = &self.procs[pi];
        let period = d.period_ns.max(1);
        let wall = d.mode == Mode::Wall;
        let mut order: Vec<usize> = (0..p.samples.len()).collect();
        order.sort_by_key(|&i| p.samples[i].time_ns);
        let span = if wall {
            d.duration_ns
        } else {
            d.weight.saturating_mul(period)
        };
        let bucket_ns = MIN_BUCKET_NS.max(span / MAX_BUCKETS + 1);
        let mut timeline: Vec<TierCounts> = Vec::new();
        let mut cpu = 0u64;
        // [issue 5] Runtime phases (PyPy: tracing, GC) decide the tier of the samples in
        // them, after thread rules and before frames.
        let jit = crate::jit::JitIndex::new(p);
        let phase_tier: Vec<Option<Tier>> = p
            .jit_phases
            .iter()
            .map(|ph| rules.phase_tier(&ph.name))
            .collect();
        let mut phased: HashMap<(u32, u32), Vec<(Tier, u64)>> = HashMap::new();
        // [issue 14] (sample time, CPU used so far), to place markers on the x axis.
        let mut cum: Vec<(u64, u64)> = Vec::new();
        let has_markers = !p.marker_events.is_empty();
        for i in order {
            let s = &p.samples[i];
            let leaf = if (s.leaf as usize) < p.nodes.len() {
                s.leaf
            } else {
                0
            };
            let in_phase = (jit.has_phases() && !thread_tier.contains_key(&s.tid))
                .then(|| jit.phase_at(s.time_ns).and_then(|k| phase_tier[k]))
                .flatten();
            if let Some(t) = in_phase {
                let v = phased.entry((s.tid, leaf)).or_default();
                match v.iter_mut().find(|(x, _)| *x == t) {
                    Some((_, w)) => *w += s.weight as u64,
                    None => v.push((t, s.weight as u64)),
                }
            }
            let t = thread_tier
                .get(&s.tid)
                .copied()
                .or(in_phase)
                .or_else(|| leaf_tier.get(&leaf).copied())
                .unwrap_or(Tier::Native);
            let x = if wall { s.time_ns } else { cpu };
            cpu = cpu.saturating_add((s.weight as u64).saturating_mul(period));
            if has_markers {
                cum.push((s.time_ns, cpu));
            }
            let b = (x / bucket_ns) as usize;
            if b >= timeline.len() {
                timeline.resize(b + 1, TierCounts::default());
            }
            timeline[b].add(t, s.weight as u64);
        }
        let d = &mut self.procs[pi];
        d.leaf_tier = leaf_tier;
        d.thread_tier = thread_tier;
        d.timeline = timeline;
        d.bucket_ns = bucket_ns;
        d.phased = phased;
        d.phases = std::sync::Arc::new(jit);
        d.phase_tiers = phase_tier;
        if has_markers {
            d.markers = crate::markers::place(p.markers(), &cum, wall);
        }
    }

    /// The tier of a stack whose nodes may carry tiers (FRAME nodes of imported profiles):
    /// from the leaf outwards, a node's own tier decides, else the rules on its frames
    /// (innermost first). None when nothing decides.
    fn hinted_leaf_tier(&self, pi: usize, p: &Process, leaf: u32) -> Option<Tier> {
        let d = self.procs.get(pi)?;
        let mut node = leaf;
        let mut is_leaf = true;
        while node != 0 {
            let n = p.nodes.get(node as usize)?;
            if n.kind == node_kind::FRAME {
                if let Some(t) = crate::import::frame_hint(p, n.value) {
                    return Some(t);
                }
            }
            // [issue 17] PyPy frames carry their tier; JIT code is JIT time. Native frames
            // after the innermost of them (the agent keeps only those outside libpypy and
            // JIT code) are C code the Python frame called: native, unless a rule said
            // otherwise on the way here.
            if n.kind == node_kind::PYPY || n.kind == node_kind::PYPY_JIT {
                if !is_leaf
                    && p.nodes
                        .get(leaf as usize)
                        .is_some_and(|l| l.kind == node_kind::NATIVE)
                {
                    return Some(Tier::Native);
                }
                if n.kind == node_kind::PYPY_JIT {
                    return Some(Tier::Jit);
                }
                if let Some(t) = crate::import::hint_tier((n.value & 0xff) as u32) {
                    return Some(t);
                }
            }
            let span = if is_leaf {
                d.leaf.get(&node).copied()
            } else {
                d.caller.get(node as usize).copied()
            };
            let ids = self.span(span.unwrap_or(Span::NONE));
            if let Some(t) = ids
                .iter()
                .rev()
                .find_map(|&id| self.frame_tier[id as usize])
            {
                return Some(t);
            }
            is_leaf = false;
            node = d.parent.get(node as usize).copied().unwrap_or(0);
        }
        None
    }

    /// [`sample_tier`](Self::sample_tier) for a sample taken `time_ns` after its process
    /// started: runtime phases (PyPy's tracing and GC, from JIT_PHASE records) come after
    /// thread rules and before frames.
    pub fn sample_tier_at(&self, process: usize, tid: u32, leaf: u32, time_ns: u64) -> Tier {
        let Some(p) = self.procs.get(process) else {
            return Tier::Native;
        };
        if !p.thread_tier.contains_key(&tid) {
            if let Some(t) = p
                .phases
                .phase_at(time_ns)
                .and_then(|k| p.phase_tiers.get(k).copied().flatten())
            {
                return t;
            }
        }
        self.sample_tier(process, tid, leaf)
    }

    /// How the weight of `lw` splits into tiers: runtime phases can give some of one
    /// (thread, leaf)'s samples another tier than the rest.
    pub fn leaf_tiers(&self, process: usize, lw: &LeafWeight) -> Vec<(Tier, u64)> {
        let base = self.sample_tier(process, lw.tid, lw.leaf);
        let Some(split) = self
            .procs
            .get(process)
            .and_then(|p| p.phased.get(&(lw.tid, lw.leaf)))
        else {
            return vec![(base, lw.weight)];
        };
        let phased: u64 = split.iter().map(|&(_, w)| w).sum();
        let mut out = split.clone();
        if lw.weight > phased {
            out.push((base, lw.weight - phased));
        }
        out
    }

    /// The tier of a sample of process `process`, thread `tid`, with leaf node `leaf`.
    pub fn sample_tier(&self, process: usize, tid: u32, leaf: u32) -> Tier {
        let Some(p) = self.procs.get(process) else {
            return Tier::Native;
        };
        p.thread_tier
            .get(&tid)
            .or_else(|| p.leaf_tier.get(&leaf))
            .copied()
            .unwrap_or(Tier::Native)
    }

    /// The tier a frame gives by its own name or module (None: no rule matches it).
    pub fn frame_tier(&self, id: FrameId) -> Option<Tier> {
        self.frame_tier.get(id as usize).copied().flatten()
    }

    /// The warmup curve of process `process`: tier weights per bucket of at least
    /// `bucket_s` seconds of CPU time since the process started (wall time in wall mode).
    /// Returns (actual bucket seconds, buckets).
    pub fn timeline(&self, process: usize, bucket_s: Option<f64>) -> (f64, Vec<TierCounts>) {
        let Some(p) = self.procs.get(process) else {
            return (0.0, Vec::new());
        };
        merge_buckets(&p.timeline, p.bucket_ns, bucket_s)
    }
}

/// Coarsens fine buckets to about `bucket_s` (default: about 50 buckets in all).
pub(crate) fn merge_buckets(
    fine: &[TierCounts],
    fine_ns: u64,
    bucket_s: Option<f64>,
) -> (f64, Vec<TierCounts>) {
    let fine_ns = fine_ns.max(1);
    let want_ns = match bucket_s {
        Some(s) if s > 0.0 => (s * 1e9) as u64,
        _ => ((fine.len() as u64).saturating_mul(fine_ns) / 50).max(fine_ns),
    };
    let k = (want_ns / fine_ns).max(1) as usize;
    let out = fine
        .chunks(k)
        .map(|c| {
            let mut t = TierCounts::default();
            for b in c {
                t.merge(b);
            }
            t
        })
        .collect();
    ((k as u64).saturating_mul(fine_ns) as f64 / 1e9, out)
}

fn is_agent(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|f| f.starts_with("libprof_agent"))
}

/// Shown for samples with no stack at all.
pub const NO_STACK: &str = "[no stack]";

impl Analysis {
    /// Every distinct frame, by [`FrameId`].
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// [issue 14] Process `process`'s request markers, placed on its timeline.
    pub fn markers(&self, process: usize) -> &[crate::markers::MarkerInfo] {
        self.procs.get(process).map_or(&[], |p| &p.markers)
    }

    /// Number of processes (same order as `Profile::processes`).
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Problems met while symbolizing (e.g. a module's file was rebuilt since recording).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Sample weights of process `process` aggregated by (thread, leaf node).
    pub fn leaf_weights(&self, process: usize) -> &[LeafWeight] {
        self.procs
            .get(process)
            .map(|p| &p.leaves[..])
            .unwrap_or(&[])
    }

    fn span(&self, s: Span) -> &[FrameId] {
        if s == Span::NONE {
            return &[];
        }
        self.ids
            .get(s.start as usize..(s.start + s.len) as usize)
            .unwrap_or(&[])
    }

    /// The frames of one node (outermost first; more than one when code was inlined),
    /// as a caller (`as_leaf == false`: its value is a return address) or as a sample's
    /// leaf. Empty when the node was not used in that role by any sample.
    pub fn node_frames(&self, process: usize, node: u32, as_leaf: bool) -> &[FrameId] {
        let Some(p) = self.procs.get(process) else {
            return &[];
        };
        let span = if as_leaf {
            p.leaf.get(&node).copied()
        } else {
            p.caller.get(node as usize).copied()
        };
        self.span(span.unwrap_or(Span::NONE))
    }

    /// The symbolized stack of a sample whose leaf is `leaf`, root first, inlined frames
    /// expanded. Empty for leaf 0 or a node no sample of this process used as its leaf.
    pub fn stack_ids(&self, process: usize, leaf: u32) -> Vec<FrameId> {
        let mut out = Vec::new();
        self.stack_into(process, leaf, &mut out);
        out
    }

    /// [`stack_ids`](Self::stack_ids) resolved to frames.
    pub fn stack(&self, process: usize, leaf: u32) -> Vec<&Frame> {
        self.stack_ids(process, leaf)
            .into_iter()
            .map(|id| self.frame(id))
            .collect()
    }

    pub(crate) fn stack_into(&self, process: usize, leaf: u32, out: &mut Vec<FrameId>) {
        out.clear();
        let Some(p) = self.procs.get(process) else {
            return;
        };
        let Some(&leaf_span) = p.leaf.get(&leaf) else {
            return;
        };
        // Collect leaf-to-root, then reverse each node's span order back.
        let mut nodes = Vec::new();
        let mut id = p.parent.get(leaf as usize).copied().unwrap_or(0);
        while id != 0 {
            nodes.push(id);
            id = p.parent[id as usize];
        }
        let spans = nodes
            .iter()
            .rev()
            .map(|&n| self.span(p.caller[n as usize]))
            .chain(std::iter::once(self.span(leaf_span)));
        self.splice_python(spans, out);
        if !self.native_internals {
            self.hide_interpreter_internals(out);
        }
    }

    /// Concatenates the node spans of a stack (root first). The agent puts a C-level
    /// evaluation's Python frames right after the native evaluation frame that ran them;
    /// that frame's address symbolizes as `_PyEval_EvalFrameDefault` plus the helpers the
    /// compiler inlined into it at that point (3.11's `do_call_core` under
    /// `CALL_FUNCTION_EX`, `_PyEvalFrameClearAndPop`, `Py_DECREF`...). Those helpers ran
    /// on behalf of the innermost Python frame of the group, so they go after the group,
    /// not between the evaluation frame and its outermost Python frame (there they split
    /// every Python chain at its root: docs/ARCHITECTURE.md). They are part of the
    /// replaced evaluation frame, so they are shown only with `native_internals`.
    fn splice_python<'a>(
        &self,
        spans: impl Iterator<Item = &'a [FrameId]>,
        out: &mut Vec<FrameId>,
    ) {
        let is_py = |s: &[FrameId]| s.first().is_some_and(|&id| self.is_python[id as usize]);
        let mut spans = spans.peekable();
        let mut held: &[FrameId] = &[];
        while let Some(s) = spans.next() {
            if !is_py(s) && !held.is_empty() {
                out.extend_from_slice(held);
                held = &[];
            }
            let eval_with_inlines = s.len() > 1
                && crate::python::is_eval_frame(self.frame(s[0]))
                && spans.peek().is_some_and(|n| is_py(n));
            if eval_with_inlines {
                out.push(s[0]);
                if self.native_internals {
                    held = &s[1..];
                }
            } else {
                out.extend_from_slice(s);
            }
        }
        out.extend_from_slice(held);
    }

    /// Show (true) or hide (false, the default) the interpreter's own C frames between
    /// Python frames, and the evaluation-loop frames the Python frames replace.
    pub fn set_native_internals(&mut self, show: bool) {
        self.native_internals = show;
    }

    fn hide_interpreter_internals(&self, ids: &mut Vec<FrameId>) {
        let is_py = |id: &FrameId| self.is_python[*id as usize];
        let (Some(first), Some(last)) = (ids.iter().position(is_py), ids.iter().rposition(is_py))
        else {
            return;
        };
        // The interpreter's module(s): wherever its evaluation loop lives.
        let interp: Vec<&str> = ids
            .iter()
            .map(|&id| self.frame(id))
            .filter(|f| crate::python::is_eval_frame(f))
            .map(|f| f.module.as_str())
            .collect();
        let mut k = 0;
        let keep: Vec<bool> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let f = self.frame(id);
                if is_py(&id) {
                    return true;
                }
                if crate::python::is_eval_frame(f) || crate::python::is_perf_trampoline(f) {
                    // Replaced by the Python frames that follow it.
                    return !ids[i + 1..].iter().any(is_py);
                }
                !(i > first && i < last && interp.contains(&f.module.as_str()))
            })
            .collect();
        ids.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }

    /// Folded stacks (`main;work;inl 42`), root first, weights summed over every process
    /// and thread, one line per distinct symbolized stack, lines sorted. The input format
    /// of inferno / flamegraph.pl.
    pub fn collapsed(&self) -> String {
        self.collapsed_with(&CollapseOptions::default())
    }

    /// [`collapsed`](Self::collapsed), optionally with process and thread root frames.
    pub fn collapsed_with(&self, opts: &CollapseOptions) -> String {
        let mut folded: HashMap<String, u64> = HashMap::new();
        let mut ids = Vec::new();
        let mut line = String::new();
        for (pi, p) in self.procs.iter().enumerate() {
            for lw in &p.leaves {
                line.clear();
                if opts.process {
                    push_folded(&mut line, &format!("{} (pid {})", p.command, p.pid));
                }
                if opts.thread {
                    let name = p
                        .thread_names
                        .get(&lw.tid)
                        .map(String::as_str)
                        .unwrap_or("");
                    push_folded(&mut line, &format!("{name} (tid {})", lw.tid));
                }
                self.stack_into(pi, lw.leaf, &mut ids);
                if ids.is_empty() {
                    push_folded(&mut line, NO_STACK);
                }
                for &id in &ids {
                    push_folded(&mut line, &self.frames[id as usize].name);
                }
                match folded.get_mut(line.as_str()) {
                    Some(w) => *w += lw.weight,
                    None => {
                        folded.insert(line.clone(), lw.weight);
                    }
                }
            }
        }
        let mut lines: Vec<(String, u64)> = folded.into_iter().collect();
        lines.sort_unstable();
        let mut out = String::new();
        for (stack, w) in lines {
            let _ = writeln!(out, "{stack} {w}");
        }
        out
    }
}

/// Appends a frame name to a folded line: `;` separates frames and a newline ends the
/// line, so neither may appear inside a name.
fn push_folded(line: &mut String, name: &str) {
    if !line.is_empty() {
        line.push(';');
    }
    line.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(id: u32, ranges: Vec<(u64, u64)>) -> Module {
        Module {
            id,
            path: format!("/m{id}"),
            build_id: vec![],
            bias: 0,
            ranges,
        }
    }

    #[test]
    fn module_map_prefers_latest_and_handles_garbage() {
        let mods = vec![
            module(
                1,
                vec![
                    (0x1000, 0x2000),
                    (0x5000, 0x4000), /* garbage: end < start */
                ],
            ),
            module(2, vec![(0x1800, 0x1900)]),
            module(3, vec![(0x3000, 0x3000), (u64::MAX - 1, u64::MAX)]),
            module(4, vec![(0x1000, 0x1100)]),
        ];
        let m = ModuleMap::new(&mods);
        assert_eq!(m.lookup(0xfff), None);
        assert_eq!(m.lookup(0x1000), Some(3));
        assert_eq!(m.lookup(0x10ff), Some(3));
        assert_eq!(m.lookup(0x1100), Some(0));
        assert_eq!(m.lookup(0x1800), Some(1));
        assert_eq!(m.lookup(0x18ff), Some(1));
        assert_eq!(m.lookup(0x1900), Some(0));
        assert_eq!(m.lookup(0x1fff), Some(0));
        assert_eq!(m.lookup(0x2000), None);
        assert_eq!(m.lookup(0x3000), None);
        assert_eq!(m.lookup(0x4500), None);
        assert_eq!(m.lookup(u64::MAX - 1), Some(2));
        assert_eq!(m.lookup(u64::MAX), None);
    }
}

//! Filtered call trees, timelines and function tables over a symbolized profile.
//!
//! [`ProfileIndex`] is built once per profile (O(samples + stack frames)) from a
//! [`Profile`] and its [`Analysis`]; every query after that costs O(matching samples +
//! tree nodes), so a server can answer many views of one profile quickly:
//!
//! - [`ProfileIndex::tree`]: the call tree (functions merged by name and module),
//!   optionally inverted or focused on a function, with per-node self/total weights and
//!   tier counts, and a node budget that folds the lightest subtrees into `[other]` nodes;
//! - [`ProfileIndex::timeline`]: tier weights in time buckets (the warmup curve);
//! - [`ProfileIndex::functions`]: self/total weight and tier split per function.
//!
//! Every query takes a [`Filter`]: process, thread, tiers, a time range on the timeline's
//! axis, and a focus function.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use prof_format::{Mode, Profile};
use serde::Serialize;

use crate::analysis::{Analysis, NO_STACK};
use crate::tiers::Tier;

/// Number of tiers; tier arrays are indexed in [`Tier::ALL`] order.
pub const TIERS: usize = Tier::ALL.len();

/// Weights per tier, in [`Tier::ALL`] order.
pub type TierArray = [u64; TIERS];

/// Position of a tier in [`Tier::ALL`] (and in every [`TierArray`]).
pub fn tier_index(t: Tier) -> usize {
    Tier::ALL.iter().position(|&x| x == t).unwrap_or(0)
}

/// The tier of one sample. Every per-sample tier in this module comes from here.
fn sample_tier(analysis: &Analysis, process: usize, tid: u32, leaf: u32, time_ns: u64) -> Tier {
    analysis.sample_tier_at(process, tid, leaf, time_ns)
}

/// A function: symbolized frames merged by (name, module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    pub name: String,
    pub module: String,
    /// Source location of the first frame seen in this function (not necessarily its
    /// first line).
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The x axis of timelines and time ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// CPU time: each sample advances the clock by its weight times its process's
    /// sampling period, in the order the samples were taken (the selected process's own
    /// CPU time when one process is selected, else all processes').
    Cpu,
    /// Wall-clock time since the earliest process of the profile started.
    Wall,
}

impl Axis {
    pub fn name(self) -> &'static str {
        match self {
            Axis::Cpu => "cpu",
            Axis::Wall => "wall",
        }
    }

    pub fn from_name(s: &str) -> Option<Axis> {
        match s {
            "cpu" => Some(Axis::Cpu),
            "wall" => Some(Axis::Wall),
            _ => None,
        }
    }
}

/// Which samples a query looks at. `Default` selects every sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only the process with this pid.
    pub process: Option<u32>,
    /// Only this thread (tid).
    pub thread: Option<u32>,
    /// Only samples of these tiers (None: all).
    pub tiers: Option<Vec<Tier>>,
    /// Only samples at or after this many seconds on `axis`.
    pub from_s: Option<f64>,
    /// Only samples before this many seconds on `axis`.
    pub to_s: Option<f64>,
    /// The axis of `from_s`/`to_s` and of timelines (None: cpu for cpu-mode profiles,
    /// wall for wall-mode ones).
    pub axis: Option<Axis>,
    /// Only samples whose stack contains a function of this name (any module); trees are
    /// re-rooted at its outermost occurrence.
    pub focus: Option<String>,
}

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no process with pid {0} in this profile")]
    NoProcess(u32),
    #[error("no thread with tid {0} in the selected process(es)")]
    NoThread(u32),
    #[error("no function named {0:?} in this profile")]
    NoFunction(String),
    #[error("bad time range: {0}")]
    BadRange(String),
}

/// Options of [`ProfileIndex::tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeOptions {
    /// Callers instead of callees: every stack read from its leaf outwards (with a
    /// focus: from the focused function outwards, i.e. its callers).
    pub invert: bool,
    /// Most nodes returned (at least 2); lighter subtrees are folded into `[other]` nodes.
    pub max_nodes: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            invert: false,
            max_nodes: 5000,
        }
    }
}

/// Name of the root node's function.
pub const ROOT_NAME: &str = "all";
/// Name of the function of nodes that stand for folded subtrees.
pub const OTHER_NAME: &str = "[other]";

/// A call tree in compact columns, nodes in depth-first preorder (a node's parent comes
/// before it; siblings heaviest first, the `[other]` node of a parent last).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallTree {
    /// Weight of the selected samples (the root's total).
    pub total: u64,
    /// Weight of the selected samples with a frame matching the search predicate (0
    /// when there was none).
    pub matched: u64,
    /// Functions the nodes name: `functions[0]` is the root (`all`), and an `[other]`
    /// entry (module `[folded]`) is present when nodes were folded.
    pub functions: Vec<Function>,
    /// Per node: index of the parent node (-1 for the root, node 0).
    pub parent: Vec<i64>,
    /// Per node: index into `functions`.
    pub func: Vec<u32>,
    /// Per node: weight of samples whose stack ends here.
    #[serde(rename = "self")]
    pub self_: Vec<u64>,
    /// Per node: weight of samples through here.
    pub total_weight: Vec<u64>,
    /// Per node, [`TIERS`] numbers each: `total_weight` split by tier ([`Tier::ALL`] order).
    pub tiers: Vec<u64>,
    /// Nodes of the full tree left out (folded into `[other]` nodes).
    pub folded_nodes: u64,
}

/// Tier weights over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub axis: Axis,
    /// Start of the first bucket, seconds on the axis.
    pub start_s: f64,
    /// Width of each bucket, seconds.
    pub bucket_s: f64,
    /// End of the axis (the selected range's end, else the last sample's end).
    pub end_s: f64,
    /// Per bucket, [`TIERS`] weights ([`Tier::ALL`] order): `counts[b * TIERS + t]`.
    pub counts: Vec<u64>,
    /// Number of buckets.
    pub buckets: usize,
}

/// One row of [`ProfileIndex::functions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    pub function: Function,
    /// Weight where it is the innermost frame.
    pub self_: u64,
    /// Weight where it is anywhere on the stack (once per sample).
    pub total: u64,
    pub self_tiers: TierArray,
    pub total_tiers: TierArray,
}

/// A process of the profile, as a query sees it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    /// Indices of this process's samples in time order.
    samples: Vec<u32>,
    /// Thread ids that have samples.
    tids: Vec<u32>,
}

/// Weights of one (stack, thread, tier).
#[derive(Debug, Clone, Copy)]
struct Group {
    stack: u32,
    tid: u32,
    tier: u8,
    weight: u64,
}

/// A tree of functions: node 0 is the root, every node's parent has a smaller id.
#[derive(Debug, Clone, Default)]
struct Trie {
    parent: Vec<u32>,
    func: Vec<u32>,
    index: HashMap<(u32, u32), u32>,
}

impl Trie {
    fn new() -> Trie {
        Trie {
            parent: vec![u32::MAX],
            func: vec![u32::MAX],
            index: HashMap::new(),
        }
    }

    fn insert<I: IntoIterator<Item = u32>>(&mut self, path: I) -> u32 {
        let mut node = 0u32;
        for f in path {
            node = match self.index.get(&(node, f)) {
                Some(&n) => n,
                None => {
                    let n = self.parent.len() as u32;
                    self.parent.push(node);
                    self.func.push(f);
                    self.index.insert((node, f), n);
                    n
                }
            };
        }
        node
    }

    fn len(&self) -> usize {
        self.parent.len()
    }
}

/// A tree's static layout: children lists and preorder numbering, so that a subtree is
/// a contiguous range of preorder positions.
#[derive(Debug, Clone, Default)]
struct Shape {
    /// Children of node `v`: `children[first[v]..first[v + 1]]`.
    first: Vec<u32>,
    children: Vec<u32>,
    /// Preorder position of each node, and the size of its subtree.
    pre: Vec<u32>,
    size: Vec<u32>,
}

impl Shape {
    fn new(t: &Trie) -> Shape {
        let n = t.len();
        let mut first = vec![0u32; n + 1];
        for &p in t.parent.iter().skip(1) {
            first[p as usize + 1] += 1;
        }
        for i in 1..=n {
            first[i] += first[i - 1];
        }
        let mut fill = first.clone();
        let mut children = vec![0u32; n.saturating_sub(1)];
        for (i, &p) in t.parent.iter().enumerate().skip(1) {
            children[fill[p as usize] as usize] = i as u32;
            fill[p as usize] += 1;
        }
        // Subtree sizes: children have larger ids than their parents.
        let mut size = vec![1u32; n];
        for i in (1..n).rev() {
            let p = t.parent[i] as usize;
            size[p] += size[i];
        }
        // Preorder: a node's first child comes right after it, each next child after the
        // previous child's subtree.
        let mut pre = vec![0u32; n];
        for v in 0..n {
            let mut next = pre[v] + 1;
            for &c in &children[first[v] as usize..first[v + 1] as usize] {
                pre[c as usize] = next;
                next += size[c as usize];
            }
        }
        Shape {
            first,
            children,
            pre,
            size,
        }
    }

    fn children(&self, v: u32) -> &[u32] {
        &self.children[self.first[v as usize] as usize..self.first[v as usize + 1] as usize]
    }
}

/// Tier weights of a tree's end nodes as prefix sums in preorder: any subtree's weights
/// are one difference.
struct Sums {
    /// Preorder positions of the ends, sorted.
    pos: Vec<u32>,
    /// `cum[i]`: weights of the first `i` ends.
    cum: Vec<TierArray>,
}

impl Sums {
    fn new(shape: &Shape, ends: &[(u32, u32)], weights: &[TierArray]) -> Sums {
        let mut order: Vec<(u32, u32)> = ends
            .iter()
            .map(|&(node, s)| (shape.pre[node as usize], s))
            .collect();
        order.sort_unstable();
        let mut cum = Vec::with_capacity(order.len() + 1);
        let mut acc = [0u64; TIERS];
        cum.push(acc);
        for &(_, s) in &order {
            for (a, w) in acc.iter_mut().zip(&weights[s as usize]) {
                *a += w;
            }
            cum.push(acc);
        }
        Sums {
            pos: order.into_iter().map(|(p, _)| p).collect(),
            cum,
        }
    }

    /// Weights of the ends with preorder positions in [lo, hi).
    fn range(&self, lo: u32, hi: u32) -> TierArray {
        let a = self.pos.partition_point(|&p| p < lo);
        let b = self.pos.partition_point(|&p| p < hi);
        let mut t = self.cum[b];
        for (x, y) in t.iter_mut().zip(&self.cum[a]) {
            *x -= y;
        }
        t
    }

    fn total(&self, shape: &Shape, v: u32) -> TierArray {
        let lo = shape.pre[v as usize];
        self.range(lo, lo + shape.size[v as usize])
    }

    fn self_tiers(&self, shape: &Shape, v: u32) -> TierArray {
        let lo = shape.pre[v as usize];
        self.range(lo, lo + 1)
    }
}

/// FxHash (rustc's hasher): fast for small integer keys, which is all it is used for here.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// A profile prepared for queries. See the module docs.
#[derive(Debug, Clone)]
pub struct ProfileIndex {
    functions: Vec<Function>,
    /// Function ids by name.
    by_name: HashMap<String, Vec<u32>>,
    /// Per stack: its process index, and its functions root first
    /// (`stack_funcs[stack_start[s]..stack_start[s + 1]]`).
    stack_proc: Vec<u32>,
    stack_start: Vec<u32>,
    stack_funcs: Vec<u32>,
    /// Per stack: its leaf node in `full`.
    stack_node: Vec<u32>,
    full: Trie,
    full_shape: Shape,
    /// Samples in wall-clock order, in columns.
    s_wall: Vec<u64>,
    s_cpu_all: Vec<u64>,
    s_cpu_proc: Vec<u64>,
    s_stack: Vec<u32>,
    s_tid: Vec<u32>,
    s_weight: Vec<u32>,
    s_tier: Vec<u8>,
    groups: Vec<Group>,
    procs: Vec<Proc>,
    /// Ends of the axes (the last sample's time, plus its period on the cpu axis).
    end_wall: u64,
    end_cpu_all: u64,
    end_cpu_proc: Vec<u64>,
    default_axis: Axis,
    start_unix_ns: u64,
}

/// Per-stack tier weights of a filtered selection.
struct Selection {
    weights: Vec<TierArray>,
}

impl ProfileIndex {
    /// Indexes `profile`, whose analysis is `analysis` (from [`crate::analyze`]).
    pub fn new(profile: &Profile, analysis: &Analysis) -> ProfileIndex {
        let mut functions: Vec<Function> = Vec::new();
        let mut func_ids: HashMap<(String, String), u32> = HashMap::new();
        let mut intern = |functions: &mut Vec<Function>, f: Function| -> u32 {
            let key = (f.name.clone(), f.module.clone());
            *func_ids.entry(key).or_insert_with(|| {
                functions.push(f);
                functions.len() as u32 - 1
            })
        };
        let frame_func: Vec<u32> = analysis
            .frames()
            .iter()
            .map(|fr| {
                intern(
                    &mut functions,
                    Function {
                        name: fr.name.clone(),
                        module: fr.module.clone(),
                        file: fr.file.clone(),
                        line: fr.line,
                    },
                )
            })
            .collect();
        let mut no_stack: Option<u32> = None;

        let mut stack_proc = Vec::new();
        let mut stack_start = vec![0u32];
        let mut stack_funcs: Vec<u32> = Vec::new();
        let mut stack_node = Vec::new();
        let mut full = Trie::new();

        let start_unix_ns = profile
            .processes
            .iter()
            .map(|p| p.info.start_unix_ns)
            .min()
            .unwrap_or(0);

        // (wall time, process, sample index) for every sample.
        struct Raw {
            wall: u64,
            proc: u32,
            stack: u32,
            tid: u32,
            weight: u32,
            tier: u8,
        }
        let mut raw: Vec<Raw> = Vec::new();
        let mut procs = Vec::new();
        let mut group_index: FxMap<(u32, u32, u8), usize> = FxMap::default();
        let mut groups: Vec<Group> = Vec::new();
        let mut frames = Vec::new();
        for (pi, p) in profile.processes.iter().enumerate() {
            let offset = p.info.start_unix_ns.saturating_sub(start_unix_ns);
            let mut tids: Vec<u32> = Vec::new();
            // Stack id of each leaf node of this process (u32::MAX: not seen yet).
            let mut stack_ids: Vec<u32> = vec![u32::MAX; p.nodes.len().max(1)];
            for s in &p.samples {
                let leaf = if (s.leaf as usize) < p.nodes.len() {
                    s.leaf
                } else {
                    0
                };
                let stack = match stack_ids[leaf as usize] {
                    id if id != u32::MAX => id,
                    _ => {
                        let id = stack_proc.len() as u32;
                        frames.clear();
                        frames.extend(
                            analysis
                                .stack_ids(pi, leaf)
                                .into_iter()
                                .map(|f| frame_func[f as usize]),
                        );
                        if frames.is_empty() {
                            let f = *no_stack.get_or_insert_with(|| {
                                intern(
                                    &mut functions,
                                    Function {
                                        name: NO_STACK.to_string(),
                                        module: String::new(),
                                        file: None,
                                        line: None,
                                    },
                                )
                            });
                            frames.push(f);
                        }
                        stack_funcs.extend_from_slice(&frames);
                        stack_start.push(stack_funcs.len() as u32);
                        stack_proc.push(pi as u32);
                        stack_node.push(full.insert(frames.iter().copied()));
                        stack_ids[leaf as usize] = id;
                        id
                    }
                };
                let tier = tier_index(sample_tier(analysis, pi, s.tid, leaf, s.time_ns)) as u8;
                if !tids.contains(&s.tid) {
                    tids.push(s.tid);
                }
                let g = *group_index.entry((stack, s.tid, tier)).or_insert_with(|| {
                    groups.push(Group {
                        stack,
                        tid: s.tid,
                        tier,
                        weight: 0,
                    });
                    groups.len() - 1
                });
                groups[g].weight += s.weight as u64;
                raw.push(Raw {
                    wall: offset.saturating_add(s.time_ns),
                    proc: pi as u32,
                    stack,
                    tid: s.tid,
                    weight: s.weight,
                    tier,
                });
            }
            tids.sort_unstable();
            procs.push(Proc {
                pid: p.info.pid,
                samples: Vec::new(),
                tids,
            });
        }
        // Wall-clock order. The samples of one SAMPLES record are sorted already, so a
        // stable sort of compact keys mostly merges runs.
        let mut order: Vec<(u64, u32)> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.wall, i as u32))
            .collect();
        order.sort_by_key(|&(w, _)| w);

        let period: Vec<u64> = profile
            .processes
            .iter()
            .map(|p| p.info.period_ns.max(1))
            .collect();
        let n = raw.len();
        let mut idx = ProfileIndex {
            functions,
            by_name: HashMap::new(),
            stack_proc,
            stack_start,
            stack_funcs,
            stack_node,
            full_shape: Shape::new(&full),
            full,
            s_wall: Vec::with_capacity(n),
            s_cpu_all: Vec::with_capacity(n),
            s_cpu_proc: Vec::with_capacity(n),
            s_stack: Vec::with_capacity(n),
            s_tid: Vec::with_capacity(n),
            s_weight: Vec::with_capacity(n),
            s_tier: Vec::with_capacity(n),
            groups,
            procs,
            end_wall: 0,
            end_cpu_all: 0,
            end_cpu_proc: vec![0; profile.processes.len()],
            default_axis: match profile.processes.first().map(|p| p.info.mode) {
                Some(Mode::Wall) => Axis::Wall,
                _ => Axis::Cpu,
            },
            start_unix_ns,
        };
        let mut cpu_all = 0u64;
        for (i, &(_, ri)) in order.iter().enumerate() {
            let r = &raw[ri as usize];
            let pi = r.proc as usize;
            let dt = (r.weight as u64).saturating_mul(period[pi]);
            idx.s_wall.push(r.wall);
            idx.s_cpu_all.push(cpu_all);
            idx.s_cpu_proc.push(idx.end_cpu_proc[pi]);
            idx.s_stack.push(r.stack);
            idx.s_tid.push(r.tid);
            idx.s_weight.push(r.weight);
            idx.s_tier.push(r.tier);
            idx.procs[pi].samples.push(i as u32);
            cpu_all = cpu_all.saturating_add(dt);
            idx.end_cpu_proc[pi] = idx.end_cpu_proc[pi].saturating_add(dt);
            idx.end_wall = idx.end_wall.max(r.wall.saturating_add(1));
        }
        idx.end_cpu_all = cpu_all;
        for (i, f) in idx.functions.iter().enumerate() {
            idx.by_name
                .entry(f.name.clone())
                .or_default()
                .push(i as u32);
        }
        idx
    }

    /// Every function of the profile.
    pub fn functions_table(&self) -> &[Function] {
        &self.functions
    }

    /// The axis used when a filter names none.
    pub fn default_axis(&self) -> Axis {
        self.default_axis
    }

    /// Wall-clock start of the profile (the earliest process start), ns since the epoch.
    pub fn start_unix_ns(&self) -> u64 {
        self.start_unix_ns
    }

    /// Number of distinct (process, stack) pairs.
    pub fn stack_count(&self) -> usize {
        self.stack_proc.len()
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.s_stack.len()
    }

    /// Number of nodes of the unfiltered, unfolded call tree (the root included).
    pub fn full_tree_nodes(&self) -> usize {
        self.full.len()
    }

    /// Total weight per tier of every sample.
    pub fn tier_totals(&self) -> TierArray {
        let mut t = [0u64; TIERS];
        for g in &self.groups {
            t[g.tier as usize] += g.weight;
        }
        t
    }

    fn stack(&self, s: u32) -> &[u32] {
        let a = self.stack_start[s as usize] as usize;
        let b = self.stack_start[s as usize + 1] as usize;
        &self.stack_funcs[a..b]
    }

    fn process_index(&self, f: &Filter) -> Result<Option<usize>, QueryError> {
        let Some(pid) = f.process else {
            return Ok(None);
        };
        match self.procs.iter().position(|p| p.pid == pid) {
            Some(i) => Ok(Some(i)),
            None => Err(QueryError::NoProcess(pid)),
        }
    }

    /// Range on the axis in ns, validated.
    fn range_ns(&self, f: &Filter) -> Result<Option<(u64, u64)>, QueryError> {
        if f.from_s.is_none() && f.to_s.is_none() {
            return Ok(None);
        }
        let conv = |s: f64, what: &str| -> Result<u64, QueryError> {
            if !s.is_finite() || s < 0.0 {
                return Err(QueryError::BadRange(format!(
                    "{what} must be a number of seconds >= 0"
                )));
            }
            Ok((s * 1e9).min(u64::MAX as f64) as u64)
        };
        let from = f.from_s.map(|s| conv(s, "from")).transpose()?.unwrap_or(0);
        let to = f
            .to_s
            .map(|s| conv(s, "to"))
            .transpose()?
            .unwrap_or(u64::MAX);
        if to < from {
            return Err(QueryError::BadRange("to is before from".into()));
        }
        Ok(Some((from, to)))
    }

    fn tier_mask(f: &Filter) -> [bool; TIERS] {
        match &f.tiers {
            None => [true; TIERS],
            Some(ts) => {
                let mut m = [false; TIERS];
                for &t in ts {
                    m[tier_index(t)] = true;
                }
                m
            }
        }
    }

    /// Functions named `focus`, as a mask over all functions.
    fn focus_mask(&self, f: &Filter) -> Result<Option<Vec<bool>>, QueryError> {
        let Some(name) = &f.focus else {
            return Ok(None);
        };
        let ids = self
            .by_name
            .get(name)
            .ok_or_else(|| QueryError::NoFunction(name.clone()))?;
        let mut m = vec![false; self.functions.len()];
        for &i in ids {
            m[i as usize] = true;
        }
        Ok(Some(m))
    }

    /// Axis value of sample `i` (the selected process's own CPU clock when `proc` is set).
    fn x(&self, axis: Axis, proc: Option<usize>, i: usize) -> u64 {
        match (axis, proc) {
            (Axis::Wall, _) => self.s_wall[i],
            (Axis::Cpu, Some(_)) => self.s_cpu_proc[i],
            (Axis::Cpu, None) => self.s_cpu_all[i],
        }
    }

    fn axis_end(&self, axis: Axis, proc: Option<usize>) -> u64 {
        match (axis, proc) {
            (Axis::Wall, _) => self.end_wall,
            (Axis::Cpu, Some(p)) => self.end_cpu_proc[p],
            (Axis::Cpu, None) => self.end_cpu_all,
        }
    }

    /// Indices of the samples of the selection whose axis value is in [from, to).
    fn sample_range(&self, axis: Axis, proc: Option<usize>, from: u64, to: u64) -> SampleIter<'_> {
        match proc {
            Some(p) => {
                let list = &self.procs[p].samples;
                let a = list.partition_point(|&i| self.x(axis, proc, i as usize) < from);
                let b = list.partition_point(|&i| self.x(axis, proc, i as usize) < to);
                SampleIter::Slice(list[a..b.max(a)].iter())
            }
            None => {
                let n = self.s_stack.len();
                let key = |i: usize| self.x(axis, None, i);
                let a = partition(n, |i| key(i) < from);
                let b = partition(n, |i| key(i) < to);
                SampleIter::Range(a..b.max(a))
            }
        }
    }

    /// Per-stack tier weights of the samples `f` selects (focus not applied).
    fn select(&self, f: &Filter) -> Result<Selection, QueryError> {
        let proc = self.process_index(f)?;
        if let Some(tid) = f.thread {
            let known = match proc {
                Some(p) => self.procs[p].tids.contains(&tid),
                None => self.procs.iter().any(|p| p.tids.contains(&tid)),
            };
            if !known {
                return Err(QueryError::NoThread(tid));
            }
        }
        let mask = Self::tier_mask(f);
        let axis = f.axis.unwrap_or(self.default_axis);
        let mut weights = vec![[0u64; TIERS]; self.stack_proc.len()];
        let keep = |stack: u32, tid: u32, tier: u8| {
            mask[tier as usize]
                && proc.is_none_or(|p| self.stack_proc[stack as usize] as usize == p)
                && f.thread.is_none_or(|t| t == tid)
        };
        match self.range_ns(f)? {
            None => {
                for g in &self.groups {
                    if keep(g.stack, g.tid, g.tier) {
                        weights[g.stack as usize][g.tier as usize] += g.weight;
                    }
                }
            }
            Some((from, to)) => {
                for i in self.sample_range(axis, proc, from, to) {
                    let (stack, tier) = (self.s_stack[i], self.s_tier[i]);
                    if keep(stack, self.s_tid[i], tier) {
                        weights[stack as usize][tier as usize] += self.s_weight[i] as u64;
                    }
                }
            }
        }
        Ok(Selection { weights })
    }

    /// Outermost position of a focused function in stack `s`.
    fn focus_pos(&self, s: u32, focus: &[bool]) -> Option<usize> {
        self.stack(s).iter().position(|&f| focus[f as usize])
    }

    /// The call tree of the samples `filter` selects. `matches` marks the functions a
    /// search looks for: [`CallTree::matched`] is the weight of samples with a matching
    /// frame anywhere on their stack.
    ///
    /// Cost: O(weighted stacks + emitted nodes x their children x log stacks) for the
    /// plain tree (its shape is precomputed), plus building the tree for focused or
    /// inverted views; never O(samples) unless the filter has a time range.
    pub fn tree(
        &self,
        filter: &Filter,
        opts: &TreeOptions,
        matches: Option<&dyn Fn(&Function) -> bool>,
    ) -> Result<CallTree, QueryError> {
        let focus = self.focus_mask(filter)?;
        let sel = self.select(filter)?;
        let weighted: Vec<u32> = (0..self.stack_proc.len() as u32)
            .filter(|&s| sel.weights[s as usize].iter().any(|&w| w > 0))
            .collect();

        let mut matched = 0u64;
        if let Some(pred) = matches {
            let mut cache: Vec<Option<bool>> = vec![None; self.functions.len()];
            for &s in &weighted {
                let hit = self.stack(s).iter().any(|&f| {
                    *cache[f as usize].get_or_insert_with(|| pred(&self.functions[f as usize]))
                });
                if hit {
                    matched += sel.weights[s as usize].iter().sum::<u64>();
                }
            }
        }

        // The tree and, per weighted stack, the node its samples end at.
        let owned: (Trie, Shape);
        let (trie, shape, ends): (&Trie, &Shape, Vec<(u32, u32)>) =
            if focus.is_none() && !opts.invert {
                let ends = weighted
                    .iter()
                    .map(|&s| (self.stack_node[s as usize], s))
                    .collect();
                (&self.full, &self.full_shape, ends)
            } else {
                let mut t = Trie::new();
                let mut ends = Vec::new();
                for &s in &weighted {
                    let st = self.stack(s);
                    let node = match (&focus, opts.invert) {
                        (None, false) => t.insert(st.iter().copied()),
                        (None, true) => t.insert(st.iter().rev().copied()),
                        (Some(fm), inv) => {
                            let Some(k) = self.focus_pos(s, fm) else {
                                continue;
                            };
                            if inv {
                                t.insert(st[..=k].iter().rev().copied())
                            } else {
                                t.insert(st[k..].iter().copied())
                            }
                        }
                    };
                    ends.push((node, s));
                }
                let shape = Shape::new(&t);
                owned = (t, shape);
                (&owned.0, &owned.1, ends)
            };
        let sums = Sums::new(shape, &ends, &sel.weights);

        // Scalar self and total weights of every node (children have larger ids).
        let n = trie.len();
        let mut self_w = vec![0u64; n];
        for &(node, s) in &ends {
            self_w[node as usize] += sel.weights[s as usize].iter().sum::<u64>();
        }
        let mut total = self_w.clone();
        let mut nonempty = usize::from(n > 0);
        for i in (1..n).rev() {
            if total[i] > 0 {
                nonempty += 1;
                total[trie.parent[i] as usize] += total[i];
            }
        }
        let kids = |v: usize| {
            shape
                .children(v as u32)
                .iter()
                .copied()
                .filter(|&c| total[c as usize] > 0)
        };

        // Budget: grow the kept set from the root, heaviest candidate first, counting one
        // `[other]` node per kept node that still has children left out.
        let budget = opts.max_nodes.max(2);
        let mut kept = vec![false; n];
        let mut left_out = vec![0u32; n];
        kept[0] = true;
        left_out[0] = kids(0).count() as u32;
        let mut others = usize::from(left_out[0] > 0);
        let mut size = 1usize;
        let mut heap: BinaryHeap<(u64, Reverse<u32>)> =
            kids(0).map(|c| (total[c as usize], Reverse(c))).collect();
        while let Some((_, Reverse(c))) = heap.pop() {
            let c = c as usize;
            let p = trie.parent[c] as usize;
            let c_kids = kids(c).count() as u32;
            let new_others = others + usize::from(c_kids > 0) - usize::from(left_out[p] == 1);
            if size + 1 + new_others > budget {
                break;
            }
            kept[c] = true;
            size += 1;
            left_out[p] -= 1;
            left_out[c] = c_kids;
            others = new_others;
            heap.extend(kids(c).map(|k| (total[k as usize], Reverse(k))));
        }

        // Emit in preorder, remapping functions to a compact table. Tier splits come from
        // the preorder prefix sums, for emitted nodes only.
        let mut out = CallTree {
            total: total.first().copied().unwrap_or(0),
            matched,
            functions: vec![Function {
                name: ROOT_NAME.to_string(),
                module: String::new(),
                file: None,
                line: None,
            }],
            parent: Vec::with_capacity(size + others),
            func: Vec::with_capacity(size + others),
            self_: Vec::with_capacity(size + others),
            total_weight: Vec::with_capacity(size + others),
            tiers: Vec::with_capacity((size + others) * TIERS),
            folded_nodes: (nonempty - size) as u64,
        };
        let mut fmap: HashMap<u32, u32> = HashMap::new();
        let mut other_func: Option<u32> = None;
        enum Item {
            Node(u32, i64),
            Other(i64, TierArray),
        }
        let mut work: Vec<Item> = vec![Item::Node(0, -1)];
        let mut sorted: Vec<u32> = Vec::new();
        while let Some(item) = work.pop() {
            let me = out.parent.len() as i64;
            let (node, parent_out) = match item {
                Item::Other(parent_out, t) => {
                    let of = *other_func.get_or_insert_with(|| {
                        out.functions.push(Function {
                            name: OTHER_NAME.to_string(),
                            module: "[folded]".to_string(),
                            file: None,
                            line: None,
                        });
                        out.functions.len() as u32 - 1
                    });
                    let w: u64 = t.iter().sum();
                    out.parent.push(parent_out);
                    out.func.push(of);
                    out.self_.push(w);
                    out.total_weight.push(w);
                    out.tiers.extend_from_slice(&t);
                    continue;
                }
                Item::Node(node, parent_out) => (node as usize, parent_out),
            };
            let fidx = if node == 0 {
                0
            } else {
                let f = trie.func[node];
                *fmap.entry(f).or_insert_with(|| {
                    out.functions.push(self.functions[f as usize].clone());
                    out.functions.len() as u32 - 1
                })
            };
            let tiers = sums.total(shape, node as u32);
            out.parent.push(parent_out);
            out.func.push(fidx);
            out.self_.push(self_w[node]);
            out.total_weight.push(total[node]);
            out.tiers.extend_from_slice(&tiers);

            sorted.clear();
            sorted.extend(kids(node).filter(|&c| kept[c as usize]));
            // The folded children become one `[other]` leaf, emitted after the kept ones:
            // what is left of the node's total after its self and its kept children.
            if left_out[node] > 0 {
                let mut t = tiers;
                let own = sums.self_tiers(shape, node as u32);
                for (x, y) in t.iter_mut().zip(&own) {
                    *x -= y;
                }
                for &c in &sorted {
                    for (x, y) in t.iter_mut().zip(&sums.total(shape, c)) {
                        *x -= y;
                    }
                }
                work.push(Item::Other(me, t));
            }
            sorted.sort_by(|&a, &b| {
                total[b as usize].cmp(&total[a as usize]).then_with(|| {
                    let (fa, fb) = (trie.func[a as usize], trie.func[b as usize]);
                    self.functions[fa as usize]
                        .name
                        .cmp(&self.functions[fb as usize].name)
                        .then(fa.cmp(&fb))
                })
            });
            work.extend(sorted.iter().rev().map(|&c| Item::Node(c, me)));
        }
        Ok(out)
    }

    /// Tier weights of the samples `filter` selects, in `buckets` equal buckets over the
    /// selected time range (the whole axis when the filter has none). With a focus, only
    /// samples whose stack contains the focused function count.
    pub fn timeline(&self, filter: &Filter, buckets: usize) -> Result<Timeline, QueryError> {
        let proc = self.process_index(filter)?;
        let axis = filter.axis.unwrap_or(self.default_axis);
        let range = self.range_ns(filter)?;
        let focus = self.focus_mask(filter)?;
        if let Some(tid) = filter.thread {
            let known = match proc {
                Some(p) => self.procs[p].tids.contains(&tid),
                None => self.procs.iter().any(|p| p.tids.contains(&tid)),
            };
            if !known {
                return Err(QueryError::NoThread(tid));
            }
        }
        let end_axis = self.axis_end(axis, proc);
        let (from, to) = match range {
            Some((a, b)) => (a, if b == u64::MAX { end_axis.max(a) } else { b }),
            None => (0, end_axis),
        };
        let buckets = buckets.max(1);
        let span = to.saturating_sub(from).max(1);
        let width = span.div_ceil(buckets as u64).max(1);
        let mut counts = vec![0u64; buckets * TIERS];
        let mask = Self::tier_mask(filter);
        let focus_hit: Option<Vec<bool>> = focus.map(|fm| {
            (0..self.stack_proc.len() as u32)
                .map(|s| self.focus_pos(s, &fm).is_some())
                .collect()
        });
        for i in self.sample_range(axis, proc, from, to) {
            let (stack, tier) = (self.s_stack[i], self.s_tier[i] as usize);
            if !mask[tier]
                || proc.is_some_and(|p| self.stack_proc[stack as usize] as usize != p)
                || filter.thread.is_some_and(|t| t != self.s_tid[i])
                || focus_hit.as_ref().is_some_and(|h| !h[stack as usize])
            {
                continue;
            }
            let b = ((self.x(axis, proc, i) - from) / width) as usize;
            counts[b.min(buckets - 1) * TIERS + tier] += self.s_weight[i] as u64;
        }
        Ok(Timeline {
            axis,
            start_s: from as f64 / 1e9,
            bucket_s: width as f64 / 1e9,
            end_s: to as f64 / 1e9,
            counts,
            buckets,
        })
    }

    /// Self and total weight, split by tier, of every function with samples in the
    /// selection, heaviest self first (then total, then name). With a focus, only
    /// samples whose stack contains the focused function count.
    pub fn functions(&self, filter: &Filter) -> Result<Vec<FunctionRow>, QueryError> {
        let focus = self.focus_mask(filter)?;
        let sel = self.select(filter)?;
        let nf = self.functions.len();
        let mut self_t = vec![[0u64; TIERS]; nf];
        let mut total_t = vec![[0u64; TIERS]; nf];
        let mut stamp = vec![u32::MAX; nf];
        for (s, w) in sel.weights.iter().enumerate() {
            if w.iter().all(|&x| x == 0) {
                continue;
            }
            let st = self.stack(s as u32);
            if let Some(fm) = &focus {
                if !st.iter().any(|&f| fm[f as usize]) {
                    continue;
                }
            }
            for &f in st {
                if stamp[f as usize] != s as u32 {
                    stamp[f as usize] = s as u32;
                    for k in 0..TIERS {
                        total_t[f as usize][k] += w[k];
                    }
                }
            }
            if let Some(&leaf) = st.last() {
                for k in 0..TIERS {
                    self_t[leaf as usize][k] += w[k];
                }
            }
        }
        let mut rows: Vec<FunctionRow> = (0..nf)
            .filter(|&f| total_t[f].iter().any(|&x| x > 0))
            .map(|f| FunctionRow {
                function: self.functions[f].clone(),
                self_: self_t[f].iter().sum(),
                total: total_t[f].iter().sum(),
                self_tiers: self_t[f],
                total_tiers: total_t[f],
            })
            .collect();
        rows.sort_by(|a, b| {
            b.self_
                .cmp(&a.self_)
                .then(b.total.cmp(&a.total))
                .then_with(|| a.function.name.cmp(&b.function.name))
                .then_with(|| a.function.module.cmp(&b.function.module))
        });
        Ok(rows)
    }
}

/// Sample indices: a process's list, or a range of all samples.
enum SampleIter<'a> {
    Slice(std::slice::Iter<'a, u32>),
    Range(std::ops::Range<usize>),
}

impl Iterator for SampleIter<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        match self {
            SampleIter::Slice(it) => it.next().map(|&i| i as usize),
            SampleIter::Range(r) => r.next(),
        }
    }
}

fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use prof_format::{
        node_kind, read_profile, LogWriter, Mode, Module, PendingSample, ProcessInfo, Profile,
        TimerSource,
    };

    use super::*;
    use crate::{analyze, Symbolizer};

    const APP: &str = "/fake/bin/tree-app";
    const APP_ID: &[u8] = &[0x11, 0x22, 0x33, 0x44];
    const BIAS: u64 = 0x4000_0000;

    fn symbolizer() -> Symbolizer {
        let mut s = Symbolizer::without_debug_dirs();
        s.add_symbols(
            APP,
            APP_ID,
            [
                (0x1000u64, 0x100u64, "main"),
                (0x1100, 0x100, "a"),
                (0x1200, 0x100, "b"),
                (0x1300, 0x100, "c"),
                (0x1400, 0x100, "_PyEval_EvalFrameDefault"),
            ],
        );
        s
    }

    fn f(name: &str) -> (u32, u64) {
        let off = match name {
            "main" => 0x1000,
            "a" => 0x1100,
            "b" => 0x1200,
            "c" => 0x1300,
            "py" => 0x1400,
            _ => unreachable!(),
        };
        (node_kind::NATIVE, BIAS + off + 0x10)
    }

    /// One process (pid 7, period 1 ms), threads 1 and 2; samples 1 ms apart:
    /// t=0..4  main;a;b  (tid 1)        x5
    /// t=5..7  main;a;c  (tid 1)        x3
    /// t=8..9  main;c    (tid 2)        x2, the second with weight 3
    /// t=10    main;py;a (tid 2)        x1  (interpreter tier)
    fn profile() -> Profile {
        let mut w = LogWriter::new(Vec::new());
        w.process(&ProcessInfo {
            pid: 7,
            ppid: 1,
            start_unix_ns: 1_000_000_000,
            period_ns: 1_000_000,
            mode: Mode::Cpu,
            timer: TimerSource::PerfEvent,
            time_unit_ns: 1000,
            max_depth: 64,
            exe: APP.into(),
            argv: vec!["tree-app".into()],
            agent_version: "test".into(),
        });
        w.module(&Module {
            id: 1,
            path: APP.into(),
            build_id: APP_ID.to_vec(),
            bias: BIAS,
            ranges: vec![(BIAS + 0x1000, BIAS + 0x2000)],
        });
        let mut t = 0u64;
        let mut sample = |w: &mut LogWriter<Vec<u8>>, tid, names: &[&str], weight| {
            let leaf = w.stacks.intern(names.iter().map(|n| f(n)));
            w.samples(
                tid,
                &[PendingSample {
                    time_ns: t * 1_000_000,
                    leaf,
                    weight,
                    flags: 0,
                }],
            );
            t += 1;
        };
        for _ in 0..5 {
            sample(&mut w, 1, &["main", "a", "b"], 1);
        }
        for _ in 0..3 {
            sample(&mut w, 1, &["main", "a", "c"], 1);
        }
        sample(&mut w, 2, &["main", "c"], 1);
        sample(&mut w, 2, &["main", "c"], 3);
        sample(&mut w, 2, &["main", "py", "a"], 1);
        read_profile(&w.into_inner().unwrap()).unwrap()
    }

    fn index() -> ProfileIndex {
        let p = profile();
        let a = analyze(&p, &mut symbolizer());
        ProfileIndex::new(&p, &a)
    }

    /// The tree as "path weight/total" lines, preorder.
    fn lines(t: &CallTree) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for i in 0..t.parent.len() {
            let name = &t.functions[t.func[i] as usize].name;
            let path = if t.parent[i] < 0 {
                name.clone()
            } else {
                format!("{};{}", paths[t.parent[i] as usize], name)
            };
            paths.push(path);
        }
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{p} {}/{}", t.self_[i], t.total_weight[i]))
            .collect()
    }

    #[test]
    fn full_tree_in_preorder_heaviest_first() {
        let idx = index();
        let t = idx
            .tree(&Filter::default(), &TreeOptions::default(), None)
            .unwrap();
        assert_eq!(
            lines(&t),
            [
                "all 0/13",
                "all;main 0/13",
                "all;main;a 0/8",
                "all;main;a;b 5/5",
                "all;main;a;c 3/3",
                "all;main;c 4/4",
                "all;main;_PyEval_EvalFrameDefault 0/1",
                "all;main;_PyEval_EvalFrameDefault;a 1/1",
            ]
        );
        assert_eq!(t.total, 13);
        assert_eq!(t.folded_nodes, 0);
        assert_eq!(t.tiers.len(), t.parent.len() * TIERS);
        // The interpreter sample is classified by the eval-loop frame.
        let interp = tier_index(Tier::Interpreter);
        let native = tier_index(Tier::Native);
        assert_eq!(t.tiers[interp], 1);
        assert_eq!(t.tiers[native], 12);
        assert_eq!(idx.tier_totals()[interp], 1);
    }

    #[test]
    fn filters_by_thread_tier_and_time() {
        let idx = index();
        let opts = TreeOptions::default();
        let t = idx
            .tree(
                &Filter {
                    thread: Some(2),
                    ..Filter::default()
                },
                &opts,
                None,
            )
            .unwrap();
        assert_eq!(t.total, 5);
        let t = idx
            .tree(
                &Filter {
                    tiers: Some(vec![Tier::Interpreter]),
                    ..Filter::default()
                },
                &opts,
                None,
            )
            .unwrap();
        assert_eq!(t.total, 1);
        // CPU axis: sample k starts at k ms of CPU, except the one after the weight-3
        // sample; [5 ms, 8 ms) holds the three main;a;c samples.
        let range = Filter {
            from_s: Some(0.005),
            to_s: Some(0.008),
            ..Filter::default()
        };
        let t = idx.tree(&range, &opts, None).unwrap();
        assert_eq!(
            lines(&t)[..3],
            ["all 0/3", "all;main 0/3", "all;main;a 0/3"]
        );
        // The py sample is at 12 ms of CPU time (9 ms + weight 3) but 10 ms of wall time.
        let cpu = Filter {
            from_s: Some(0.012),
            ..Filter::default()
        };
        assert_eq!(idx.tree(&cpu, &opts, None).unwrap().total, 1);
        let wall = Filter {
            from_s: Some(0.010),
            axis: Some(Axis::Wall),
            ..Filter::default()
        };
        assert_eq!(idx.tree(&wall, &opts, None).unwrap().total, 1);
        assert_eq!(
            idx.tree(
                &Filter {
                    process: Some(8),
                    ..Filter::default()
                },
                &opts,
                None
            )
            .unwrap_err(),
            QueryError::NoProcess(8)
        );
        assert_eq!(
            idx.tree(
                &Filter {
                    thread: Some(99),
                    ..Filter::default()
                },
                &opts,
                None
            )
            .unwrap_err(),
            QueryError::NoThread(99)
        );
        assert!(matches!(
            idx.tree(
                &Filter {
                    from_s: Some(2.0),
                    to_s: Some(1.0),
                    ..Filter::default()
                },
                &opts,
                None
            ),
            Err(QueryError::BadRange(_))
        ));
    }

    #[test]
    fn focus_and_invert() {
        let idx = index();
        let focus = Filter {
            focus: Some("a".into()),
            ..Filter::default()
        };
        let callees = idx.tree(&focus, &TreeOptions::default(), None).unwrap();
        assert_eq!(
            lines(&callees),
            ["all 0/9", "all;a 1/9", "all;a;b 5/5", "all;a;c 3/3"]
        );
        let callers = idx
            .tree(
                &focus,
                &TreeOptions {
                    invert: true,
                    ..TreeOptions::default()
                },
                None,
            )
            .unwrap();
        assert_eq!(
            lines(&callers),
            [
                "all 0/9",
                "all;a 0/9",
                "all;a;main 8/8",
                "all;a;_PyEval_EvalFrameDefault 0/1",
                "all;a;_PyEval_EvalFrameDefault;main 1/1",
            ]
        );
        let bottom_up = idx
            .tree(
                &Filter::default(),
                &TreeOptions {
                    invert: true,
                    ..TreeOptions::default()
                },
                None,
            )
            .unwrap();
        assert_eq!(lines(&bottom_up)[1], "all;c 0/7");
        assert_eq!(
            idx.tree(
                &Filter {
                    focus: Some("nope".into()),
                    ..Filter::default()
                },
                &TreeOptions::default(),
                None
            )
            .unwrap_err(),
            QueryError::NoFunction("nope".into())
        );
    }

    #[test]
    fn node_budget_folds_into_other_and_keeps_totals() {
        let idx = index();
        for max in 2..=9 {
            let t = idx
                .tree(
                    &Filter::default(),
                    &TreeOptions {
                        invert: false,
                        max_nodes: max,
                    },
                    None,
                )
                .unwrap();
            assert!(t.parent.len() <= max, "{max}: {:?}", lines(&t));
            assert_eq!(t.total, 13);
            assert_eq!(
                t.folded_nodes as usize + t.parent.len(),
                8 + count_others(&t)
            );
            // Every node's total is its self plus its children's totals.
            for i in 0..t.parent.len() {
                let kids: u64 = (0..t.parent.len())
                    .filter(|&j| t.parent[j] == i as i64)
                    .map(|j| t.total_weight[j])
                    .sum();
                assert_eq!(
                    t.total_weight[i],
                    t.self_[i] + kids,
                    "{max}: {:?}",
                    lines(&t)
                );
                let tier_sum: u64 = t.tiers[i * TIERS..(i + 1) * TIERS].iter().sum();
                assert_eq!(tier_sum, t.total_weight[i]);
            }
        }
        let t = idx
            .tree(
                &Filter::default(),
                &TreeOptions {
                    invert: false,
                    max_nodes: 5,
                },
                None,
            )
            .unwrap();
        assert_eq!(
            lines(&t),
            [
                "all 0/13",
                "all;main 0/13",
                "all;main;a 0/8",
                "all;main;a;[other] 8/8",
                "all;main;[other] 5/5",
            ]
        );
    }

    fn count_others(t: &CallTree) -> usize {
        t.func
            .iter()
            .filter(|&&f| t.functions[f as usize].name == OTHER_NAME)
            .count()
    }

    #[test]
    fn search_weight() {
        let idx = index();
        let pred = |f: &Function| f.name == "c";
        let t = idx
            .tree(&Filter::default(), &TreeOptions::default(), Some(&pred))
            .unwrap();
        assert_eq!(t.matched, 7);
    }

    #[test]
    fn timeline_buckets_add_up() {
        let idx = index();
        let tl = idx.timeline(&Filter::default(), 4).unwrap();
        assert_eq!(tl.axis, Axis::Cpu);
        assert_eq!(tl.buckets, 4);
        assert_eq!(tl.counts.len(), 4 * TIERS);
        assert!((tl.end_s - 0.013).abs() < 1e-9, "{}", tl.end_s);
        assert_eq!(tl.counts.iter().sum::<u64>(), 13);
        let interp = tier_index(Tier::Interpreter);
        assert_eq!(tl.counts[3 * TIERS + interp], 1);
        let tl = idx
            .timeline(
                &Filter {
                    focus: Some("b".into()),
                    from_s: Some(0.0),
                    to_s: Some(0.004),
                    ..Filter::default()
                },
                2,
            )
            .unwrap();
        assert_eq!(tl.counts.iter().sum::<u64>(), 4);
        assert!((tl.bucket_s - 0.002).abs() < 1e-12);
    }

    #[test]
    fn function_table() {
        let idx = index();
        let rows = idx.functions(&Filter::default()).unwrap();
        let names: Vec<(&str, u64, u64)> = rows
            .iter()
            .map(|r| (r.function.name.as_str(), r.self_, r.total))
            .collect();
        assert_eq!(
            names,
            [
                ("c", 7, 7),
                ("b", 5, 5),
                ("a", 1, 9),
                ("main", 0, 13),
                ("_PyEval_EvalFrameDefault", 0, 1)
            ]
        );
        let a = &rows[2];
        assert_eq!(a.total_tiers[tier_index(Tier::Interpreter)], 1);
        assert_eq!(a.self_tiers[tier_index(Tier::Interpreter)], 1);
    }

    #[test]
    fn empty_and_garbage_profiles() {
        let p = Profile::default();
        let a = analyze(&p, &mut symbolizer());
        let idx = ProfileIndex::new(&p, &a);
        let t = idx
            .tree(&Filter::default(), &TreeOptions::default(), None)
            .unwrap();
        assert_eq!(t.total, 0);
        assert_eq!(t.parent, [-1]);
        let tl = idx.timeline(&Filter::default(), 10).unwrap();
        assert_eq!(tl.counts.iter().sum::<u64>(), 0);
        assert!(idx.functions(&Filter::default()).unwrap().is_empty());
    }
}

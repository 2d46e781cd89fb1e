//! Building a [`ProfileIndex`]: the function table, the stacks, the full call tree and
//! the sample columns.

use std::collections::{BTreeMap, HashMap};

use prof_format::{Mode, Profile};

use super::*;
use crate::analysis::{Analysis, NO_STACK};
use crate::code_only::{self, FrameKind};

/// A tree of functions: node 0 is the root, every node's parent has a smaller id.
#[derive(Debug, Clone, Default)]
pub(super) struct Trie {
    pub(super) parent: Vec<u32>,
    pub(super) func: Vec<u32>,
    index: HashMap<(u32, u32), u32>,
}

impl Trie {
    pub(super) fn new() -> Trie {
        Trie {
            parent: vec![u32::MAX],
            func: vec![u32::MAX],
            index: HashMap::new(),
        }
    }

    pub(super) fn insert<I: IntoIterator<Item = u32>>(&mut self, path: I) -> u32 {
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

    pub(super) fn len(&self) -> usize {
        self.parent.len()
    }
}

/// A tree's static layout: children lists and preorder numbering, so that a subtree is
/// a contiguous range of preorder positions.
#[derive(Debug, Clone, Default)]
pub(super) struct Shape {
    /// Children of node `v`: `children[first[v]..first[v + 1]]`.
    first: Vec<u32>,
    children: Vec<u32>,
    /// Preorder position of each node, and the size of its subtree.
    pub(super) pre: Vec<u32>,
    pub(super) size: Vec<u32>,
}

impl Shape {
    pub(super) fn new(t: &Trie) -> Shape {
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

    pub(super) fn children(&self, v: u32) -> &[u32] {
        &self.children[self.first[v as usize] as usize..self.first[v as usize + 1] as usize]
    }
}

/// Tier weights of a tree's end nodes as prefix sums in preorder: any subtree's weights
/// are one difference.
pub(super) struct Sums {
    /// Preorder positions of the ends, sorted.
    pos: Vec<u32>,
    /// `cum[i]`: weights of the first `i` ends.
    cum: Vec<TierArray>,
}

impl Sums {
    pub(super) fn new(shape: &Shape, ends: &[(u32, u32)], weights: &[TierArray]) -> Sums {
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
    pub(super) fn range(&self, lo: u32, hi: u32) -> TierArray {
        let a = self.pos.partition_point(|&p| p < lo);
        let b = self.pos.partition_point(|&p| p < hi);
        let mut t = self.cum[b];
        for (x, y) in t.iter_mut().zip(&self.cum[a]) {
            *x -= y;
        }
        t
    }

    pub(super) fn total(&self, shape: &Shape, v: u32) -> TierArray {
        let lo = shape.pre[v as usize];
        self.range(lo, lo + shape.size[v as usize])
    }

    pub(super) fn self_tiers(&self, shape: &Shape, v: u32) -> TierArray {
        let lo = shape.pre[v as usize];
        self.range(lo, lo + 1)
    }
}

/// FxHash (rustc's hasher): fast for small integer keys, which is all it is used for here.
pub(super) type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// One view's stacks: per stack its functions root first
/// (`funcs[start[s]..start[s + 1]]`) and its end node in the view's full call tree.
#[derive(Debug, Clone, Default)]
pub(super) struct Stacks {
    start: Vec<u32>,
    funcs: Vec<u32>,
    pub(super) node: Vec<u32>,
    pub(super) full: Trie,
    pub(super) shape: Shape,
}

impl Stacks {
    fn new() -> Stacks {
        Stacks {
            start: vec![0],
            full: Trie::new(),
            ..Stacks::default()
        }
    }

    fn push(&mut self, frames: &[u32]) {
        self.funcs.extend_from_slice(frames);
        self.start.push(self.funcs.len() as u32);
        self.node.push(self.full.insert(frames.iter().copied()));
    }

    fn finish(mut self) -> Stacks {
        self.shape = Shape::new(&self.full);
        self
    }

    /// Functions of stack `s`, root first.
    pub(super) fn stack(&self, s: u32) -> &[u32] {
        &self.funcs[self.start[s as usize] as usize..self.start[s as usize + 1] as usize]
    }

    pub(super) fn len(&self) -> usize {
        self.node.len()
    }
}

/// The function table under construction: frames merged by (name, module), and for
/// Python code by whole file path too.
struct Functions {
    list: Vec<Function>,
    ids: HashMap<(String, String, String), u32>,
}

impl Functions {
    fn intern(&mut self, f: Function) -> u32 {
        let path = crate::python::identity_file(&f.module, f.file.as_deref()).to_string();
        let key = (f.name.clone(), f.module.clone(), path);
        let list = &mut self.list;
        *self.ids.entry(key).or_insert_with(|| {
            list.push(f);
            list.len() as u32 - 1
        })
    }

    fn named(&mut self, name: &str, module: &str) -> u32 {
        self.intern(Function {
            name: name.to_string(),
            module: module.to_string(),
            file: None,
            line: None,
        })
    }
}

/// A sample before the samples are put in wall-clock order.
struct Raw {
    wall: u64,
    proc: u32,
    stack: u32,
    tid: u32,
    weight: u32,
    tier: u8,
}

/// What reading the samples of every process gives.
struct Read {
    stack_proc: Vec<u32>,
    /// Per stack: the process's leaf node it was read from.
    stack_leaf: Vec<u32>,
    native: Stacks,
    raw: Vec<Raw>,
    procs: Vec<Proc>,
    groups: Vec<Group>,
}

impl ProfileIndex {
    /// Indexes `profile`, whose analysis is `analysis` (from [`crate::analyze`]).
    pub fn new(profile: &Profile, analysis: &Analysis) -> ProfileIndex {
        let mut functions = Functions {
            list: Vec::new(),
            ids: HashMap::new(),
        };
        // V8 names a JS function by the tier that compiled it (`JS:~f`, `JS:^f`, `JS:*f`):
        // one function whatever tier ran it; the samples' tiers keep the split.
        let frame_func: Vec<u32> = analysis
            .frames()
            .iter()
            .map(|fr| {
                functions.intern(Function {
                    name: code_only::merge_v8_tier(&fr.name).unwrap_or_else(|| fr.name.clone()),
                    module: fr.module.clone(),
                    file: fr.file.clone(),
                    line: fr.line,
                })
            })
            .collect();
        let start_unix_ns = profile
            .processes
            .iter()
            .map(|p| p.info.start_unix_ns)
            .min()
            .unwrap_or(0);
        let read = read_samples(
            profile,
            analysis,
            &frame_func,
            &mut functions,
            start_unix_ns,
        );
        let (code, mostly_program) = code_stacks(&read.native, &read.groups, &mut functions);
        let lines = line_costs(analysis, &read);
        let sources = profile
            .sources
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();

        let period: Vec<u64> = profile
            .processes
            .iter()
            .map(|p| p.info.period_ns.max(1))
            .collect();
        let n = read.raw.len();
        let mut idx = ProfileIndex {
            functions: functions.list,
            by_name: HashMap::new(),
            stack_proc: read.stack_proc,
            native: read.native.finish(),
            code: code.finish(),
            mostly_program,
            lines,
            sources,
            s_wall: Vec::with_capacity(n),
            s_cpu_all: Vec::with_capacity(n),
            s_cpu_proc: Vec::with_capacity(n),
            s_stack: Vec::with_capacity(n),
            s_tid: Vec::with_capacity(n),
            s_weight: Vec::with_capacity(n),
            s_tier: Vec::with_capacity(n),
            groups: read.groups,
            procs: read.procs,
            end_wall: 0,
            end_cpu_all: 0,
            end_cpu_proc: vec![0; profile.processes.len()],
            default_axis: match profile.processes.first().map(|p| p.info.mode) {
                Some(Mode::Wall) => Axis::Wall,
                _ => Axis::Cpu,
            },
            start_unix_ns,
            markers: super::markers::MarkerIndex::new(profile, analysis, start_unix_ns),
        };
        idx.fill_sample_columns(&read.raw, &period);
        for (i, f) in idx.functions.iter().enumerate() {
            idx.by_name
                .entry(f.name.clone())
                .or_default()
                .push(i as u32);
        }
        idx
    }

    /// The sample columns in wall-clock order, and the ends of the axes.
    fn fill_sample_columns(&mut self, raw: &[Raw], period: &[u64]) {
        // The samples of one SAMPLES record are sorted already, so a stable sort of
        // compact keys mostly merges runs.
        let mut order: Vec<(u64, u32)> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.wall, i as u32))
            .collect();
        order.sort_by_key(|&(w, _)| w);
        let mut cpu_all = 0u64;
        for (i, &(_, ri)) in order.iter().enumerate() {
            let r = &raw[ri as usize];
            let pi = r.proc as usize;
            let dt = (r.weight as u64).saturating_mul(period[pi]);
            self.s_wall.push(r.wall);
            self.s_cpu_all.push(cpu_all);
            self.s_cpu_proc.push(self.end_cpu_proc[pi]);
            self.s_stack.push(r.stack);
            self.s_tid.push(r.tid);
            self.s_weight.push(r.weight);
            self.s_tier.push(r.tier);
            self.procs[pi].samples.push(i as u32);
            cpu_all = cpu_all.saturating_add(dt);
            self.end_cpu_proc[pi] = self.end_cpu_proc[pi].saturating_add(dt);
            self.end_wall = self.end_wall.max(r.wall.saturating_add(1));
        }
        self.end_cpu_all = cpu_all;
    }
}

/// Reads every process's samples: their stacks (one per distinct leaf node), tiers,
/// threads, and per (stack, thread, tier) weights.
fn read_samples(
    profile: &Profile,
    analysis: &Analysis,
    frame_func: &[u32],
    functions: &mut Functions,
    start_unix_ns: u64,
) -> Read {
    let mut out = Read {
        stack_proc: Vec::new(),
        stack_leaf: Vec::new(),
        native: Stacks::new(),
        raw: Vec::new(),
        procs: Vec::new(),
        groups: Vec::new(),
    };
    let mut group_index: FxMap<(u32, u32, u8), usize> = FxMap::default();
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
                    let id = out.stack_proc.len() as u32;
                    frames.clear();
                    frames.extend(
                        analysis
                            .stack_ids(pi, leaf)
                            .into_iter()
                            .map(|f| frame_func[f as usize]),
                    );
                    if frames.is_empty() {
                        frames.push(functions.named(NO_STACK, ""));
                    }
                    out.native.push(&frames);
                    out.stack_proc.push(pi as u32);
                    out.stack_leaf.push(leaf);
                    stack_ids[leaf as usize] = id;
                    id
                }
            };
            let tier = tier_index(sample_tier(analysis, pi, s.tid, leaf, s.time_ns)) as u8;
            if !tids.contains(&s.tid) {
                tids.push(s.tid);
            }
            let groups = &mut out.groups;
            let g = *group_index.entry((stack, s.tid, tier)).or_insert_with(|| {
                groups.push(Group {
                    stack,
                    tid: s.tid,
                    tier,
                    weight: 0,
                });
                groups.len() - 1
            });
            out.groups[g].weight += s.weight as u64;
            out.raw.push(Raw {
                wall: offset.saturating_add(s.time_ns),
                proc: pi as u32,
                stack,
                tid: s.tid,
                weight: s.weight,
                tier,
            });
        }
        tids.sort_unstable();
        out.procs.push(Proc {
            pid: p.info.pid,
            samples: Vec::new(),
            tids,
        });
    }
    out
}

/// The code-only view of every stack (see [`code_only`]), and whether the profile is
/// mostly program code.
fn code_stacks(native: &Stacks, groups: &[Group], functions: &mut Functions) -> (Stacks, bool) {
    let kinds: Vec<FrameKind> = functions
        .list
        .iter()
        .map(|f| FrameKind::of(&f.name, &f.module, f.file.as_deref()))
        .collect();
    let folded: Vec<Option<Vec<usize>>> = (0..native.len() as u32)
        .map(|s| {
            let k: Vec<FrameKind> = native.stack(s).iter().map(|&f| kinds[f as usize]).collect();
            code_only::fold(&k)
        })
        .collect();
    let mut weight = vec![0u64; native.len()];
    for g in groups {
        weight[g.stack as usize] += g.weight;
    }
    let mostly =
        code_only::mostly_program(folded.iter().zip(&weight).map(|(f, &w)| (w, f.is_some())));
    let any_program = folded.iter().any(|f| f.is_some());
    let mut code = Stacks::new();
    let mut frames = Vec::new();
    for (s, keep) in folded.iter().enumerate() {
        let st = native.stack(s as u32);
        frames.clear();
        match keep {
            Some(ix) => frames.extend(ix.iter().map(|&i| st[i])),
            None if any_program => {
                frames.push(functions.named(code_only::RUNTIME_NAME, code_only::RUNTIME_MODULE))
            }
            None => frames.extend_from_slice(st),
        }
        code.push(&frames);
    }
    (code, mostly)
}

/// Per source file and line: the weight of samples whose innermost program frame (the
/// leaf, for stacks without one) is on the line (`self`), and of samples with a frame on
/// it anywhere (`total`, once per sample).
fn line_costs(analysis: &Analysis, read: &Read) -> HashMap<String, BTreeMap<u32, LineCost>> {
    let mut weight = vec![0u64; read.stack_proc.len()];
    for g in &read.groups {
        weight[g.stack as usize] += g.weight;
    }
    // Lines interned by (frame file, line); `stamp` counts each line once per stack.
    let mut ids: FxMap<(&str, u32), u32> = FxMap::default();
    let mut costs: Vec<(&str, u32, LineCost)> = Vec::new();
    let mut stamp: Vec<u32> = Vec::new();
    let program: Vec<bool> = analysis
        .frames()
        .iter()
        .map(|f| FrameKind::of(&f.name, &f.module, f.file.as_deref()) == FrameKind::Program)
        .collect();
    for (s, &w) in weight.iter().enumerate() {
        if w == 0 {
            continue;
        }
        let stack = analysis.stack_ids(read.stack_proc[s] as usize, read.stack_leaf[s]);
        let own = stack
            .iter()
            .rposition(|&id| program[id as usize])
            .or(stack.len().checked_sub(1));
        for (i, f) in stack.iter().map(|&id| analysis.frame(id)).enumerate() {
            let (Some(file), Some(line)) = (f.file.as_deref(), f.line) else {
                continue;
            };
            let id = *ids.entry((file, line)).or_insert_with(|| {
                costs.push((file, line, LineCost::default()));
                stamp.push(u32::MAX);
                costs.len() as u32 - 1
            }) as usize;
            if Some(i) == own {
                costs[id].2.self_ += w;
            }
            if stamp[id] != s as u32 {
                stamp[id] = s as u32;
                costs[id].2.total += w;
            }
        }
    }
    let mut out: HashMap<String, BTreeMap<u32, LineCost>> = HashMap::new();
    for (file, line, c) in costs {
        out.entry(file.to_string()).or_default().insert(line, c);
    }
    out
}

#[cfg(test)]
mod function_identity {
    use super::*;

    fn func(name: &str, module: &str, file: &str) -> Function {
        Function {
            name: name.into(),
            module: module.into(),
            file: Some(file.into()),
            line: Some(1),
        }
    }

    #[test]
    fn python_functions_are_told_apart_by_file_native_ones_are_not() {
        let mut fs = Functions {
            list: Vec::new(),
            ids: HashMap::new(),
        };
        let a = fs.intern(func("<module>", "__init__.py", "/v/django/db/__init__.py"));
        let b = fs.intern(func("<module>", "__init__.py", "/v/asyncio/__init__.py"));
        let a2 = fs.intern(func("<module>", "__init__.py", "/v/django/db/__init__.py"));
        assert_ne!(a, b);
        assert_eq!(a, a2);
        // A C function's frames name the header or source file each inlined line came from.
        let c = fs.intern(func("memcpy", "libc.so.6", "memmove.S"));
        let c2 = fs.intern(func("memcpy", "libc.so.6", "other.h"));
        assert_eq!(c, c2);
    }
}

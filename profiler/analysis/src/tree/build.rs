//! Building a [`ProfileIndex`]: the function table, the stacks, the full call tree and
//! the sample columns.

use std::collections::HashMap;

use prof_format::{Mode, Profile};

use super::*;
use crate::analysis::{Analysis, NO_STACK};

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
#[derive(Default, Clone, Copy)]
pub(super) struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub(super) type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;

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
}

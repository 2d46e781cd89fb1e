//! The call-tree query: building the (focused, inverted) tree of a selection and
//! folding it to a node budget.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::build::Sums;
use super::*;

/// The tree a query walks: the view's precomputed one, or one built for a focus or an
/// inverted view.
enum QueryTree<'a> {
    Shared(&'a Trie, &'a Shape),
    Owned(Trie, Shape),
}

impl QueryTree<'_> {
    fn parts(&self) -> (&Trie, &Shape) {
        match self {
            QueryTree::Shared(t, s) => (t, s),
            QueryTree::Owned(t, s) => (t, s),
        }
    }
}

/// Which nodes a node budget keeps: `kept[v]`, and per node how many of its children
/// (with samples) were left out, which then fold into one `[other]` node.
struct Kept {
    kept: Vec<bool>,
    left_out: Vec<u32>,
    size: usize,
    others: usize,
}

impl ProfileIndex {
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
        let matched = self.matched_weight(filter.native, &weighted, &sel, matches);
        let (qt, ends) = self.query_tree(filter, opts, focus.as_deref(), &weighted);
        let (trie, shape) = qt.parts();
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
        let kept = budget(trie, shape, &total, opts.max_nodes.max(2));
        let mut out = CallTree {
            total: total.first().copied().unwrap_or(0),
            matched,
            functions: vec![Function {
                name: ROOT_NAME.to_string(),
                module: String::new(),
                file: None,
                line: None,
            }],
            parent: Vec::with_capacity(kept.size + kept.others),
            func: Vec::with_capacity(kept.size + kept.others),
            self_: Vec::with_capacity(kept.size + kept.others),
            total_weight: Vec::with_capacity(kept.size + kept.others),
            tiers: Vec::with_capacity((kept.size + kept.others) * TIERS),
            folded_nodes: (nonempty - kept.size) as u64,
        };
        self.emit(&mut out, trie, shape, &sums, &self_w, &total, &kept);
        Ok(out)
    }

    /// Weight of the weighted stacks with a frame `matches` accepts (0 without a search).
    fn matched_weight(
        &self,
        native: NativeMode,
        weighted: &[u32],
        sel: &Selection,
        matches: Option<&dyn Fn(&Function) -> bool>,
    ) -> u64 {
        let Some(pred) = matches else {
            return 0;
        };
        let mut matched = 0u64;
        let mut cache: Vec<Option<bool>> = vec![None; self.functions.len()];
        for &s in weighted {
            let hit = self.stack(native, s).iter().any(|&f| {
                *cache[f as usize].get_or_insert_with(|| pred(&self.functions[f as usize]))
            });
            if hit {
                matched += sel.weights[s as usize].iter().sum::<u64>();
            }
        }
        matched
    }

    /// The tree and, per weighted stack, the node its samples end at: the view's own
    /// tree, or one built from the focused function (callees, or callers when inverted)
    /// or from the leaves (inverted).
    fn query_tree(
        &self,
        filter: &Filter,
        opts: &TreeOptions,
        focus: Option<&[bool]>,
        weighted: &[u32],
    ) -> (QueryTree<'_>, Vec<(u32, u32)>) {
        let view = self.view(filter.native);
        if focus.is_none() && !opts.invert {
            let ends = weighted
                .iter()
                .map(|&s| (view.node[s as usize], s))
                .collect();
            return (QueryTree::Shared(&view.full, &view.shape), ends);
        }
        let mut t = Trie::new();
        let mut ends = Vec::new();
        for &s in weighted {
            let st = self.stack(filter.native, s);
            let node = match (focus, opts.invert) {
                (None, false) => t.insert(st.iter().copied()),
                (None, true) => t.insert(st.iter().rev().copied()),
                (Some(fm), inv) => {
                    let Some(k) = self.focus_pos(filter.native, s, fm) else {
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
        (QueryTree::Owned(t, shape), ends)
    }

    /// Emits the kept nodes in preorder (heaviest child first), remapping functions to a
    /// compact table, each node's left-out children as one `[other]` leaf after its kept
    /// ones. Tier splits come from the preorder prefix sums, for emitted nodes only.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        out: &mut CallTree,
        trie: &Trie,
        shape: &Shape,
        sums: &Sums,
        self_w: &[u64],
        total: &[u64],
        kept: &Kept,
    ) {
        let kids = |v: usize| {
            shape
                .children(v as u32)
                .iter()
                .copied()
                .filter(|&c| total[c as usize] > 0)
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
            sorted.extend(kids(node).filter(|&c| kept.kept[c as usize]));
            // The folded children become one `[other]` leaf, emitted after the kept ones:
            // what is left of the node's total after its self and its kept children.
            if kept.left_out[node] > 0 {
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
    }
}

/// The node budget: grows the kept set from the root, heaviest candidate first, counting
/// one `[other]` node per kept node that still has children left out.
fn budget(trie: &Trie, shape: &Shape, total: &[u64], budget: usize) -> Kept {
    let n = trie.len();
    let kids = |v: usize| {
        shape
            .children(v as u32)
            .iter()
            .copied()
            .filter(|&c| total[c as usize] > 0)
    };
    let mut kept = vec![false; n];
    let mut left_out = vec![0u32; n];
    if n == 0 {
        return Kept {
            kept,
            left_out,
            size: 0,
            others: 0,
        };
    }
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
    Kept {
        kept,
        left_out,
        size,
        others,
    }
}

//! The call-tree query: building the (focused, inverted) tree of a selection and
//! folding it to a node budget.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::build::Sums;
use super::*;

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
        let view = self.view(filter.native);
        let sel = self.select(filter)?;
        let weighted: Vec<u32> = (0..self.stack_proc.len() as u32)
            .filter(|&s| sel.weights[s as usize].iter().any(|&w| w > 0))
            .collect();

        let mut matched = 0u64;
        if let Some(pred) = matches {
            let mut cache: Vec<Option<bool>> = vec![None; self.functions.len()];
            for &s in &weighted {
                let hit = self.stack(filter.native, s).iter().any(|&f| {
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
                    .map(|&s| (view.node[s as usize], s))
                    .collect();
                (&view.full, &view.shape, ends)
            } else {
                let mut t = Trie::new();
                let mut ends = Vec::new();
                for &s in &weighted {
                    let st = self.stack(filter.native, s);
                    let node = match (&focus, opts.invert) {
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
}

//! Comparing two profiles (issue 13): a differential call tree (the profile's tree with
//! the base profile's weights beside it, paths matched by function name and module) and
//! the functions whose share changed most. Shares, not weights: the two runs may differ
//! in length and sampling rate.
//!
//! Used by the server (`/api/v1/profiles/{id}/diff?base=…`, the `/compare` page) and by
//! `prof report A --diff B`.

use std::collections::HashMap;

use serde::Serialize;

use crate::tree::{CallTree, Filter, Function, ProfileIndex, QueryError, TIERS};

/// A call tree of the profile with the base's weights matched onto it, nodes in
/// preorder (siblings by the profile's total, then the base's). Nodes only the base has
/// are included (with `total` 0), so that what disappeared can be seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffTree {
    /// Root weights of the profile and the base.
    pub total: u64,
    pub base_total: u64,
    /// `functions[0]` is the root.
    pub functions: Vec<Function>,
    pub parent: Vec<i64>,
    pub func: Vec<u32>,
    /// Per node: self and total weight in the profile...
    #[serde(rename = "self")]
    pub self_: Vec<u64>,
    pub total_weight: Vec<u64>,
    /// ... and in the base.
    pub base_self: Vec<u64>,
    pub base_total_weight: Vec<u64>,
    /// Per node, [`TIERS`] weights of the profile (as in [`CallTree::tiers`]).
    pub tiers: Vec<u64>,
}

/// Merges two call trees (of the same filter over two profiles) by path.
pub fn diff_tree(a: &CallTree, base: &CallTree) -> DiffTree {
    // Nodes of the merged tree: keyed by (parent, function name, module).
    struct Node {
        func: (String, String),
        fref: Function,
        a: (u64, u64),
        b: (u64, u64),
        tiers: [u64; TIERS],
        children: Vec<usize>,
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<(i64, String, String), usize> = HashMap::new();
    let mut add = |t: &CallTree, is_base: bool, nodes: &mut Vec<Node>| {
        let mut map = vec![0usize; t.parent.len()];
        for i in 0..t.parent.len() {
            let f = &t.functions[t.func[i] as usize];
            let parent = if t.parent[i] < 0 {
                -1
            } else {
                map[t.parent[i] as usize] as i64
            };
            let key = (parent, f.name.clone(), f.module.clone());
            let n = *index.entry(key).or_insert_with(|| {
                nodes.push(Node {
                    func: (f.name.clone(), f.module.clone()),
                    fref: f.clone(),
                    a: (0, 0),
                    b: (0, 0),
                    tiers: [0; TIERS],
                    children: Vec::new(),
                });
                let n = nodes.len() - 1;
                if parent >= 0 {
                    nodes[parent as usize].children.push(n);
                }
                n
            });
            map[i] = n;
            let w = (t.self_[i], t.total_weight[i]);
            if is_base {
                nodes[n].b = w;
            } else {
                nodes[n].a = w;
                nodes[n]
                    .tiers
                    .copy_from_slice(&t.tiers[i * TIERS..(i + 1) * TIERS]);
            }
        }
    };
    add(a, false, &mut nodes);
    add(base, true, &mut nodes);

    let mut out = DiffTree {
        total: a.total,
        base_total: base.total,
        functions: Vec::new(),
        parent: Vec::with_capacity(nodes.len()),
        func: Vec::with_capacity(nodes.len()),
        self_: Vec::with_capacity(nodes.len()),
        total_weight: Vec::with_capacity(nodes.len()),
        base_self: Vec::with_capacity(nodes.len()),
        base_total_weight: Vec::with_capacity(nodes.len()),
        tiers: Vec::with_capacity(nodes.len() * TIERS),
    };
    if nodes.is_empty() {
        return out;
    }
    let mut fmap: HashMap<(String, String), u32> = HashMap::new();
    let mut work = vec![(0usize, -1i64)];
    while let Some((n, parent_out)) = work.pop() {
        let me = out.parent.len() as i64;
        let node = &nodes[n];
        let f = *fmap.entry(node.func.clone()).or_insert_with(|| {
            out.functions.push(node.fref.clone());
            out.functions.len() as u32 - 1
        });
        out.parent.push(parent_out);
        out.func.push(f);
        out.self_.push(node.a.0);
        out.total_weight.push(node.a.1);
        out.base_self.push(node.b.0);
        out.base_total_weight.push(node.b.1);
        out.tiers.extend_from_slice(&node.tiers);
        let mut kids = node.children.clone();
        kids.sort_by(|&x, &y| {
            let (nx, ny) = (&nodes[x], &nodes[y]);
            ny.a.1
                .cmp(&nx.a.1)
                .then(ny.b.1.cmp(&nx.b.1))
                .then_with(|| nx.func.cmp(&ny.func))
        });
        work.extend(kids.iter().rev().map(|&c| (c, me)));
    }
    out
}

/// One function's shares in the profile and in the base (fractions of each one's
/// selected weight).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta {
    pub name: String,
    pub module: String,
    #[serde(rename = "self")]
    pub self_: f64,
    pub base_self: f64,
    pub total: f64,
    pub base_total: f64,
}

impl FunctionDelta {
    pub fn delta_self(&self) -> f64 {
        self.self_ - self.base_self
    }

    pub fn delta_total(&self) -> f64 {
        self.total - self.base_total
    }
}

/// Every function of either profile with its shares, biggest change of self share first
/// (then of total share).
pub fn diff_functions(
    a: &ProfileIndex,
    base: &ProfileIndex,
    filter: &Filter,
    base_filter: &Filter,
) -> Result<Vec<FunctionDelta>, QueryError> {
    let ra = a.functions(filter)?;
    let rb = match base.functions(base_filter) {
        Ok(r) => r,
        // A focus on a function the base never ran: nothing of the base matches.
        Err(QueryError::NoFunction(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let ta: u64 = ra.iter().map(|r| r.self_).sum();
    let tb: u64 = rb.iter().map(|r| r.self_).sum();
    let share = |w: u64, t: u64| if t == 0 { 0.0 } else { w as f64 / t as f64 };
    let mut by: HashMap<(String, String), FunctionDelta> = HashMap::new();
    for r in &ra {
        by.insert(
            (r.function.name.clone(), r.function.module.clone()),
            FunctionDelta {
                name: r.function.name.clone(),
                module: r.function.module.clone(),
                self_: share(r.self_, ta),
                base_self: 0.0,
                total: share(r.total, ta),
                base_total: 0.0,
            },
        );
    }
    for r in &rb {
        let d = by
            .entry((r.function.name.clone(), r.function.module.clone()))
            .or_insert_with(|| FunctionDelta {
                name: r.function.name.clone(),
                module: r.function.module.clone(),
                self_: 0.0,
                base_self: 0.0,
                total: 0.0,
                base_total: 0.0,
            });
        d.base_self = share(r.self_, tb);
        d.base_total = share(r.total, tb);
    }
    let mut out: Vec<FunctionDelta> = by.into_values().collect();
    out.sort_by(|x, y| {
        y.delta_self()
            .abs()
            .total_cmp(&x.delta_self().abs())
            .then(y.delta_total().abs().total_cmp(&x.delta_total().abs()))
            .then_with(|| x.name.cmp(&y.name))
            .then_with(|| x.module.cmp(&y.module))
    });
    Ok(out)
}

/// The text report of `prof report A --diff B`: the `top` biggest changes.
pub fn render_diff_text(rows: &[FunctionDelta], top: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>8} {:>8} {:>8} {:>8} {:>8}  function (module)",
        "Δself", "self", "base", "Δtotal", "total"
    );
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let signed = |x: f64| format!("{:+.1}%", x * 100.0);
    for r in rows.iter().take(top) {
        let _ = writeln!(
            o,
            "{:>8} {:>8} {:>8} {:>8} {:>8}  {} ({})",
            signed(r.delta_self()),
            pct(r.self_),
            pct(r.base_self),
            signed(r.delta_total()),
            pct(r.total),
            r.name,
            r.module
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(rows: &[(i64, &str, u64, u64)]) -> CallTree {
        let mut functions = vec![Function {
            name: "all".into(),
            module: String::new(),
            file: None,
            line: None,
        }];
        let mut func = Vec::new();
        for &(_, name, _, _) in rows {
            if name == "all" {
                func.push(0);
                continue;
            }
            let i = functions
                .iter()
                .position(|f| f.name == name)
                .unwrap_or_else(|| {
                    functions.push(Function {
                        name: name.into(),
                        module: "m".into(),
                        file: None,
                        line: None,
                    });
                    functions.len() - 1
                });
            func.push(i as u32);
        }
        CallTree {
            total: rows[0].3,
            matched: 0,
            functions,
            parent: rows.iter().map(|r| r.0).collect(),
            func,
            self_: rows.iter().map(|r| r.2).collect(),
            total_weight: rows.iter().map(|r| r.3).collect(),
            tiers: rows.iter().flat_map(|r| [r.3, 0, 0, 0, 0, 0]).collect(),
            folded_nodes: 0,
        }
    }

    #[test]
    fn merges_by_path_and_keeps_what_only_the_base_has() {
        let a = tree(&[(-1, "all", 0, 10), (0, "main", 2, 10), (1, "f", 8, 8)]);
        let b = tree(&[(-1, "all", 0, 20), (0, "main", 10, 20), (1, "g", 10, 10)]);
        let d = diff_tree(&a, &b);
        let names: Vec<&str> = d
            .func
            .iter()
            .map(|&f| d.functions[f as usize].name.as_str())
            .collect();
        assert_eq!(names, ["all", "main", "f", "g"]);
        assert_eq!(d.parent, [-1, 0, 1, 1]);
        assert_eq!(d.total_weight, [10, 10, 8, 0]);
        assert_eq!(d.base_total_weight, [20, 20, 0, 10]);
        assert_eq!((d.total, d.base_total), (10, 20));
    }

    #[test]
    fn text_report_signs_the_change() {
        let rows = vec![FunctionDelta {
            name: "f".into(),
            module: "m".into(),
            self_: 0.5,
            base_self: 0.25,
            total: 0.5,
            base_total: 0.75,
        }];
        let t = render_diff_text(&rows, 10);
        assert!(t.contains("+25.0%"), "{t}");
        assert!(t.contains("-25.0%"), "{t}");
    }
}

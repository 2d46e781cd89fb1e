//! A static flamegraph SVG (icicle: the root on top, callees below), each frame coloured
//! by the tier most of its time was spent in, with a tooltip (`<title>`) giving its
//! weight, share, tier split and source location. Built from the same call tree the
//! server sends the viewer ([`crate::tree::ProfileIndex::tree`]).

use std::fmt::Write as _;

use prof_format::Profile;

use super::tier_color;
use crate::analysis::Analysis;
use crate::tiers::Tier;
use crate::tree::{CallTree, Filter, ProfileIndex, TreeOptions, TIERS};

const WIDTH: f64 = 1200.0;
const ROW: f64 = 17.0;
const TOP: f64 = 60.0;
const PAD: f64 = 10.0;
/// Frames narrower than this many pixels are left out (with their callees).
const MIN_PX: f64 = 0.3;

/// XML text escaping.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 forbids.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            '\u{FFFE}' | '\u{FFFF}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The full call tree of every sample, folded to at most `max_nodes` nodes.
pub(crate) fn full_tree(profile: &Profile, analysis: &Analysis, max_nodes: usize) -> CallTree {
    let index = ProfileIndex::new(profile, analysis);
    index
        .tree(
            &Filter::default(),
            &TreeOptions {
                invert: false,
                max_nodes,
            },
            None,
        )
        .unwrap_or_else(|_| CallTree {
            total: 0,
            matched: 0,
            functions: Vec::new(),
            parent: Vec::new(),
            func: Vec::new(),
            self_: Vec::new(),
            total_weight: Vec::new(),
            tiers: Vec::new(),
            folded_nodes: 0,
        })
}

/// The tier with the most weight at node `n`.
pub(crate) fn dominant_tier(t: &CallTree, n: usize) -> Tier {
    let counts = t.tiers.get(n * TIERS..(n + 1) * TIERS).unwrap_or(&[]);
    let mut best = (0u64, Tier::Native);
    for (i, &c) in counts.iter().enumerate() {
        if c > best.0 {
            best = (c, Tier::ALL[i]);
        }
    }
    best.1
}

/// "interpreter 30.0%, jit 70.0%" for node `n`.
pub(crate) fn tier_split(t: &CallTree, n: usize) -> String {
    let counts = t.tiers.get(n * TIERS..(n + 1) * TIERS).unwrap_or(&[]);
    let total: u64 = counts.iter().sum();
    let mut parts = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && total > 0 {
            parts.push(format!(
                "{} {:.1}%",
                Tier::ALL[i].name(),
                c as f64 * 100.0 / total as f64
            ));
        }
    }
    parts.join(", ")
}

pub fn svg(profile: &Profile, analysis: &Analysis, title: &str) -> String {
    let t = full_tree(profile, analysis, 20_000);
    let n = t.parent.len();
    let total = t.total.max(1) as f64;
    let scale = (WIDTH - 2.0 * PAD) / total;
    // x (in weight units) and depth of every node; nodes are in preorder.
    let mut x = vec![0u64; n];
    let mut next = vec![0u64; n];
    let mut depth = vec![0usize; n];
    let mut shown = vec![n > 0; n];
    let mut max_depth = 0;
    for i in 1..n {
        let Ok(p) = usize::try_from(t.parent[i]) else {
            continue;
        };
        if p >= i {
            continue;
        }
        x[i] = next[p];
        next[p] += t.total_weight[i];
        next[i] = x[i];
        depth[i] = depth[p] + 1;
        shown[i] = shown[p] && t.total_weight[i] as f64 * scale >= MIN_PX;
        if shown[i] {
            max_depth = max_depth.max(depth[i]);
        }
    }
    let height = TOP + (max_depth + 1) as f64 * ROW + 40.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Verdana, sans-serif" font-size="12">
<style>.f:hover rect {{ stroke: #000; stroke-width: 1; }} text {{ pointer-events: none; }}</style>
<rect x="0" y="0" width="{w}" height="{h}" fill="#fcfcfc"/>
<text x="{cx}" y="22" text-anchor="middle" font-size="16">{title}</text>
"##,
        w = WIDTH,
        h = height,
        cx = WIDTH / 2.0,
        title = esc(title)
    );
    // Legend: tiers present, with their share of all samples.
    let mut lx = PAD;
    for (k, tier) in Tier::ALL.iter().enumerate() {
        // The root's tier counts: the whole profile's.
        let w = t.tiers.get(k).copied().unwrap_or(0);
        if w == 0 {
            continue;
        }
        let label = format!("{} {:.1}%", tier.name(), w as f64 * 100.0 / total);
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="34" width="12" height="12" fill="{c}"/><text x="{tx}" y="45">{label}</text>"##,
            c = tier_color(*tier),
            tx = lx + 16.0
        );
        lx += 16.0 + label.len() as f64 * 7.5 + 14.0;
    }
    for i in 0..n {
        if !shown[i] {
            continue;
        }
        let f = t.func.get(i).and_then(|&f| t.functions.get(f as usize));
        let (name, module, file, line) = match f {
            Some(f) => (
                f.name.as_str(),
                f.module.as_str(),
                f.file.as_deref(),
                f.line,
            ),
            None => ("?", "", None, None),
        };
        let px = PAD + x[i] as f64 * scale;
        let pw = t.total_weight[i] as f64 * scale;
        let py = TOP + depth[i] as f64 * ROW;
        let share = t.total_weight[i] as f64 * 100.0 / total;
        let mut tip = name.to_string();
        if !module.is_empty() {
            let _ = write!(tip, " ({module})");
        }
        let _ = write!(
            tip,
            "\ntotal {} ({share:.2}%), self {}",
            t.total_weight[i],
            t.self_.get(i).copied().unwrap_or(0)
        );
        let split = tier_split(&t, i);
        if !split.is_empty() {
            let _ = write!(tip, "\n{split}");
        }
        if let Some(file) = file {
            let _ = write!(tip, "\n{file}");
            if let Some(l) = line {
                let _ = write!(tip, ":{l}");
            }
        }
        let _ = write!(
            out,
            r##"<g class="f"><title>{}</title><rect x="{px:.2}" y="{py}" width="{pw:.2}" height="{h}" rx="2" fill="{c}"/>"##,
            esc(&tip),
            h = ROW - 1.0,
            c = tier_color(dominant_tier(&t, i)),
        );
        let chars = ((pw - 6.0) / 7.0).floor();
        if chars >= 3.0 {
            let chars = chars as usize;
            let label: String = if name.chars().count() > chars {
                let mut s: String = name.chars().take(chars.saturating_sub(2)).collect();
                s.push_str("..");
                s
            } else {
                name.to_string()
            };
            let _ = write!(
                out,
                r##"<text x="{:.2}" y="{:.1}">{}</text>"##,
                px + 3.0,
                py + ROW - 5.0,
                esc(&label)
            );
        }
        out.push_str("</g>\n");
    }
    let _ = writeln!(
        out,
        r##"<text x="{PAD}" y="{}" font-size="11" fill="#555">{} samples (weight); prof {}</text>"##,
        height - 12.0,
        t.total,
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("</svg>\n");
    out
}

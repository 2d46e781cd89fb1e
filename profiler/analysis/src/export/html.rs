//! One self-contained HTML file: an interactive flamegraph (canvas and vanilla
//! JavaScript, no dependencies, works offline) with the profile's call tree and tier
//! timeline inlined as JSON. Click to zoom, Esc to zoom out, search by regular
//! expression with the share of samples matched, tooltips with each frame's tier split,
//! a colour-blind-safe tier legend, dark mode from the system setting.
//!
//! The data block (`<script id="prof-data" type="application/json">`) holds the same
//! compact call-tree columns the server's tree endpoint returns
//! ([`crate::tree::CallTree`]): `parent`, `func`, `self`, `total`, `tierCounts` (per node,
//! one count per tier in `tiers` order) and `functions` (`[name, module, file, line]`),
//! plus `timeline` (`buckets`, `counts`, `bucket_s`, `start_s`, `axis`).

use prof_format::Profile;
use serde::Serialize;

use super::svg::esc;
use super::{tier_color, ExportError};
use crate::analysis::Analysis;
use crate::tiers::Tier;
use crate::tree::{Filter, ProfileIndex, TreeOptions};

const TEMPLATE: &str = include_str!("flamegraph.html");
/// The viewer's flamegraph layout (one layout for the viewer and this export), an ES
/// module: inlined into the page's script with its `export`s dropped.
const LAYOUT: &str = include_str!("../../../../web/layout.js");

fn layout_script() -> String {
    LAYOUT
        .replace("export function nodeAt(", "function layoutNodeAt(")
        .replace("export function ", "function ")
}

/// Most call-tree nodes inlined (lighter subtrees are folded into `[other]`).
const MAX_NODES: usize = 50_000;
/// Buckets of the tier timeline.
const TIMELINE_BUCKETS: usize = 200;

#[derive(Serialize)]
struct TierInfo {
    name: &'static str,
    color: &'static str,
}

#[derive(Serialize)]
struct TimelineData {
    axis: &'static str,
    start_s: f64,
    bucket_s: f64,
    buckets: usize,
    counts: Vec<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    title: &'a str,
    info: String,
    /// Nanoseconds one unit of weight stands for (0: unknown).
    ns_per_weight: u64,
    tiers: Vec<TierInfo>,
    functions: Vec<(String, String, Option<String>, Option<u32>)>,
    parent: Vec<i64>,
    func: Vec<u32>,
    #[serde(rename = "self")]
    self_: Vec<u64>,
    total: Vec<u64>,
    tier_counts: Vec<u64>,
    timeline: TimelineData,
}

/// JSON that can sit inside a `<script>` element (no `</script>`, no `<!--`).
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

pub fn html(profile: &Profile, analysis: &Analysis, title: &str) -> Result<String, ExportError> {
    let index = ProfileIndex::new(profile, analysis);
    let filter = Filter::default();
    let tree = index
        .tree(
            &filter,
            &TreeOptions {
                invert: false,
                max_nodes: MAX_NODES,
            },
            None,
        )
        .map_err(|e| ExportError::Encode {
            format: "html",
            reason: e.to_string(),
        })?;
    let timeline = index
        .timeline(&filter, TIMELINE_BUCKETS)
        .map(|t| TimelineData {
            axis: t.axis.name(),
            start_s: t.start_s,
            bucket_s: t.bucket_s,
            buckets: t.buckets,
            counts: t.counts,
        })
        .unwrap_or(TimelineData {
            axis: "cpu",
            start_s: 0.0,
            bucket_s: 0.0,
            buckets: 0,
            counts: Vec::new(),
        });
    let summary = analysis.summary();
    let periods: Vec<u64> = profile.processes.iter().map(|p| p.info.period_ns).collect();
    let ns_per_weight = match periods.first() {
        Some(&p) if p > 0 && periods.iter().all(|&q| q == p) => p,
        _ => 0,
    };
    let mut info = format!(
        "{} samples (weight {}), {} process{}, {} thread{}, {:.2} s, {} mode",
        summary.samples,
        summary.weight,
        summary.processes.len(),
        if summary.processes.len() == 1 {
            ""
        } else {
            "es"
        },
        summary.threads.len(),
        if summary.threads.len() == 1 { "" } else { "s" },
        summary.duration_s,
        summary.mode
    );
    if tree.folded_nodes > 0 {
        info.push_str(&format!(
            "; {} light call-tree nodes folded into [other]",
            tree.folded_nodes
        ));
    }
    let data = Data {
        title,
        info,
        ns_per_weight,
        tiers: Tier::ALL
            .iter()
            .map(|&t| TierInfo {
                name: t.name(),
                color: tier_color(t),
            })
            .collect(),
        functions: tree
            .functions
            .iter()
            .map(|f| (f.name.clone(), f.module.clone(), f.file.clone(), f.line))
            .collect(),
        parent: tree.parent,
        func: tree.func,
        self_: tree.self_,
        total: tree.total_weight,
        tier_counts: tree.tiers,
        timeline,
    };
    let json = serde_json::to_string(&data).map_err(|e| ExportError::Encode {
        format: "html",
        reason: e.to_string(),
    })?;
    Ok(fill(
        TEMPLATE,
        &[
            (
                "{{GENERATOR}}",
                format!("prof {}", env!("CARGO_PKG_VERSION")),
            ),
            ("{{TITLE}}", esc(title)),
            ("{{DATA}}", script_safe(&json)),
            ("{{LAYOUT}}", layout_script()),
        ],
    ))
}

/// Replaces each marker of `template` by its value in one pass (a value that contains a
/// marker is not expanded again).
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some((at, (marker, value))) = values
        .iter()
        .filter_map(|v| rest.find(v.0).map(|i| (i, v)))
        .min_by_key(|(i, _)| *i)
    {
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + marker.len()..];
    }
    out.push_str(rest);
    out
}

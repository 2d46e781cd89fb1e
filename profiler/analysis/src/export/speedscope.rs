//! speedscope's file format (https://www.speedscope.app/file-format-schema.json): shared
//! frames with file and line, and one "sampled" profile per thread whose samples are in
//! time order (speedscope's "Time Order" view shows them as taken). Weights are
//! nanoseconds of CPU time (wall time in wall mode): a sample's weight times its
//! process's period; profiles imported without a period (folded stacks) use the unit
//! "none" and plain sample weights.

use std::collections::HashMap;

use prof_format::Profile;
use serde::Serialize;

use super::{command, thread_names, Stacks};
use crate::analysis::{Analysis, FrameId, NO_STACK};

pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<SampledProfile>,
    name: &'a str,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<SsFrame>,
}

#[derive(Serialize)]
struct SsFrame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct SampledProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

pub fn speedscope(profile: &Profile, analysis: &Analysis, title: &str) -> String {
    let mut frames: Vec<SsFrame> = Vec::new();
    let mut index: HashMap<FrameId, usize> = HashMap::new();
    let mut no_stack: Option<usize> = None;
    let mut stacks = Stacks::new(analysis);
    let timed = profile.processes.iter().any(|p| p.info.period_ns > 0);
    let mut profiles: Vec<(u64, SampledProfile)> = Vec::new();

    for (pi, p) in profile.processes.iter().enumerate() {
        let names = thread_names(p);
        let period = p.info.period_ns;
        // Samples of each thread, in time order.
        let mut by_tid: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, s) in p.samples.iter().enumerate() {
            by_tid.entry(s.tid).or_default().push(i);
        }
        let mut tids: Vec<u32> = by_tid.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            let mut idx = by_tid.remove(&tid).unwrap_or_default();
            idx.sort_by_key(|&i| p.samples[i].time_ns);
            let mut sp = SampledProfile {
                kind: "sampled",
                name: format!(
                    "{} (pid {}): {} (tid {tid})",
                    command(p),
                    p.info.pid,
                    names.get(&tid).map(String::as_str).unwrap_or("thread")
                ),
                unit: if timed { "nanoseconds" } else { "none" },
                start_value: 0,
                end_value: 0,
                samples: Vec::with_capacity(idx.len()),
                weights: Vec::with_capacity(idx.len()),
            };
            let mut total = 0u64;
            for &i in &idx {
                let s = &p.samples[i];
                let ids = stacks.get(pi, s.leaf);
                let stack: Vec<usize> = if ids.is_empty() {
                    vec![*no_stack.get_or_insert_with(|| {
                        frames.push(SsFrame {
                            name: NO_STACK.into(),
                            file: None,
                            line: None,
                        });
                        frames.len() - 1
                    })]
                } else {
                    ids.iter()
                        .map(|&id| {
                            *index.entry(id).or_insert_with(|| {
                                let f = analysis.frame(id);
                                let file = f
                                    .file
                                    .clone()
                                    .or_else(|| (!f.module.is_empty()).then(|| f.module.clone()));
                                frames.push(SsFrame {
                                    name: f.name.clone(),
                                    file,
                                    line: f.line,
                                });
                                frames.len() - 1
                            })
                        })
                        .collect()
                };
                let w = if timed {
                    (s.weight as u64).saturating_mul(period)
                } else {
                    s.weight as u64
                };
                total = total.saturating_add(w);
                sp.samples.push(stack);
                sp.weights.push(w);
            }
            if timed {
                let first = idx.first().map(|&i| p.samples[i].time_ns).unwrap_or(0);
                let last = idx.last().map(|&i| p.samples[i].time_ns).unwrap_or(0);
                // At least the summed weights: speedscope lays samples end to end.
                let span = (last - first).saturating_add(period).max(total);
                sp.start_value = first;
                sp.end_value = first.saturating_add(span);
            } else {
                sp.end_value = total;
            }
            profiles.push((total, sp));
        }
    }
    let active = profiles
        .iter()
        .enumerate()
        .max_by_key(|(i, (w, _))| (*w, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames },
        profiles: profiles.into_iter().map(|(_, p)| p).collect(),
        name: title,
        active_profile_index: active,
        exporter: format!("prof {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_string(&file).unwrap_or_default()
}

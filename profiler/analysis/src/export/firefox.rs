//! The Firefox Profiler's processed profile format, written with the
//! `fxprof-processed-profile` crate (the writer samply uses), so the JSON is what
//! profiler.firefox.com expects. Every process and thread keeps its samples in time order;
//! each tier (interpreter, warmup, jit, native, gc, kernel) is a category, and a sample's
//! frames carry its tier, so the activity graph and the call tree are coloured by tier.
//! The crate leaves functions' files and lines empty; they are filled in afterwards from
//! the frames.

use std::collections::HashMap;

use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CpuDelta, Frame as FxFrame, FrameFlags, FrameInfo,
    Profile as FxProfile, ReferenceTimestamp, SamplingInterval, Timestamp,
};
use prof_format::Profile;
use serde_json::Value;

use super::{command, thread_names, ExportError, Stacks};
use crate::analysis::{Analysis, NO_STACK};
use crate::tiers::Tier;

fn color(t: Tier) -> CategoryColor {
    match t {
        Tier::Interpreter => CategoryColor::Red,
        Tier::Warmup => CategoryColor::Orange,
        Tier::Jit => CategoryColor::Green,
        Tier::Native => CategoryColor::Blue,
        Tier::Gc => CategoryColor::Purple,
        Tier::Kernel => CategoryColor::Gray,
    }
}

pub fn firefox(profile: &Profile, analysis: &Analysis, title: &str) -> Result<String, ExportError> {
    let reference_ns = profile
        .processes
        .iter()
        .map(|p| p.info.start_unix_ns)
        .min()
        .unwrap_or(0);
    let interval_ns = profile
        .processes
        .iter()
        .map(|p| p.info.period_ns)
        .find(|&p| p > 0)
        .unwrap_or(1_000_000);
    let mut fx = FxProfile::new(
        title,
        ReferenceTimestamp::from_millis_since_unix_epoch(reference_ns as f64 / 1e6),
        SamplingInterval::from_nanos(interval_ns),
    );
    let categories: HashMap<Tier, CategoryHandle> = Tier::ALL
        .iter()
        .map(|&t| (t, fx.add_category(t.name(), color(t))))
        .collect();
    // Where each function name was seen first: (file, line).
    let mut locations: HashMap<String, (Option<String>, Option<u32>)> = HashMap::new();
    let mut stacks = Stacks::new(analysis);

    for (pi, p) in profile.processes.iter().enumerate() {
        if p.samples.is_empty() {
            continue;
        }
        let names = thread_names(p);
        let start = p.info.start_unix_ns.saturating_sub(reference_ns);
        let process = fx.add_process(
            &command(p),
            p.info.pid,
            Timestamp::from_nanos_since_reference(start),
        );
        let end = p
            .end
            .map(|e| e.duration_ns)
            .unwrap_or_else(|| p.samples.iter().map(|s| s.time_ns).max().unwrap_or(0));
        fx.set_process_end_time(process, Timestamp::from_nanos_since_reference(start + end));
        let mut by_tid: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, s) in p.samples.iter().enumerate() {
            by_tid.entry(s.tid).or_default().push(i);
        }
        let mut tids: Vec<u32> = by_tid.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            let mut idx = by_tid.remove(&tid).unwrap_or_default();
            idx.sort_by_key(|&i| p.samples[i].time_ns);
            let first = idx.first().map(|&i| p.samples[i].time_ns).unwrap_or(0);
            let is_main = tid == p.info.pid;
            let thread = fx.add_thread(
                process,
                tid,
                Timestamp::from_nanos_since_reference(start + first),
                is_main,
            );
            let tname = names
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| format!("thread {tid}"));
            fx.set_thread_name(thread, &tname);
            for &i in &idx {
                let s = &p.samples[i];
                let tier = analysis.sample_tier_at(pi, s.tid, s.leaf, s.time_ns);
                let category = categories[&tier].into();
                let ids = stacks.get(pi, s.leaf).to_vec();
                let mut frames: Vec<FrameInfo> = Vec::with_capacity(ids.len().max(1));
                if ids.is_empty() {
                    frames.push(FrameInfo {
                        frame: FxFrame::Label(fx.intern_string(NO_STACK)),
                        category_pair: category,
                        flags: FrameFlags::empty(),
                    });
                }
                for id in ids {
                    let f = analysis.frame(id);
                    locations
                        .entry(f.name.clone())
                        .or_insert_with(|| (f.file.clone(), f.line));
                    frames.push(FrameInfo {
                        frame: FxFrame::Label(fx.intern_string(&f.name)),
                        category_pair: category,
                        flags: FrameFlags::empty(),
                    });
                }
                let stack = fx.intern_stack_frames(thread, frames.into_iter());
                let w = s.weight.max(1);
                let cpu = CpuDelta::from_nanos((w as u64).saturating_mul(p.info.period_ns));
                fx.add_sample(
                    thread,
                    Timestamp::from_nanos_since_reference(start + s.time_ns),
                    stack,
                    cpu,
                    i32::try_from(w).unwrap_or(i32::MAX),
                );
            }
        }
    }
    let mut v = serde_json::to_value(&fx).map_err(|e| ExportError::Encode {
        format: "firefox",
        reason: e.to_string(),
    })?;
    fill_locations(&mut v, &locations);
    serde_json::to_string(&v).map_err(|e| ExportError::Encode {
        format: "firefox",
        reason: e.to_string(),
    })
}

/// Sets every thread's `funcTable.fileName`/`lineNumber` from the frames' locations
/// (strings appended to the thread's `stringArray`).
fn fill_locations(v: &mut Value, locations: &HashMap<String, (Option<String>, Option<u32>)>) {
    let Some(threads) = v.get_mut("threads").and_then(Value::as_array_mut) else {
        return;
    };
    for t in threads {
        let Some(obj) = t.as_object_mut() else {
            continue;
        };
        let strings: Vec<String> = obj
            .get("stringArray")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let names: Vec<Option<usize>> = obj
            .get("funcTable")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|n| n.as_u64().map(|n| n as usize)).collect())
            .unwrap_or_default();
        let mut extra: Vec<String> = Vec::new();
        let mut file_col: Vec<Value> = Vec::with_capacity(names.len());
        let mut line_col: Vec<Value> = Vec::with_capacity(names.len());
        let mut file_ids: HashMap<String, usize> = HashMap::new();
        for n in &names {
            let loc = n
                .and_then(|n| strings.get(n))
                .and_then(|name| locations.get(name));
            match loc {
                Some((file, line)) => {
                    file_col.push(match file {
                        Some(f) => {
                            let next = strings.len() + extra.len();
                            let id = *file_ids.entry(f.clone()).or_insert_with(|| {
                                extra.push(f.clone());
                                next
                            });
                            Value::from(id)
                        }
                        None => Value::Null,
                    });
                    line_col.push(line.map(Value::from).unwrap_or(Value::Null));
                }
                None => {
                    file_col.push(Value::Null);
                    line_col.push(Value::Null);
                }
            }
        }
        if let Some(Value::Array(a)) = obj.get_mut("stringArray") {
            a.extend(extra.into_iter().map(Value::from));
        }
        if let Some(ft) = obj.get_mut("funcTable").and_then(Value::as_object_mut) {
            ft.insert("fileName".into(), Value::Array(file_col));
            ft.insert("lineNumber".into(), Value::Array(line_col));
        }
    }
}

//! pprof's `profile.proto` (github.com/google/pprof, proto/profile.proto; the messages
//! are in `proto.rs`), encoded with prost and gzipped, as `go tool pprof` reads it.
//!
//! - sample types: `samples/count` (sampling periods) and `cpu/nanoseconds` (`wall` in
//!   wall mode); profiles without a period (imported folded stacks) have only the count;
//! - one mapping (the first process's executable) that says every location is already
//!   symbolized, with functions, files, lines and inlined frames;
//! - one function per (name, file or module) with its file and line, one location per
//!   distinct frame (so inlined functions are their own locations, innermost first as
//!   pprof wants);
//! - one sample per (process, thread, stack), labelled `tier` (interpreter, warmup, jit,
//!   native, gc, kernel), `thread` (name), `tid` and `pid`.

use std::collections::HashMap;
use std::io::Write;

use prof_format::{Mode, Profile};
use prost::Message;

use super::{thread_names, ExportError};
use crate::analysis::{Analysis, FrameId, NO_STACK};

pub mod proto;
use proto::{Function, Label, Line, Location, Mapping, Sample, ValueType};

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.id("");
        s
    }
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn value_type(strings: &mut Strings, kind: &str, unit: &str) -> ValueType {
    ValueType {
        r#type: strings.id(kind),
        unit: strings.id(unit),
    }
}

fn label_str(strings: &mut Strings, key: &str, value: &str) -> Label {
    Label {
        key: strings.id(key),
        str: strings.id(value),
        ..Label::default()
    }
}

fn label_num(strings: &mut Strings, key: &str, value: u64) -> Label {
    Label {
        key: strings.id(key),
        num: value.min(i64::MAX as u64) as i64,
        ..Label::default()
    }
}

/// A location holding one line of function `function_id`, in the one mapping.
fn location(id: u64, function_id: u64, line: i64) -> Location {
    Location {
        id,
        mapping_id: 1,
        line: vec![Line { function_id, line }],
        ..Location::default()
    }
}

/// pprof's values are int64: keep them in range.
fn int64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The profile as an uncompressed `profile.proto` message.
pub fn pprof_protobuf(profile: &Profile, analysis: &Analysis) -> Vec<u8> {
    pprof_message(profile, analysis).encode_to_vec()
}

/// The profile as a `profile.proto` message.
pub fn pprof_message(profile: &Profile, analysis: &Analysis) -> proto::Profile {
    let mut strings = Strings::new();
    let mut out = proto::Profile::default();
    let timed = profile.processes.iter().any(|p| p.info.period_ns > 0);
    let wall = profile
        .processes
        .first()
        .is_some_and(|p| p.info.mode == Mode::Wall);
    let time_kind = if wall { "wall" } else { "cpu" };

    out.sample_type
        .push(value_type(&mut strings, "samples", "count"));
    if timed {
        out.sample_type
            .push(value_type(&mut strings, time_kind, "nanoseconds"));
    }

    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: HashMap<FrameId, u64> = HashMap::new();
    let mut no_stack_loc: Option<u64> = None;
    let mut function_id =
        |strings: &mut Strings, out: &mut Vec<Function>, name: &str, file: &str| -> u64 {
            let key = (name.to_string(), file.to_string());
            if let Some(&id) = functions.get(&key) {
                return id;
            }
            let id = functions.len() as u64 + 1;
            let name = strings.id(name);
            out.push(Function {
                id,
                name,
                system_name: name,
                filename: strings.id(file),
                ..Function::default()
            });
            functions.insert(key, id);
            id
        };

    for (pi, p) in profile.processes.iter().enumerate() {
        let names = thread_names(p);
        let period = p.info.period_ns;
        for lw in analysis.leaf_weights(pi) {
            let ids = analysis.stack_ids(pi, lw.leaf);
            let mut loc_ids: Vec<u64> = Vec::with_capacity(ids.len().max(1));
            if ids.is_empty() {
                let id = match no_stack_loc {
                    Some(id) => id,
                    None => {
                        let f = function_id(&mut strings, &mut out.function, NO_STACK, "");
                        let id = out.location.len() as u64 + 1;
                        out.location.push(location(id, f, 0));
                        no_stack_loc = Some(id);
                        id
                    }
                };
                loc_ids.push(id);
            }
            // pprof lists a sample's locations innermost first.
            for &fid in ids.iter().rev() {
                let id = match locations.get(&fid) {
                    Some(&id) => id,
                    None => {
                        let f = analysis.frame(fid);
                        let file = f.file.as_deref().unwrap_or(&f.module);
                        let func = function_id(&mut strings, &mut out.function, &f.name, file);
                        let id = out.location.len() as u64 + 1;
                        out.location
                            .push(location(id, func, f.line.unwrap_or(0) as i64));
                        locations.insert(fid, id);
                        id
                    }
                };
                loc_ids.push(id);
            }
            // One sample per tier the stack's weight splits into (runtime phases can
            // give some of a stack's samples another tier).
            for (tier, weight) in analysis.leaf_tiers(pi, lw) {
                let mut value = vec![int64(weight)];
                if timed {
                    value.push(int64(weight.saturating_mul(period)));
                }
                let mut label = vec![label_str(&mut strings, "tier", tier.name())];
                let tname = names.get(&lw.tid).map(String::as_str).unwrap_or("");
                if !tname.is_empty() {
                    label.push(label_str(&mut strings, "thread", tname));
                }
                label.push(label_num(&mut strings, "tid", lw.tid as u64));
                label.push(label_num(&mut strings, "pid", p.info.pid as u64));
                out.sample.push(Sample {
                    location_id: loc_ids.clone(),
                    value,
                    label,
                });
            }
        }
    }
    // One mapping, the main program's, marked as already symbolized so pprof never
    // tries to symbolize the locations (which all point at it) itself.
    let exe = profile
        .processes
        .first()
        .map(|p| p.info.exe.as_str())
        .unwrap_or("");
    out.mapping.push(Mapping {
        id: 1,
        memory_limit: u64::MAX >> 1,
        filename: strings.id(exe),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
        ..Mapping::default()
    });

    let start = profile
        .processes
        .iter()
        .map(|p| p.info.start_unix_ns)
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let end = profile
        .processes
        .iter()
        .map(|p| {
            let d = p
                .end
                .map(|e| e.duration_ns)
                .unwrap_or_else(|| p.samples.iter().map(|s| s.time_ns).max().unwrap_or(0));
            p.info.start_unix_ns.saturating_add(d)
        })
        .max()
        .unwrap_or(0);
    let first = profile.processes.first();
    out.comment.push(strings.id(&format!(
        "prof {}: {}",
        env!("CARGO_PKG_VERSION"),
        super::default_title(profile)
    )));
    let period_type = value_type(&mut strings, time_kind, "nanoseconds");
    out.time_nanos = int64(start);
    out.duration_nanos = int64(end.saturating_sub(start));
    if timed {
        out.period_type = Some(period_type);
        out.period = int64(first.map(|p| p.info.period_ns).unwrap_or(0));
    }
    // Every string id above is final: the table is complete.
    out.string_table = strings.table;
    out
}

/// [`pprof_protobuf`], gzipped (what `go tool pprof` and pprof's web UI expect in a file).
pub fn pprof_protobuf_gzipped(
    profile: &Profile,
    analysis: &Analysis,
) -> Result<Vec<u8>, ExportError> {
    let raw = pprof_protobuf(profile, analysis);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .and_then(|()| gz.finish())
        .map_err(|e| ExportError::Encode {
            format: "pprof",
            reason: e.to_string(),
        })
}

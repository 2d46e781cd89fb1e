//! pprof's `profile.proto` (github.com/google/pprof, proto/profile.proto), encoded by hand
//! and gzipped, as `go tool pprof` reads it.
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

use super::{thread_names, ExportError};
use crate::analysis::{Analysis, FrameId, NO_STACK};

/// Protobuf writer: just the wire types profile.proto uses.
#[derive(Default)]
struct Pb {
    buf: Vec<u8>,
}

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    /// An int64/uint64 field (omitted when 0, as proto3 does).
    fn int(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    fn message(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.buf);
    }
    /// A packed repeated varint field.
    fn packed(&mut self, field: u32, vs: &[u64]) {
        if vs.is_empty() {
            return;
        }
        let mut inner = Pb::default();
        for &v in vs {
            inner.varint(v);
        }
        self.bytes(field, &inner.buf);
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.id("");
        s
    }
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as u64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn value_type(strings: &mut Strings, kind: &str, unit: &str) -> Pb {
    let mut m = Pb::default();
    m.int(1, strings.id(kind));
    m.int(2, strings.id(unit));
    m
}

fn label_str(strings: &mut Strings, key: &str, value: &str) -> Pb {
    let mut m = Pb::default();
    m.int(1, strings.id(key));
    m.int(2, strings.id(value));
    m
}

fn label_num(strings: &mut Strings, key: &str, value: u64) -> Pb {
    let mut m = Pb::default();
    m.int(1, strings.id(key));
    m.int(3, value);
    m
}

/// The profile as an uncompressed `profile.proto` message.
pub fn pprof_protobuf(profile: &Profile, analysis: &Analysis) -> Vec<u8> {
    let mut strings = Strings::new();
    let mut out = Pb::default();
    let timed = profile.processes.iter().any(|p| p.info.period_ns > 0);
    let wall = profile
        .processes
        .first()
        .is_some_and(|p| p.info.mode == Mode::Wall);
    let time_kind = if wall { "wall" } else { "cpu" };

    let st = value_type(&mut strings, "samples", "count");
    out.message(1, st);
    if timed {
        let st = value_type(&mut strings, time_kind, "nanoseconds");
        out.message(1, st);
    }

    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: HashMap<FrameId, u64> = HashMap::new();
    let mut func_msgs: Vec<Pb> = Vec::new();
    let mut loc_msgs: Vec<Pb> = Vec::new();
    let mut no_stack_loc: Option<u64> = None;
    let mut function_id = |strings: &mut Strings, name: &str, file: &str| -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = functions.get(&key) {
            return id;
        }
        let id = functions.len() as u64 + 1;
        let mut m = Pb::default();
        m.int(1, id);
        m.int(2, strings.id(name));
        m.int(3, strings.id(name));
        m.int(4, strings.id(file));
        func_msgs.push(m);
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
                        let f = function_id(&mut strings, NO_STACK, "");
                        let id = loc_msgs.len() as u64 + 1;
                        let mut line = Pb::default();
                        line.int(1, f);
                        let mut m = Pb::default();
                        m.int(1, id);
                        m.int(2, 1);
                        m.message(4, line);
                        loc_msgs.push(m);
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
                        let func = function_id(&mut strings, &f.name, file);
                        let id = loc_msgs.len() as u64 + 1;
                        let mut line = Pb::default();
                        line.int(1, func);
                        line.int(2, f.line.unwrap_or(0) as u64);
                        let mut m = Pb::default();
                        m.int(1, id);
                        m.int(2, 1);
                        m.message(4, line);
                        loc_msgs.push(m);
                        locations.insert(fid, id);
                        id
                    }
                };
                loc_ids.push(id);
            }
            // One sample per tier the stack's weight splits into (runtime phases can
            // give some of a stack's samples another tier).
            for (tier, weight) in analysis.leaf_tiers(pi, lw) {
                let mut s = Pb::default();
                s.packed(1, &loc_ids);
                let mut values = vec![weight];
                if timed {
                    values.push(weight.saturating_mul(period));
                }
                // Values are int64: keep them in range.
                let values: Vec<u64> = values.into_iter().map(|v| v.min(i64::MAX as u64)).collect();
                s.packed(2, &values);
                s.message(3, label_str(&mut strings, "tier", tier.name()));
                let tname = names.get(&lw.tid).map(String::as_str).unwrap_or("");
                if !tname.is_empty() {
                    s.message(3, label_str(&mut strings, "thread", tname));
                }
                s.message(3, label_num(&mut strings, "tid", lw.tid as u64));
                s.message(3, label_num(&mut strings, "pid", p.info.pid as u64));
                out.message(2, s);
            }
        }
    }
    // One mapping, the main program's, marked as already symbolized so pprof never
    // tries to symbolize the locations (which all point at it) itself.
    let mut mapping = Pb::default();
    mapping.int(1, 1);
    mapping.int(3, u64::MAX >> 1);
    let exe = profile
        .processes
        .first()
        .map(|p| p.info.exe.as_str())
        .unwrap_or("");
    mapping.int(5, strings.id(exe));
    for field in 7..=10 {
        mapping.int(field, 1);
    }
    out.message(3, mapping);
    for m in loc_msgs {
        out.message(4, m);
    }
    for m in func_msgs {
        out.message(5, m);
    }

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
    let comment = strings.id(&format!(
        "prof {}: {}",
        env!("CARGO_PKG_VERSION"),
        super::default_title(profile)
    ));
    let pt = value_type(&mut strings, time_kind, "nanoseconds");

    // The string table must be complete before it is written: every id above is final.
    for s in &strings.table {
        out.bytes(6, s.as_bytes());
    }
    out.int(9, start);
    out.int(10, end.saturating_sub(start));
    if timed {
        out.message(11, pt);
        out.int(12, first.map(|p| p.info.period_ns).unwrap_or(0));
    }
    out.packed(13, &[comment]);
    out.buf
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

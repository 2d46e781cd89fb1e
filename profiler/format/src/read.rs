//! Never-panicking reader. Every length and count is checked against the bytes present.

use crate::varint::Cursor;
use crate::{
    kind, Error, JitCode, JitPhase, JitSource, Marker, MarkerEvent, Mode, Module, Node, Notice,
    ProcessEnd, ProcessInfo, PyCode, Sample, SourceFile, SymFrame, TimerSource, HEADER_LEN, MAGIC,
    VERSION,
};

/// One record as it sits in the file.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    /// Byte offset of the record's kind byte.
    pub offset: usize,
    /// The whole record (kind, length, payload), for copying into a merged file.
    pub bytes: &'a [u8],
}

/// Everything recorded about one process.
#[derive(Debug, Clone)]
pub struct Process {
    pub info: ProcessInfo,
    pub modules: Vec<Module>,
    /// (module id) unloaded, in order.
    pub unloaded: Vec<u32>,
    /// (tid, name), latest name last.
    pub threads: Vec<(u32, String)>,
    /// Stack nodes by id; index 0 is the root placeholder.
    pub nodes: Vec<Node>,
    pub samples: Vec<Sample>,
    pub lost: u64,
    pub end: Option<ProcessEnd>,
    pub notices: Vec<Notice>,
    /// Python code objects, in the order recorded (look up by `PyCode::id`).
    pub py_code: Vec<PyCode>,
    /// JIT code entries, in the order recorded (a later entry may replace an earlier one
    /// at the same addresses).
    pub jit_code: Vec<JitCode>,
    /// Runtime phases (PyPy's tracing, GC), in the order recorded.
    pub jit_phases: Vec<JitPhase>,
    /// Symbolic frames (FRAME records), in the order recorded (look up by `SymFrame::id`).
    pub frames: Vec<SymFrame>,
    /// Marker names by id (MARKER_NAME records).
    pub marker_names: Vec<String>,
    /// Marker begin/end calls, per thread in time order (see [`Process::markers`]).
    pub marker_events: Vec<MarkerEvent>,
}

impl Process {
    fn new(info: ProcessInfo) -> Self {
        Process {
            info,
            modules: Vec::new(),
            unloaded: Vec::new(),
            threads: Vec::new(),
            nodes: vec![Node {
                parent: 0,
                kind: 0,
                value: 0,
            }],
            samples: Vec::new(),
            lost: 0,
            end: None,
            notices: Vec::new(),
            py_code: Vec::new(),
            jit_code: Vec::new(),
            jit_phases: Vec::new(),
            frames: Vec::new(),
            marker_names: Vec::new(),
            marker_events: Vec::new(),
        }
    }

    /// The marked intervals, by start time: each end closes the innermost open begin of
    /// its thread; an end with nothing open (its begin was lost) is ignored; begins still
    /// open at the end of the log have no end.
    pub fn markers(&self) -> Vec<Marker> {
        let mut open: std::collections::HashMap<u32, Vec<usize>> = Default::default();
        let mut out: Vec<Marker> = Vec::new();
        let mut cpu_start: std::collections::HashMap<usize, u64> = Default::default();
        for e in &self.marker_events {
            let stack = open.entry(e.tid).or_default();
            match (e.name, e.duration_ns) {
                (Some(id), Some(d)) => out.push(Marker {
                    name: self
                        .marker_names
                        .get(id as usize)
                        .cloned()
                        .unwrap_or_default(),
                    tid: e.tid,
                    start_ns: e.time_ns,
                    end_ns: Some(e.time_ns.saturating_add(d)),
                    cpu_ns: None,
                    depth: 0,
                }),
                (Some(id), None) => {
                    let name = self
                        .marker_names
                        .get(id as usize)
                        .cloned()
                        .unwrap_or_default();
                    stack.push(out.len());
                    cpu_start.insert(out.len(), e.cpu_ns);
                    out.push(Marker {
                        name,
                        tid: e.tid,
                        start_ns: e.time_ns,
                        end_ns: None,
                        cpu_ns: None,
                        depth: (stack.len() - 1) as u32,
                    });
                }
                (None, _) => {
                    if let Some(i) = stack.pop() {
                        let m = &mut out[i];
                        m.end_ns = Some(e.time_ns.max(m.start_ns));
                        m.cpu_ns = Some(e.cpu_ns.saturating_sub(cpu_start[&i]));
                    }
                }
            }
        }
        out.sort_by_key(|m| (m.start_ns, m.depth));
        out
    }

    /// The frames of the stack ending at `leaf`, leaf first.
    pub fn stack(&self, leaf: u32) -> impl Iterator<Item = &Node> + '_ {
        let mut id = leaf;
        std::iter::from_fn(move || {
            if id == 0 {
                return None;
            }
            let n = self.nodes.get(id as usize)?;
            id = n.parent;
            Some(n)
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub version: u16,
    pub processes: Vec<Process>,
    /// Source files of the program (SOURCE records, anywhere in the file).
    pub sources: Vec<SourceFile>,
    /// The file ended inside a record (the process was killed, or the copy was cut).
    pub truncated: bool,
}

/// What [`split_records`] found.
pub struct ReadOutcome<'a> {
    pub version: u16,
    pub records: Vec<RawRecord<'a>>,
    pub truncated: bool,
}

/// Checks the header and splits the file into whole records. A record cut by the end of
/// the file is dropped and reported as `truncated`.
pub fn split_records(bytes: &[u8]) -> Result<ReadOutcome<'_>, Error> {
    if bytes.len() < HEADER_LEN {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            return Err(Error::BadMagic);
        }
        return Err(Error::TooShort(bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version == 0 || version > VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let mut truncated = false;
    while pos < bytes.len() {
        let mut c = Cursor::new(&bytes[pos + 1..]);
        let len = match c.u64() {
            Some(l) => l,
            None => {
                // Either the length itself is cut off (truncation) or it is malformed.
                if bytes.len() - pos - 1 < 10 {
                    truncated = true;
                    break;
                }
                return Err(Error::Corrupt {
                    offset: pos,
                    what: "bad record length",
                });
            }
        };
        let hdr = 1 + varint_len(len);
        let end = match usize::try_from(len)
            .ok()
            .and_then(|l| (pos + hdr).checked_add(l))
        {
            Some(e) => e,
            None => {
                return Err(Error::Corrupt {
                    offset: pos,
                    what: "record length overflows",
                })
            }
        };
        if end > bytes.len() {
            truncated = true;
            break;
        }
        records.push(RawRecord {
            kind: bytes[pos],
            payload: &bytes[pos + hdr..end],
            offset: pos,
            bytes: &bytes[pos..end],
        });
        pos = end;
    }
    Ok(ReadOutcome {
        version,
        records,
        truncated,
    })
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Decodes a whole profile (one or more process sections).
pub fn read_profile(bytes: &[u8]) -> Result<Profile, Error> {
    let outcome = split_records(bytes)?;
    let mut profile = Profile {
        version: outcome.version,
        processes: Vec::new(),
        sources: Vec::new(),
        truncated: outcome.truncated,
    };
    for rec in outcome.records {
        let corrupt = |what| Error::Corrupt {
            offset: rec.offset,
            what,
        };
        let mut c = Cursor::new(rec.payload);
        if rec.kind == kind::SOURCE {
            // Profile-level: `prof run` appends them after every process section.
            let f = (|| {
                let path = c.string()?;
                let text = c.string()?;
                c.is_empty().then_some(SourceFile { path, text })
            })();
            profile
                .sources
                .push(f.ok_or(corrupt("malformed source record"))?);
            continue;
        }
        if rec.kind == kind::PROCESS {
            let info = decode_process(&mut c).ok_or(corrupt("bad process record"))?;
            profile.processes.push(Process::new(info));
            continue;
        }
        let known = matches!(
            rec.kind,
            kind::MODULE
                | kind::MODULE_UNLOAD
                | kind::THREAD
                | kind::NODES
                | kind::SAMPLES
                | kind::LOST
                | kind::PROCESS_END
                | kind::NOTICE
                | kind::PY_CODE
                | kind::JIT_CODE
                | kind::JIT_PHASE
                | kind::FRAME
                | kind::MARKER_NAME
                | kind::MARKERS
        );
        if !known {
            continue; // Forward compatibility: unknown kinds are skipped.
        }
        let p = profile
            .processes
            .last_mut()
            .ok_or(corrupt("record before any process record"))?;
        let ok = match rec.kind {
            kind::MODULE => decode_module(&mut c).map(|m| p.modules.push(m)),
            kind::MODULE_UNLOAD => c.u32().map(|id| p.unloaded.push(id)),
            kind::THREAD => (|| {
                let tid = c.u32()?;
                p.threads.push((tid, c.string()?));
                Some(())
            })(),
            kind::NODES => decode_nodes(&mut c, p),
            kind::SAMPLES => decode_samples(&mut c, p),
            kind::LOST => c.u64().map(|n| p.lost = p.lost.saturating_add(n)),
            kind::PROCESS_END => (|| {
                p.end = Some(ProcessEnd {
                    duration_ns: c.u64()?,
                    cpu_user_ns: c.u64()?,
                    cpu_system_ns: c.u64()?,
                    signals: c.u64()?,
                });
                Some(())
            })(),
            kind::NOTICE => c.string().map(|text| p.notices.push(Notice { text })),
            kind::PY_CODE => (|| {
                p.py_code.push(PyCode {
                    id: c.u32()?,
                    qualname: c.string()?,
                    filename: c.string()?,
                    firstlineno: c.u32()?,
                    python_minor: c.u32()?,
                    linetable: c.bytes()?.to_vec(),
                });
                Some(())
            })(),
            kind::JIT_CODE => (|| {
                let start = c.u64()?;
                let size = c.u64()?;
                start.checked_add(size)?;
                let time_ns = c.u64()?;
                let source = JitSource::from_code(c.u64()?)?;
                let name = c.string()?;
                let nodes_before = (p.nodes.len() - 1) as u32;
                p.jit_code.push(JitCode {
                    start,
                    size,
                    time_ns,
                    source,
                    name,
                    nodes_before,
                });
                c.is_empty().then_some(())
            })(),
            kind::JIT_PHASE => (|| {
                let start_ns = c.u64()?;
                let end_ns = start_ns.checked_add(c.u64()?)?;
                let name = c.string()?;
                p.jit_phases.push(JitPhase {
                    start_ns,
                    end_ns,
                    name,
                });
                c.is_empty().then_some(())
            })(),
            kind::FRAME => (|| {
                p.frames.push(SymFrame {
                    id: c.u32()?,
                    tier: c.u32()?,
                    name: c.string()?,
                    module: c.string()?,
                    file: c.string()?,
                    line: c.u32()?,
                });
                c.is_empty().then_some(())
            })(),
            kind::MARKER_NAME => (|| {
                let id = c.u32()? as usize;
                let name = c.string()?;
                // Names are numbered densely from 0; a gap or a repeat is corruption.
                (id == p.marker_names.len()).then(|| p.marker_names.push(name))?;
                c.is_empty().then_some(())
            })(),
            kind::MARKERS => decode_markers(&mut c, p),
            _ => unreachable!("filtered above"),
        };
        ok.ok_or(corrupt("malformed record payload"))?;
    }
    Ok(profile)
}

fn decode_process(c: &mut Cursor) -> Option<ProcessInfo> {
    let pid = c.u32()?;
    let ppid = c.u32()?;
    let start_unix_ns = c.u64()?;
    let period_ns = c.u64()?;
    let mode = Mode::from_code(c.u64()?)?;
    let timer = TimerSource::from_code(c.u64()?)?;
    let time_unit_ns = c.u64()?;
    if time_unit_ns == 0 {
        return None;
    }
    let max_depth = c.u32()?;
    let exe = c.string()?;
    let argc = c.count(1)?;
    let mut argv = Vec::with_capacity(argc);
    for _ in 0..argc {
        argv.push(c.string()?);
    }
    let agent_version = c.string()?;
    Some(ProcessInfo {
        pid,
        ppid,
        start_unix_ns,
        period_ns,
        mode,
        timer,
        time_unit_ns,
        max_depth,
        exe,
        argv,
        agent_version,
    })
}

fn decode_module(c: &mut Cursor) -> Option<Module> {
    let id = c.u32()?;
    let path = c.string()?;
    let build_id = c.bytes()?.to_vec();
    let bias = c.u64()?;
    let n = c.count(2)?;
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.u64()?;
        let len = c.u64()?;
        ranges.push((start, start.checked_add(len)?));
    }
    Some(Module {
        id,
        path,
        build_id,
        bias,
        ranges,
    })
}

fn decode_nodes(c: &mut Cursor, p: &mut Process) -> Option<()> {
    let first = c.u32()?;
    // Node ids are dense: a batch must continue exactly where the last one ended.
    if first as usize != p.nodes.len() {
        return None;
    }
    let n = c.count(3)?;
    p.nodes.reserve(n);
    for _ in 0..n {
        let id = p.nodes.len() as u64;
        let back = c.u64()?;
        if back == 0 || back > id {
            return None;
        }
        let parent = (id - back) as u32;
        let kind = c.u32()?;
        let base = p.nodes[parent as usize].value;
        let value = base.wrapping_add(c.i64()? as u64);
        p.nodes.push(Node {
            parent,
            kind,
            value,
        });
    }
    Some(())
}

fn decode_markers(c: &mut Cursor, p: &mut Process) -> Option<()> {
    let tid = c.u32()?;
    let mut t = c.u64()?;
    let mut cpu = c.u64()?;
    let n = c.count(3)?;
    p.marker_events.reserve(n);
    for _ in 0..n {
        t = t.checked_add(c.u64()?)?;
        cpu = cpu.wrapping_add(c.i64()? as u64);
        // 0 = end; odd = begin of name (v-1)/2; even = whole interval of name v/2-1,
        // followed by its length in ns.
        let (name, duration_ns) = match c.u64()? {
            0 => (None, None),
            v if v & 1 == 1 => (Some(v >> 1), None),
            v => (Some((v >> 1) - 1), Some(c.u64()?)),
        };
        let name = match name {
            Some(id) => {
                let id = u32::try_from(id).ok()?;
                ((id as usize) < p.marker_names.len()).then_some(())?;
                Some(id)
            }
            None => None,
        };
        p.marker_events.push(MarkerEvent {
            tid,
            time_ns: t,
            cpu_ns: cpu,
            name,
            duration_ns,
        });
    }
    c.is_empty().then_some(())
}

fn decode_samples(c: &mut Cursor, p: &mut Process) -> Option<()> {
    let unit = p.info.time_unit_ns;
    let tid = c.u32()?;
    let mut t = c.u64()?;
    let n = c.count(2)?;
    let mut leaf = 0i64;
    p.samples.reserve(n);
    for _ in 0..n {
        t = t.checked_add(c.u64()?)?;
        let head = c.u64()?;
        leaf = leaf.checked_add(crate::varint::unzigzag(head >> 1))?;
        if leaf < 0 || leaf as usize >= p.nodes.len() {
            return None;
        }
        let (weight, flags) = if head & 1 == 1 {
            (c.u32()?, c.u32()?)
        } else {
            (1, 0)
        };
        p.samples.push(Sample {
            tid,
            time_ns: t.checked_mul(unit)?,
            leaf: leaf as u32,
            weight,
            flags,
        });
    }
    if !c.is_empty() {
        return None;
    }
    Some(())
}

//! Streaming writer: records are built in memory and reach the sink whole, one flush at a
//! time, so a process killed mid-run leaves a file that reads up to its last flush.

use std::io::{self, Write};

use rustc_hash::FxHashMap as HashMap;

use crate::varint::{put_bytes, put_i64, put_u64};
use crate::{
    kind, JitCode, JitPhase, MarkerEvent, Module, Node, ProcessEnd, ProcessInfo, PyCode, SymFrame,
    HEADER_LEN, MAGIC, VERSION,
};

/// Deduplicates stacks into a tree of nodes (frame + parent), so a stack seen again costs
/// nothing and a new stack costs only the frames it does not share with earlier ones.
#[derive(Default)]
pub struct StackInterner {
    ids: HashMap<Node, u32>,
    /// Value of every node by id (index 0: the root), for delta encoding.
    values: Vec<u64>,
    /// Nodes created since the last [`StackInterner::take_new`].
    fresh: Vec<Node>,
}

impl StackInterner {
    pub fn new() -> Self {
        StackInterner {
            ids: HashMap::default(),
            values: vec![0],
            fresh: Vec::new(),
        }
    }

    /// Interns a stack given outermost frame first; returns its leaf node id (0 if empty).
    pub fn intern<I: IntoIterator<Item = (u32, u64)>>(&mut self, root_first: I) -> u32 {
        self.intern_under(0, root_first)
    }

    /// Interns frames (outermost first) below node `parent`, an id this interner returned
    /// (or 0, the root); returns the leaf node id (`parent` if there are no frames).
    pub fn intern_under<I: IntoIterator<Item = (u32, u64)>>(
        &mut self,
        parent: u32,
        root_first: I,
    ) -> u32 {
        let mut parent = parent.min(self.len() as u32);
        for (kind, value) in root_first {
            let node = Node {
                parent,
                kind,
                value,
            };
            parent = match self.ids.get(&node) {
                Some(&id) => id,
                None => {
                    let id = self.values.len() as u32;
                    self.values.push(value);
                    self.ids.insert(node, id);
                    self.fresh.push(node);
                    id
                }
            };
        }
        parent
    }

    /// Id the next new node will get.
    pub fn next_id(&self) -> u32 {
        self.values.len() as u32
    }

    /// Number of distinct nodes so far.
    pub fn len(&self) -> usize {
        self.values.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_new(&mut self) -> (u32, Vec<Node>) {
        let first = self.next_id() - self.fresh.len() as u32;
        (first, std::mem::take(&mut self.fresh))
    }

    /// Stops reusing the nodes whose value lies in `[start, end]`: a stack through those
    /// addresses interned from now on gets new nodes (and so do the frames inside it),
    /// while the old nodes keep their ids. Used when JIT code at those addresses was
    /// replaced, so that samples before and after the replacement never share a node.
    /// Returns how many nodes were retired.
    pub fn retire_values(&mut self, start: u64, end: u64) -> usize {
        let before = self.ids.len();
        self.ids.retain(|n, _| n.value < start || n.value > end);
        before - self.ids.len()
    }

    /// Forgets everything (a forked child starts a new log).
    pub fn clear(&mut self) {
        *self = StackInterner::new();
    }
}

/// One sample as the writer receives it: time in ns since process start.
#[derive(Debug, Clone, Copy)]
pub struct PendingSample {
    pub time_ns: u64,
    pub leaf: u32,
    pub weight: u32,
    pub flags: u32,
}

fn encode_jit_code(r: &mut Vec<u8>, c: &JitCode) {
    put_u64(r, c.start);
    put_u64(r, c.size.min(u64::MAX - c.start));
    put_u64(r, c.time_ns);
    put_u64(r, c.source.code());
    put_bytes(r, c.name.as_bytes());
}

pub struct LogWriter<W: Write> {
    sink: W,
    buf: Vec<u8>,
    rec: Vec<u8>,
    pub stacks: StackInterner,
    time_unit_ns: u64,
}

impl<W: Write> LogWriter<W> {
    /// Starts a log: writes the header into the buffer (reaches `sink` on [`flush`](Self::flush)).
    pub fn new(sink: W) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes());
        debug_assert_eq!(buf.len(), HEADER_LEN);
        LogWriter {
            sink,
            buf,
            rec: Vec::new(),
            stacks: StackInterner::new(),
            time_unit_ns: 1,
        }
    }

    fn emit(&mut self, kind: u8) {
        self.buf.push(kind);
        put_u64(&mut self.buf, self.rec.len() as u64);
        self.buf.extend_from_slice(&self.rec);
        self.rec.clear();
    }

    pub fn process(&mut self, p: &ProcessInfo) {
        self.time_unit_ns = p.time_unit_ns.max(1);
        let r = &mut self.rec;
        put_u64(r, p.pid as u64);
        put_u64(r, p.ppid as u64);
        put_u64(r, p.start_unix_ns);
        put_u64(r, p.period_ns);
        put_u64(r, p.mode.code());
        put_u64(r, p.timer.code());
        put_u64(r, self.time_unit_ns);
        put_u64(r, p.max_depth as u64);
        put_bytes(r, p.exe.as_bytes());
        put_u64(r, p.argv.len() as u64);
        for a in &p.argv {
            put_bytes(r, a.as_bytes());
        }
        put_bytes(r, p.agent_version.as_bytes());
        self.emit(kind::PROCESS);
    }

    pub fn module(&mut self, m: &Module) {
        let r = &mut self.rec;
        put_u64(r, m.id as u64);
        put_bytes(r, m.path.as_bytes());
        put_bytes(r, &m.build_id);
        put_u64(r, m.bias);
        put_u64(r, m.ranges.len() as u64);
        for &(start, end) in &m.ranges {
            put_u64(r, start);
            put_u64(r, end.saturating_sub(start));
        }
        self.emit(kind::MODULE);
    }

    pub fn module_unload(&mut self, id: u32) {
        put_u64(&mut self.rec, id as u64);
        self.emit(kind::MODULE_UNLOAD);
    }

    pub fn thread(&mut self, tid: u32, name: &str) {
        put_u64(&mut self.rec, tid as u64);
        put_bytes(&mut self.rec, name.as_bytes());
        self.emit(kind::THREAD);
    }

    /// Writes the stack nodes interned since the last call (samples must not name a node
    /// the reader has not seen yet; [`samples`](Self::samples) calls this first).
    pub fn nodes(&mut self) {
        let (first, nodes) = self.stacks.take_new();
        if nodes.is_empty() {
            return;
        }
        let r = &mut self.rec;
        put_u64(r, first as u64);
        put_u64(r, nodes.len() as u64);
        // Parents are given as distance back from the node itself (usually 1), values as a
        // signed delta from the parent's value (return addresses cluster).
        for (i, n) in nodes.iter().enumerate() {
            let id = first + i as u32;
            put_u64(r, (id - n.parent) as u64);
            put_u64(r, n.kind as u64);
            let base = self.stacks.values[n.parent as usize];
            put_i64(r, n.value.wrapping_sub(base) as i64);
        }
        self.emit(kind::NODES);
    }

    /// One SAMPLES record for one thread; `samples` sorted by time.
    pub fn samples(&mut self, tid: u32, samples: &[PendingSample]) {
        if samples.is_empty() {
            return;
        }
        self.nodes();
        let unit = self.time_unit_ns;
        let r = &mut self.rec;
        put_u64(r, tid as u64);
        let base = samples[0].time_ns / unit;
        put_u64(r, base);
        put_u64(r, samples.len() as u64);
        let mut prev_t = base;
        let mut prev_leaf = 0i64;
        for s in samples {
            let t = (s.time_ns / unit).max(prev_t);
            put_u64(r, t - prev_t);
            prev_t = t;
            let extra = s.weight != 1 || s.flags != 0;
            let d = s.leaf as i64 - prev_leaf;
            prev_leaf = s.leaf as i64;
            put_u64(r, (crate::varint::zigzag(d) << 1) | extra as u64);
            if extra {
                put_u64(r, s.weight as u64);
                put_u64(r, s.flags as u64);
            }
        }
        self.emit(kind::SAMPLES);
    }

    /// A MARKER_NAME record: `id` must be the next unused id (0, 1, 2, ...).
    pub fn marker_name(&mut self, id: u32, name: &str) {
        put_u64(&mut self.rec, id as u64);
        put_bytes(&mut self.rec, name.as_bytes());
        self.emit(kind::MARKER_NAME);
    }

    /// One MARKERS record for one thread; `events` in time order (a later one is written
    /// at the time of the one before), names already written. Times are in ns, not the
    /// samples' unit: a request may take less than one unit.
    pub fn markers(&mut self, tid: u32, events: &[MarkerEvent]) {
        let Some(first) = events.first() else {
            return;
        };
        let r = &mut self.rec;
        put_u64(r, tid as u64);
        let mut prev_t = first.time_ns;
        let mut prev_cpu = first.cpu_ns;
        put_u64(r, prev_t);
        put_u64(r, prev_cpu);
        put_u64(r, events.len() as u64);
        for e in events {
            let t = e.time_ns.max(prev_t);
            put_u64(r, t - prev_t);
            prev_t = t;
            // Signed: an interval's event carries the CPU clock of its call, later than
            // the events that its start sorts before.
            put_i64(r, e.cpu_ns.wrapping_sub(prev_cpu) as i64);
            prev_cpu = e.cpu_ns;
            match (e.name, e.duration_ns) {
                (None, _) => put_u64(r, 0),
                (Some(id), None) => put_u64(r, ((id as u64) << 1) | 1),
                (Some(id), Some(d)) => {
                    put_u64(r, (id as u64 + 1) << 1);
                    put_u64(r, d);
                }
            }
        }
        self.emit(kind::MARKERS);
    }

    pub fn lost(&mut self, count: u64) {
        put_u64(&mut self.rec, count);
        self.emit(kind::LOST);
    }

    pub fn py_code(&mut self, c: &PyCode) {
        let r = &mut self.rec;
        put_u64(r, c.id as u64);
        put_bytes(r, c.qualname.as_bytes());
        put_bytes(r, c.filename.as_bytes());
        put_u64(r, c.firstlineno as u64);
        put_u64(r, c.python_minor as u64);
        put_bytes(r, &c.linetable);
        self.emit(kind::PY_CODE);
    }

    /// A JIT_CODE record (`c.nodes_before` is not written: the reader derives it).
    pub fn jit_code(&mut self, c: &JitCode) {
        encode_jit_code(&mut self.rec, c);
        self.emit(kind::JIT_CODE);
    }

    pub fn jit_phase(&mut self, ph: &JitPhase) {
        let r = &mut self.rec;
        put_u64(r, ph.start_ns);
        put_u64(r, ph.end_ns.saturating_sub(ph.start_ns));
        put_bytes(r, ph.name.as_bytes());
        self.emit(kind::JIT_PHASE);
    }

    /// A symbolic frame (imported profiles); FRAME nodes name it by id.
    pub fn frame(&mut self, f: &SymFrame) {
        let r = &mut self.rec;
        put_u64(r, f.id as u64);
        put_u64(r, f.tier as u64);
        put_bytes(r, f.name.as_bytes());
        put_bytes(r, f.module.as_bytes());
        put_bytes(r, f.file.as_bytes());
        put_u64(r, f.line as u64);
        self.emit(kind::FRAME);
    }

    pub fn notice(&mut self, text: &str) {
        put_bytes(&mut self.rec, text.as_bytes());
        self.emit(kind::NOTICE);
    }

    pub fn end(&mut self, e: &ProcessEnd) {
        let r = &mut self.rec;
        put_u64(r, e.duration_ns);
        put_u64(r, e.cpu_user_ns);
        put_u64(r, e.cpu_system_ns);
        put_u64(r, e.signals);
        self.emit(kind::PROCESS_END);
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes every complete record so far to the sink in one `write_all`.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.sink.flush()
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.sink)
    }

    pub fn get_ref(&self) -> &W {
        &self.sink
    }
}

/// One SOURCE record (kind, length, payload): appended to a finished profile by `prof run`.
pub fn source_record(path: &str, text: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(path.len() + text.len() + 10);
    put_bytes(&mut payload, path.as_bytes());
    put_bytes(&mut payload, text.as_bytes());
    let mut out = vec![crate::kind::SOURCE];
    put_u64(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

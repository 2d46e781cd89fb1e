//! [issue 14] Request markers in the index: the table the viewer plots (latency over the
//! timeline's axis) and the marker filter (only the samples taken inside the selected
//! markers, on their thread: all slow requests, the first thousand requests…).

use super::*;

/// Which markers a [`Filter`] keeps samples of. Every bound is optional; a marker must
/// satisfy all that are given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarkerSelect {
    /// Only markers of this name (`None`: every name).
    pub name: Option<String>,
    /// Only markers at least / less than this long, in seconds.
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Only markers that start at or after / before this place on the timeline's axis
    /// (CPU seconds its process had used in cpu mode, wall seconds in wall mode), seconds.
    pub from_s: Option<f64>,
    pub to_s: Option<f64>,
}

/// One marker, placed for queries.
#[derive(Debug, Clone)]
pub(super) struct IndexedMarker {
    proc: u32,
    tid: u32,
    name: u32,
    /// On the index's wall axis (ns since the profile's first process started).
    wall_start: u64,
    wall_end: Option<u64>,
    start_ns: u64,
    cpu_ns: Option<u64>,
    depth: u32,
    timeline_ns: u64,
}

/// Markers of the index and their names.
#[derive(Debug, Clone, Default)]
pub(super) struct MarkerIndex {
    names: Vec<String>,
    list: Vec<IndexedMarker>,
}

impl MarkerIndex {
    pub(super) fn new(
        profile: &prof_format::Profile,
        analysis: &Analysis,
        start_unix_ns: u64,
    ) -> Self {
        let mut out = MarkerIndex::default();
        let mut ids: HashMap<String, u32> = HashMap::new();
        for (pi, p) in profile.processes.iter().enumerate() {
            let offset = p.info.start_unix_ns.saturating_sub(start_unix_ns);
            for m in analysis.markers(pi) {
                let next = out.names.len() as u32;
                let name = *ids.entry(m.marker.name.clone()).or_insert_with(|| {
                    out.names.push(m.marker.name.clone());
                    next
                });
                out.list.push(IndexedMarker {
                    proc: pi as u32,
                    tid: m.marker.tid,
                    name,
                    wall_start: offset.saturating_add(m.marker.start_ns),
                    wall_end: m.marker.end_ns.map(|e| offset.saturating_add(e)),
                    start_ns: m.marker.start_ns,
                    cpu_ns: m.marker.cpu_ns,
                    depth: m.marker.depth,
                    timeline_ns: m.timeline_ns,
                });
            }
        }
        out
    }

    fn selected(&self, sel: &MarkerSelect) -> Result<Vec<&IndexedMarker>, QueryError> {
        let secs = |v: Option<f64>, what: &str| -> Result<Option<u64>, QueryError> {
            match v {
                None => Ok(None),
                Some(s) if s.is_finite() && s >= 0.0 => {
                    Ok(Some((s * 1e9).min(u64::MAX as f64) as u64))
                }
                Some(_) => Err(QueryError::BadRange(format!(
                    "{what} must be a number of seconds >= 0"
                ))),
            }
        };
        let (min, max) = (
            secs(sel.min_s, "marker_min")?,
            secs(sel.max_s, "marker_max")?,
        );
        let (from, to) = (
            secs(sel.from_s, "marker_from")?,
            secs(sel.to_s, "marker_to")?,
        );
        let name = match &sel.name {
            None => None,
            Some(n) => Some(
                self.names
                    .iter()
                    .position(|x| x == n)
                    .ok_or_else(|| QueryError::NoMarker(n.clone()))? as u32,
            ),
        };
        Ok(self
            .list
            .iter()
            .filter(|m| {
                let d = m.wall_end.map(|e| e.saturating_sub(m.wall_start));
                name.is_none_or(|n| m.name == n)
                    && min.is_none_or(|min| d.is_some_and(|d| d >= min))
                    && max.is_none_or(|max| d.is_some_and(|d| d < max))
                    && from.is_none_or(|f| m.timeline_ns >= f)
                    && to.is_none_or(|t| m.timeline_ns < t)
            })
            .collect())
    }
}

/// The sample filter of a marker selection: per (process, thread), the wall intervals of
/// the selected markers, merged and sorted. Thread 0 stands for every thread of its
/// process (markers from `$PROF_MARKER_FILE` lines that do not know their thread).
pub(super) struct MarkerMask {
    spans: HashMap<(u32, u32), Vec<(u64, u64)>>,
}

impl MarkerMask {
    pub(super) fn contains(&self, proc: u32, tid: u32, wall: u64) -> bool {
        let inside = |key: (u32, u32)| {
            self.spans.get(&key).is_some_and(|v| {
                let i = v.partition_point(|&(s, _)| s <= wall);
                i > 0 && wall < v[i - 1].1
            })
        };
        inside((proc, tid)) || inside((proc, 0))
    }
}

/// `markers[]` of the markers query, in columns (one entry per marker).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MarkerTable {
    /// Distinct names; `name[i]` indexes this.
    pub names: Vec<String>,
    pub name: Vec<u32>,
    pub pid: Vec<u32>,
    pub tid: Vec<u32>,
    /// Seconds since its process started.
    pub start_s: Vec<f64>,
    /// `null` for a marker its process ended inside.
    pub duration_s: Vec<Option<f64>>,
    pub cpu_s: Vec<Option<f64>>,
    /// Place on the timeline's axis (see [`MarkerSelect::from_s`]).
    pub timeline_s: Vec<f64>,
    pub depth: Vec<u32>,
    /// Per name: count and latency percentiles of the selected markers.
    pub stats: Vec<crate::markers::MarkerStats>,
}

impl ProfileIndex {
    /// The mask of the samples inside the markers `sel` selects.
    pub(super) fn marker_mask(&self, sel: &MarkerSelect) -> Result<MarkerMask, QueryError> {
        let mut spans: HashMap<(u32, u32), Vec<(u64, u64)>> = HashMap::new();
        for m in self.markers.selected(sel)? {
            let end = m.wall_end.unwrap_or(u64::MAX);
            spans
                .entry((m.proc, m.tid))
                .or_default()
                .push((m.wall_start, end));
        }
        for v in spans.values_mut() {
            v.sort_unstable();
            // Merge overlaps (nested markers, concurrent intervals).
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
            for &(s, e) in v.iter() {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            *v = merged;
        }
        Ok(MarkerMask { spans })
    }

    /// The markers of the process `f.process` selects (all processes when none) that
    /// `f.markers` selects (every marker when none), in start order, with per-name stats.
    pub fn markers_table(&self, f: &Filter) -> Result<MarkerTable, QueryError> {
        let proc = self.process_index(f)?;
        let sel = f.markers.clone().unwrap_or_default();
        let mut t = MarkerTable::default();
        let mut names: HashMap<u32, u32> = HashMap::new();
        let mut rows: Vec<crate::markers::MarkerSummary> = Vec::new();
        for m in self.markers.selected(&sel)? {
            if proc.is_some_and(|p| p != m.proc as usize) || f.thread.is_some_and(|t| t != m.tid) {
                continue;
            }
            let next = t.names.len() as u32;
            let id = *names.entry(m.name).or_insert_with(|| {
                t.names.push(self.markers.names[m.name as usize].clone());
                next
            });
            let pid = self.procs[m.proc as usize].pid;
            let duration_s = m
                .wall_end
                .map(|e| e.saturating_sub(m.wall_start) as f64 / 1e9);
            let cpu_s = m.cpu_ns.map(|c| c as f64 / 1e9);
            t.name.push(id);
            t.pid.push(pid);
            t.tid.push(m.tid);
            t.start_s.push(m.start_ns as f64 / 1e9);
            t.duration_s.push(duration_s);
            t.cpu_s.push(cpu_s);
            t.timeline_s.push(m.timeline_ns as f64 / 1e9);
            t.depth.push(m.depth);
            rows.push(crate::markers::MarkerSummary {
                name: self.markers.names[m.name as usize].clone(),
                pid,
                tid: m.tid,
                start_s: m.start_ns as f64 / 1e9,
                duration_s,
                cpu_s,
                depth: m.depth,
                timeline_s: m.timeline_ns as f64 / 1e9,
            });
        }
        t.stats = crate::markers::stats(&rows);
        Ok(t)
    }

    /// Whether the profile has request markers.
    pub fn has_markers(&self) -> bool {
        !self.markers.list.is_empty()
    }
}

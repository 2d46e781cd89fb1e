//! The profile summary (JSON contract) and its terminal rendering.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::analysis::{merge_buckets, Analysis, FrameId, NO_STACK};
use crate::code_only::FrameKind;
use crate::markers::{MarkerStats, MarkerSummary};
use crate::tiers::{Tier, TierCounts};

/// Everything `prof report` shows; serialized as the `--json` output. Field names are a
/// contract: `samples, weight, lost_samples, duration_s, processes[{pid, command,
/// samples}], threads[{pid, tid, name, samples}], functions[{name, module, file, line,
/// self, total}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples recorded.
    pub samples: u64,
    /// Sum of sample weights (sampling periods they stand for).
    pub weight: u64,
    /// Samples dropped by the agent (full buffers).
    pub lost_samples: u64,
    /// From the earliest process start to the latest process end.
    pub duration_s: f64,
    pub processes: Vec<ProcessSummary>,
    /// Sorted by samples, descending.
    pub threads: Vec<ThreadSummary>,
    /// Sorted by self, then total, descending.
    pub functions: Vec<FunctionSummary>,
    /// `cpu` or `wall`.
    pub mode: String,
    /// Timer source name(s).
    pub timer: String,
    /// Requested sampling rate.
    pub rate_hz: f64,
    /// Weight of the samples of ended processes / their CPU seconds (user + system).
    pub samples_per_cpu_s: Option<f64>,
    pub truncated_samples: u64,
    pub unwind_stopped_samples: u64,
    /// Samples whose Python frames could not be matched one-to-one with the interpreter's
    /// evaluation frames (flag MERGE_MISMATCH; docs/FORMAT.md).
    #[serde(default)]
    pub merge_mismatch_samples: u64,
    pub off_cpu_samples: u64,
    /// Samples whose leaf node id did not exist (corrupt input); counted under "[no stack]".
    #[serde(default)]
    pub bad_stack_samples: u64,
    /// The agent's notices, deduplicated.
    pub notices: Vec<String>,
    /// Symbolization problems (missing files, build id mismatches).
    #[serde(default)]
    pub symbol_warnings: Vec<String>,
    /// The log ended inside a record (a process was killed mid-write).
    pub profile_truncated: bool,
    /// Weight per tier (interpreter, warmup, jit, native, gc, kernel).
    #[serde(default)]
    pub tiers: TierCounts,
    /// The warmup curve of all processes together, each from its own start.
    #[serde(default)]
    pub timeline: Timeline,
    /// [issue 14] Request markers of every process, by process then start.
    #[serde(default)]
    pub markers: Vec<MarkerSummary>,
    /// [issue 14] Latency per marker name, busiest (largest total time) first.
    #[serde(default)]
    pub marker_stats: Vec<MarkerStats>,
    /// [issue 14] The function table is the code-only view: runtime frames folded into the
    /// program's (see `Analysis::summary_for_people`).
    #[serde(default)]
    pub code_only: bool,
}

/// Tier weights over CPU time since process start (wall time in wall mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_s: f64,
    pub buckets: Vec<TimelineBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineBucket {
    /// Start of the bucket, seconds since process start.
    pub t: f64,
    #[serde(flatten)]
    pub tiers: TierCounts,
}

impl Timeline {
    fn from_buckets(bucket_s: f64, buckets: Vec<TierCounts>) -> Timeline {
        Timeline {
            bucket_s,
            buckets: buckets
                .into_iter()
                .enumerate()
                .map(|(i, tiers)| TimelineBucket {
                    t: i as f64 * bucket_s,
                    tiers,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub ppid: u32,
    /// argv joined by spaces (the executable when argv is empty).
    pub command: String,
    #[serde(default)]
    pub exe: String,
    /// Weighted.
    pub samples: u64,
    /// User + system CPU time, when the process ended normally.
    pub cpu_s: Option<f64>,
    pub duration_s: f64,
    #[serde(default)]
    pub lost_samples: u64,
    /// Whether the process wrote its end record (false: killed, or still running).
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub tiers: TierCounts,
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub pid: u32,
    pub tid: u32,
    pub name: String,
    /// Weighted.
    pub samples: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    pub module: String,
    pub file: Option<String>,
    /// The line with most of its self time (else where it was first seen).
    pub line: Option<u32>,
    /// [issue 14] A Python function's `def` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub def_line: Option<u32>,
    /// Weight of samples where this function is the innermost frame.
    #[serde(rename = "self")]
    pub self_: u64,
    /// Weight of samples where it is anywhere on the stack (once per sample).
    pub total: u64,
    /// `total` split by the tier of those samples.
    #[serde(default)]
    pub tiers: TierCounts,
}

struct FuncAcc {
    name: String,
    module: String,
    file: Option<String>,
    line: Option<u32>,
    self_: u64,
    total: u64,
    tiers: TierCounts,
    stamp: u64,
    /// Self weight by (file, line) of the innermost frame.
    self_lines: HashMap<(Option<String>, Option<u32>), u64>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Analysis {
    /// Totals, per-process and per-thread weights, and the function table (every frame).
    pub fn summary(&self) -> Summary {
        self.summary_with(false)
    }

    /// [issue 14] The summary as the text report shows it: for a profile whose samples
    /// mostly run interpreted/JIT code, the code-only view (runtime frames folded into the
    /// program's, `crate::code_only`), unless `every_frame`.
    pub fn summary_for_people(&self, every_frame: bool) -> Summary {
        self.summary_with(!every_frame && self.mostly_program_code())
    }

    /// Kind of every frame for the code-only view, by FrameId.
    fn frame_kinds(&self) -> Vec<FrameKind> {
        self.frames()
            .iter()
            .map(|f| FrameKind::of(&f.name, &f.module, f.file.as_deref()))
            .collect()
    }

    /// Do at least half of the samples (by weight) run program code?
    pub fn mostly_program_code(&self) -> bool {
        let kinds = self.frame_kinds();
        let mut ids = Vec::new();
        let mut stacks = Vec::new();
        for (pi, p) in self.procs.iter().enumerate() {
            for lw in &p.leaves {
                self.stack_into(pi, lw.leaf, &mut ids);
                let program = ids
                    .iter()
                    .any(|&id| kinds[id as usize] == FrameKind::Program);
                stacks.push((lw.weight, program));
            }
        }
        crate::code_only::mostly_program(stacks)
    }

    fn summary_with(&self, code_only: bool) -> Summary {
        let kinds = if code_only {
            self.frame_kinds()
        } else {
            Vec::new()
        };
        let mut stack_kinds: Vec<FrameKind> = Vec::new();
        let mut runtime_func: Option<usize> = None;
        // Function identity: (name, module), and for Python code its whole file path too:
        // every package's `__init__.py` body is `<module>` in module `__init__.py`.
        // Frames map onto functions once.
        let mut func_index: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut funcs: Vec<FuncAcc> = Vec::new();
        let new_func =
            |name: &str, module: &str, file: Option<String>, line: Option<u32>| FuncAcc {
                name: name.to_string(),
                module: module.to_string(),
                file,
                line,
                self_: 0,
                total: 0,
                tiers: TierCounts::default(),
                stamp: 0,
                self_lines: HashMap::new(),
            };
        let frame_func: Vec<usize> = self
            .frames()
            .iter()
            .map(|f| {
                let path = crate::python::identity_file(&f.module, f.file.as_deref());
                *func_index
                    .entry((f.name.as_str(), f.module.as_str(), path))
                    .or_insert_with(|| {
                        funcs.push(new_func(&f.name, &f.module, f.file.clone(), f.line));
                        funcs.len() - 1
                    })
            })
            .collect();
        let mut no_stack: Option<usize> = None;

        let mut threads: Vec<ThreadSummary> = Vec::new();
        let mut processes = Vec::new();
        let mut stamp = 0u64;
        let mut ids: Vec<FrameId> = Vec::new();
        let (mut samples, mut weight, mut lost) = (0u64, 0u64, 0u64);
        let (mut truncated, mut stopped, mut off_cpu, mut bad) = (0u64, 0u64, 0u64, 0u64);
        let mut mismatch = 0u64;
        let (mut ended_weight, mut cpu_ns) = (0u64, 0u64);
        let mut notices: Vec<String> = Vec::new();
        let mut timers: Vec<&str> = Vec::new();
        let mut tiers = TierCounts::default();
        let mut first_start = u64::MAX;
        let mut markers: Vec<MarkerSummary> = Vec::new();
        let mut last_end = 0u64;

        for (pi, p) in self.procs.iter().enumerate() {
            // A forked child that exec'd right away: its pre-exec image has no samples and
            // the exec'd program (same pid, later) is the process the user knows.
            if p.samples == 0 && self.procs[pi + 1..].iter().any(|q| q.pid == p.pid) {
                continue;
            }
            samples += p.samples;
            weight += p.weight;
            lost = lost.saturating_add(p.lost);
            truncated += p.truncated;
            stopped += p.unwind_stopped;
            mismatch += p.merge_mismatch;
            off_cpu += p.off_cpu;
            bad += p.bad_leaf;
            if let Some(c) = p.cpu_ns.filter(|&c| c > 0) {
                ended_weight += p.weight - p.off_cpu_weight.min(p.weight);
                cpu_ns = cpu_ns.saturating_add(c);
            }
            for n in &p.notices {
                if !notices.contains(n) {
                    notices.push(n.clone());
                }
            }
            if !timers.contains(&p.timer) {
                timers.push(p.timer);
            }
            const WALL_SAMPLER: &str = "/proc sampler for blocked threads";
            if p.mode == prof_format::Mode::Wall && !timers.contains(&WALL_SAMPLER) {
                timers.push(WALL_SAMPLER);
            }
            markers.extend(crate::markers::summarize(p.pid, &p.markers));
            first_start = first_start.min(p.start_unix_ns);
            last_end = last_end.max(p.start_unix_ns.saturating_add(p.duration_ns));
            processes.push(ProcessSummary {
                pid: p.pid,
                ppid: p.ppid,
                command: p.command.clone(),
                exe: p.exe.clone(),
                samples: p.weight,
                cpu_s: p.cpu_ns.map(secs),
                duration_s: secs(p.duration_ns),
                lost_samples: p.lost,
                ended: p.ended,
                tiers: TierCounts::default(),
                timeline: {
                    let (bs, b) = self.timeline(pi, None);
                    Timeline::from_buckets(bs, b)
                },
            });

            // Threads: leaves are sorted by tid.
            let mut by_tid: Vec<(u32, u64)> = Vec::new();
            for lw in &p.leaves {
                match by_tid.last_mut() {
                    Some((t, w)) if *t == lw.tid => *w += lw.weight,
                    _ => by_tid.push((lw.tid, lw.weight)),
                }
            }
            threads.extend(by_tid.into_iter().map(|(tid, w)| ThreadSummary {
                pid: p.pid,
                tid,
                name: p.thread_names.get(&tid).cloned().unwrap_or_default(),
                samples: w,
            }));

            // Functions: merge threads first, so each distinct (leaf, tier) is walked once.
            let mut by_leaf: HashMap<(u32, Tier), u64> = HashMap::new();
            let mut ptiers = TierCounts::default();
            for lw in &p.leaves {
                // [issue 5] runtime phases can split one leaf's samples across tiers.
                for (t, w) in self.leaf_tiers(pi, lw) {
                    *by_leaf.entry((lw.leaf, t)).or_default() += w;
                    ptiers.add(t, w);
                }
            }
            tiers.merge(&ptiers);
            if let Some(ps) = processes.last_mut() {
                ps.tiers = ptiers;
            }
            let mut by_leaf: Vec<((u32, Tier), u64)> = by_leaf.into_iter().collect();
            by_leaf.sort_unstable();
            for ((leaf, tier), w) in by_leaf {
                self.stack_into(pi, leaf, &mut ids);
                stamp += 1;
                if code_only {
                    stack_kinds.clear();
                    stack_kinds.extend(ids.iter().map(|&id| kinds[id as usize]));
                    match crate::code_only::fold(&stack_kinds) {
                        Some(keep) => {
                            let kept: Vec<FrameId> = keep.iter().map(|&i| ids[i]).collect();
                            ids = kept;
                        }
                        None if !ids.is_empty() => {
                            // No program frame: the runtime's own work (start-up, GC).
                            let f = *runtime_func.get_or_insert_with(|| {
                                funcs.push(new_func(
                                    crate::code_only::RUNTIME_NAME,
                                    crate::code_only::RUNTIME_MODULE,
                                    None,
                                    None,
                                ));
                                funcs.len() - 1
                            });
                            funcs[f].self_ += w;
                            funcs[f].total += w;
                            funcs[f].tiers.add(tier, w);
                            continue;
                        }
                        None => {}
                    }
                }
                let Some(&innermost) = ids.last() else {
                    let f = *no_stack.get_or_insert_with(|| {
                        funcs.push(new_func(NO_STACK, "", None, None));
                        funcs.len() - 1
                    });
                    funcs[f].self_ += w;
                    funcs[f].total += w;
                    funcs[f].tiers.add(tier, w);
                    continue;
                };
                for &id in &ids {
                    let f = &mut funcs[frame_func[id as usize]];
                    if f.stamp != stamp {
                        f.stamp = stamp;
                        f.total += w;
                        f.tiers.add(tier, w);
                    }
                }
                let fr = self.frame(innermost);
                let f = &mut funcs[frame_func[innermost as usize]];
                f.self_ += w;
                *f.self_lines.entry((fr.file.clone(), fr.line)).or_default() += w;
            }
        }

        let mut functions: Vec<FunctionSummary> = funcs
            .into_iter()
            .filter(|f| f.total > 0 || f.self_ > 0)
            .map(|f| {
                // Location: the hottest line of its self time, else where first seen.
                let hottest = f
                    .self_lines
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                    .map(|(loc, _)| loc);
                let (file, line) = hottest.unwrap_or((f.file, f.line));
                let def_line = self
                    .def_lines
                    .get(&(f.name.clone(), f.module.clone()))
                    .copied()
                    .filter(|&l| l > 0);
                FunctionSummary {
                    def_line,
                    name: f.name,
                    module: f.module,
                    file,
                    line,
                    self_: f.self_,
                    total: f.total,
                    tiers: f.tiers,
                }
            })
            .collect();
        functions.sort_by(|a, b| {
            b.self_
                .cmp(&a.self_)
                .then(b.total.cmp(&a.total))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.module.cmp(&b.module))
        });
        threads.sort_by(|a, b| {
            b.samples
                .cmp(&a.samples)
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
        });

        let first = self.procs.first();
        Summary {
            samples,
            weight,
            lost_samples: lost,
            duration_s: if self.procs.is_empty() {
                0.0
            } else {
                secs(last_end.saturating_sub(first_start))
            },
            processes,
            threads,
            functions,
            mode: first.map(|p| p.mode.name()).unwrap_or("cpu").to_string(),
            timer: timers.join(", "),
            rate_hz: first
                .filter(|p| p.period_ns > 0)
                .map(|p| 1e9 / p.period_ns as f64)
                .unwrap_or(0.0),
            samples_per_cpu_s: (cpu_ns > 0).then(|| ended_weight as f64 / secs(cpu_ns)),
            truncated_samples: truncated,
            unwind_stopped_samples: stopped,
            merge_mismatch_samples: mismatch,
            off_cpu_samples: off_cpu,
            bad_stack_samples: bad,
            notices,
            symbol_warnings: self.warnings.clone(),
            profile_truncated: self.profile_truncated,
            tiers,
            timeline: self.combined_timeline(),
            marker_stats: crate::markers::stats(&markers),
            markers,
            code_only,
        }
    }

    /// Every process's fine timeline summed bucket by bucket (each from its own start).
    fn combined_timeline(&self) -> Timeline {
        let fine_ns = self.procs.iter().map(|p| p.bucket_ns).max().unwrap_or(0);
        if fine_ns == 0 {
            return Timeline::default();
        }
        let mut sum: Vec<TierCounts> = Vec::new();
        for p in &self.procs {
            for (i, b) in p.timeline.iter().enumerate() {
                let j = (i as u64 * p.bucket_ns.max(1) / fine_ns) as usize;
                if j >= sum.len() {
                    sum.resize(j + 1, TierCounts::default());
                }
                sum[j].merge(b);
            }
        }
        let (bs, b) = merge_buckets(&sum, fine_ns, None);
        Timeline::from_buckets(bs, b)
    }
}

/// [issue 14] Marker latency per name (the busiest `top` names).
fn marker_table(out: &mut String, stats: &[MarkerStats], top: usize) {
    if stats.is_empty() {
        return;
    }
    let width = stats
        .iter()
        .take(top)
        .map(|m| m.name.chars().count().min(40))
        .max()
        .unwrap_or(4)
        .max(6);
    let _ = writeln!(out, "\nMarkers (duration of each marked interval)");
    let _ = writeln!(
        out,
        "  {:<width$}  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "marker", "count", "p50", "p90", "p99", "max", "CPU/each"
    );
    for m in stats.iter().take(top) {
        let open = if m.open > 0 {
            format!("  ({} unfinished)", m.open)
        } else {
            String::new()
        };
        let cpu = if m.cpu_s > 0.0 && m.count > 0 {
            duration(m.cpu_s / m.count as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}{open}",
            clip(&m.name, 40),
            m.count,
            duration(m.p50_s),
            duration(m.p90_s),
            duration(m.p99_s),
            duration(m.max_s),
            cpu,
        );
    }
    if stats.len() > top {
        let _ = writeln!(out, "  … {} more (see --format json)", stats.len() - top);
    }
}

/// A duration for people: `850 µs`, `12.3 ms`, `1.25 s`.
fn duration(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Shortens `s` to at most `max` characters, marking the cut with `…`.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A source file as the summary names it: its base name, with the package directory for
/// a package's `__init__.py` / `__main__.py` (`models/__init__.py`), of which a program
/// has many.
fn short_file(path: &str) -> &str {
    let mut parts = path.rsplitn(3, '/');
    let base = parts.next().unwrap_or(path);
    match parts.next() {
        Some(pkg) if !pkg.is_empty() && (base == "__init__.py" || base == "__main__.py") => {
            &path[path.len() - base.len() - 1 - pkg.len()..]
        }
        _ => base,
    }
}

#[cfg(test)]
#[test]
fn short_file_names_the_package_of_init() {
    assert_eq!(
        short_file("/v/django/db/models/__init__.py"),
        "models/__init__.py"
    );
    assert_eq!(short_file("pkg/__main__.py"), "pkg/__main__.py");
    assert_eq!(short_file("/__init__.py"), "__init__.py");
    assert_eq!(short_file("__init__.py"), "__init__.py");
    assert_eq!(short_file("/a/b/query.py"), "query.py");
    assert_eq!(short_file("app.py"), "app.py");
}

fn location(f: &FunctionSummary) -> String {
    match (&f.file, f.line) {
        (Some(file), line) => {
            let base = short_file(file);
            match (f.def_line, line) {
                // A Python function: where it is defined, and the line its time went to.
                (Some(d), Some(l)) if l != d => format!("{base}:{d}, hot line {l}"),
                (Some(d), _) => format!("{base}:{d}"),
                (None, Some(l)) => format!("{base}:{l}"),
                (None, None) => base.to_string(),
            }
        }
        (None, _) => f.module.clone(),
    }
}

const NAME_WIDTH: usize = 60;

/// Python functions read `qualname (file.py:line)`, as Python users know them.
fn display_name(f: &FunctionSummary) -> String {
    if crate::python::is_python_module(&f.module) {
        let base = f.file.as_deref().map_or(f.module.as_str(), short_file);
        match f.def_line.or(f.line) {
            Some(l) => format!("{} ({base}:{l})", f.name),
            None => format!("{} ({base})", f.name),
        }
    } else {
        f.name.clone()
    }
}

fn table(out: &mut String, title: &str, funcs: &[&FunctionSummary], weight: u64) {
    let _ = writeln!(out, "\n{title}");
    if funcs.is_empty() {
        let _ = writeln!(out, "  (no samples)");
        return;
    }
    let names: Vec<String> = funcs.iter().map(|f| display_name(f)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, NAME_WIDTH);
    let _ = writeln!(
        out,
        "{:>7} {:>9} {:>7} {:>9}  {:<width$}  location",
        "self%", "self", "total%", "total", "function"
    );
    for (f, name) in funcs.iter().zip(&names) {
        let _ = writeln!(
            out,
            "{:>6.1}% {:>9} {:>6.1}% {:>9}  {:<width$}  {}",
            pct(f.self_, weight),
            f.self_,
            pct(f.total, weight),
            f.total,
            clip(name, width),
            location(f),
        );
    }
}

/// The human-readable report: a header, then the top `top` functions by self weight and
/// by total weight. Percentages are of the total weight.
pub fn render_text(s: &Summary, top: usize) -> String {
    let mut out = String::new();
    let threads = s.threads.len();
    let _ = writeln!(
        out,
        "{:.2} s, {} process{}, {} thread{}: {} samples (weight {}), {} lost",
        s.duration_s,
        s.processes.len(),
        if s.processes.len() == 1 { "" } else { "es" },
        threads,
        if threads == 1 { "" } else { "s" },
        s.samples,
        s.weight,
        s.lost_samples,
    );
    let _ = write!(
        out,
        "{} mode, timer: {}, {:.0} Hz requested",
        s.mode, s.timer, s.rate_hz
    );
    match s.samples_per_cpu_s {
        Some(r) => {
            let _ = writeln!(out, ", {r:.1} samples per CPU-second");
        }
        None => out.push('\n'),
    }
    let tier_total = s.tiers.total();
    if tier_total > 0 {
        let parts: Vec<String> = Tier::ALL
            .iter()
            .filter(|&&t| s.tiers.get(t) > 0)
            .map(|&t| format!("{} {:.1}%", t.name(), pct(s.tiers.get(t), tier_total)))
            .collect();
        let _ = writeln!(out, "tiers: {}", parts.join(", "));
    }
    if s.processes.len() > 1 {
        for p in &s.processes {
            let cpu = p
                .cpu_s
                .map(|c| format!("{c:.2} s CPU"))
                .unwrap_or_else(|| "no end record".into());
            let _ = writeln!(
                out,
                "  pid {} (ppid {}): {} samples, {:.2} s, {}: {}",
                p.pid,
                p.ppid,
                p.samples,
                p.duration_s,
                cpu,
                clip(&p.command, 80)
            );
        }
    }
    let mut problems = Vec::new();
    if s.truncated_samples > 0 {
        problems.push(format!(
            "{} truncated at the depth limit",
            s.truncated_samples
        ));
    }
    if s.unwind_stopped_samples > 0 {
        problems.push(format!(
            "{} stopped unwinding early",
            s.unwind_stopped_samples
        ));
    }
    if s.merge_mismatch_samples > 0 {
        problems.push(format!(
            "{} with Python frames not matched to the interpreter's",
            s.merge_mismatch_samples
        ));
    }
    if s.bad_stack_samples > 0 {
        problems.push(format!("{} with invalid stacks", s.bad_stack_samples));
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "stacks: {}", problems.join(", "));
    }
    if s.off_cpu_samples > 0 {
        let _ = writeln!(out, "off-CPU samples: {}", s.off_cpu_samples);
    }
    if s.profile_truncated {
        let _ = writeln!(
            out,
            "note: the profile ends mid-record (a process was killed?)"
        );
    }
    for n in &s.notices {
        let _ = writeln!(out, "notice: {n}");
    }
    for w in &s.symbol_warnings {
        let _ = writeln!(out, "symbols: {w}");
    }
    if s.code_only {
        let _ = writeln!(
            out,
            "code-only view: the runtime's own frames (the interpreter's C functions, libc, its start-up) are folded into the program's functions that ran them; `--native-internals` shows every frame"
        );
    }
    marker_table(&mut out, &s.marker_stats, top);

    let by_self: Vec<&FunctionSummary> = s
        .functions
        .iter()
        .filter(|f| f.self_ > 0)
        .take(top)
        .collect();
    table(
        &mut out,
        &format!("Top {top} functions by self"),
        &by_self,
        s.weight,
    );
    let mut by_total: Vec<&FunctionSummary> = s.functions.iter().collect();
    by_total.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            // Equal totals: a caller before its callees (the one with less self time).
            .then(a.self_.cmp(&b.self_))
            .then_with(|| a.name.cmp(&b.name))
    });
    by_total.truncate(top);
    table(
        &mut out,
        &format!("Top {top} functions by total"),
        &by_total,
        s.weight,
    );
    out
}

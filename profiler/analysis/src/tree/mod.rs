//! Filtered call trees, timelines and function tables over a symbolized profile.
//!
//! [`ProfileIndex`] is built once per profile (O(samples + stack frames)) from a
//! [`Profile`](prof_format::Profile) and its [`Analysis`]; every query after that costs O(matching samples +
//! tree nodes), so a server can answer many views of one profile quickly:
//!
//! - [`ProfileIndex::tree`]: the call tree (functions merged by name and module),
//!   optionally inverted or focused on a function, with per-node self/total weights and
//!   tier counts, and a node budget that folds the lightest subtrees into `[other]` nodes;
//! - [`ProfileIndex::timeline`]: tier weights in time buckets (the warmup curve);
//! - [`ProfileIndex::functions`]: self/total weight and tier split per function.
//!
//! Every query takes a [`Filter`]: process, thread, tiers, a time range on the timeline's
//! axis, and a focus function.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analysis::Analysis;
use crate::tiers::Tier;

mod budget;
mod build;
mod filter;
mod markers;
mod queries;

pub use crate::code_only::NativeMode;
use build::{Shape, Stacks, Trie};
pub use markers::{MarkerSelect, MarkerTable};

/// Number of tiers; tier arrays are indexed in [`Tier::ALL`] order.
pub const TIERS: usize = Tier::ALL.len();

/// Weights per tier, in [`Tier::ALL`] order.
pub type TierArray = [u64; TIERS];

/// Position of a tier in [`Tier::ALL`] (and in every [`TierArray`]).
pub fn tier_index(t: Tier) -> usize {
    Tier::ALL.iter().position(|&x| x == t).unwrap_or(0)
}

/// The tier of one sample. Every per-sample tier in this module comes from here.
fn sample_tier(analysis: &Analysis, process: usize, tid: u32, leaf: u32, time_ns: u64) -> Tier {
    analysis.sample_tier_at(process, tid, leaf, time_ns)
}

/// A function: symbolized frames merged by (name, module; Python code: and file path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    pub name: String,
    pub module: String,
    /// Source location of the first frame seen in this function (not necessarily its
    /// first line).
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The x axis of timelines and time ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// CPU time: each sample advances the clock by its weight times its process's
    /// sampling period, in the order the samples were taken (the selected process's own
    /// CPU time when one process is selected, else all processes').
    Cpu,
    /// Wall-clock time since the earliest process of the profile started.
    Wall,
}

impl Axis {
    pub fn name(self) -> &'static str {
        match self {
            Axis::Cpu => "cpu",
            Axis::Wall => "wall",
        }
    }

    pub fn from_name(s: &str) -> Option<Axis> {
        match s {
            "cpu" => Some(Axis::Cpu),
            "wall" => Some(Axis::Wall),
            _ => None,
        }
    }
}

/// Which samples a query looks at. `Default` selects every sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only the process with this pid.
    pub process: Option<u32>,
    /// Only this thread (tid).
    pub thread: Option<u32>,
    /// Only samples of these tiers (None: all).
    pub tiers: Option<Vec<Tier>>,
    /// Only samples at or after this many seconds on `axis`.
    pub from_s: Option<f64>,
    /// Only samples before this many seconds on `axis`.
    pub to_s: Option<f64>,
    /// The axis of `from_s`/`to_s` and of timelines (None: cpu for cpu-mode profiles,
    /// wall for wall-mode ones).
    pub axis: Option<Axis>,
    /// Only samples whose stack contains a function of this name (any module); trees are
    /// re-rooted at its outermost occurrence.
    pub focus: Option<String>,
    /// Every frame, or code-only (runtime frames folded into program frames).
    pub native: NativeMode,
    /// [issue 14] Only samples taken inside these request markers, on their thread.
    pub markers: Option<MarkerSelect>,
}

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no process with pid {0} in this profile")]
    NoProcess(u32),
    #[error("no thread with tid {0} in the selected process(es)")]
    NoThread(u32),
    #[error("no function named {0:?} in this profile")]
    NoFunction(String),
    #[error("bad time range: {0}")]
    BadRange(String),
    #[error("no marker named {0:?} in this profile")]
    NoMarker(String),
}

/// Options of [`ProfileIndex::tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeOptions {
    /// Callers instead of callees: every stack read from its leaf outwards (with a
    /// focus: from the focused function outwards, i.e. its callers).
    pub invert: bool,
    /// Most nodes returned (at least 2); lighter subtrees are folded into `[other]` nodes.
    pub max_nodes: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            invert: false,
            max_nodes: 5000,
        }
    }
}

/// Name of the root node's function.
pub const ROOT_NAME: &str = "all";
/// Name of the function of nodes that stand for folded subtrees.
pub const OTHER_NAME: &str = "[other]";

/// A call tree in compact columns, nodes in depth-first preorder (a node's parent comes
/// before it; siblings heaviest first, the `[other]` node of a parent last).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallTree {
    /// Weight of the selected samples (the root's total).
    pub total: u64,
    /// Weight of the selected samples with a frame matching the search predicate (0
    /// when there was none).
    pub matched: u64,
    /// Functions the nodes name: `functions[0]` is the root (`all`), and an `[other]`
    /// entry (module `[folded]`) is present when nodes were folded.
    pub functions: Vec<Function>,
    /// Per node: index of the parent node (-1 for the root, node 0).
    pub parent: Vec<i64>,
    /// Per node: index into `functions`.
    pub func: Vec<u32>,
    /// Per node: weight of samples whose stack ends here.
    #[serde(rename = "self")]
    pub self_: Vec<u64>,
    /// Per node: weight of samples through here.
    pub total_weight: Vec<u64>,
    /// Per node, [`TIERS`] numbers each: `total_weight` split by tier ([`Tier::ALL`] order).
    pub tiers: Vec<u64>,
    /// Nodes of the full tree left out (folded into `[other]` nodes).
    pub folded_nodes: u64,
}

/// Tier weights over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub axis: Axis,
    /// Start of the first bucket, seconds on the axis.
    pub start_s: f64,
    /// Width of each bucket, seconds.
    pub bucket_s: f64,
    /// End of the axis (the selected range's end, else the last sample's end).
    pub end_s: f64,
    /// Per bucket, [`TIERS`] weights ([`Tier::ALL`] order): `counts[b * TIERS + t]`.
    pub counts: Vec<u64>,
    /// Number of buckets.
    pub buckets: usize,
}

/// The cost of one source line (see [`ProfileIndex::line_costs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineCost {
    /// Weight of samples whose innermost program frame (Python, JS, Java; the leaf for
    /// stacks without one) is on this line.
    #[serde(rename = "self")]
    pub self_: u64,
    /// Weight of samples with a frame on this line anywhere on the stack (once each).
    pub total: u64,
}

/// One row of [`ProfileIndex::functions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    pub function: Function,
    /// Weight where it is the innermost frame.
    pub self_: u64,
    /// Weight where it is anywhere on the stack (once per sample).
    pub total: u64,
    pub self_tiers: TierArray,
    pub total_tiers: TierArray,
}

/// A process of the profile, as a query sees it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    /// Indices of this process's samples in time order.
    samples: Vec<u32>,
    /// Thread ids that have samples.
    tids: Vec<u32>,
}

/// Weights of one (stack, thread, tier).
#[derive(Debug, Clone, Copy)]
struct Group {
    stack: u32,
    tid: u32,
    tier: u8,
    weight: u64,
}

/// A profile prepared for queries. See the module docs.
#[derive(Debug, Clone)]
pub struct ProfileIndex {
    functions: Vec<Function>,
    /// Function ids by name.
    by_name: HashMap<String, Vec<u32>>,
    /// Per stack: its process index.
    stack_proc: Vec<u32>,
    /// The stacks as sampled, and code-only ([`NativeMode::Hide`]).
    native: Stacks,
    code: Stacks,
    /// At least half the samples have a program frame (see [`crate::code_only`]).
    mostly_program: bool,
    /// Per source file: per-line costs (see [`ProfileIndex::line_costs`]).
    lines: HashMap<String, BTreeMap<u32, LineCost>>,
    /// Source texts the profile carries (SOURCE records), by path.
    sources: HashMap<String, String>,
    /// Samples in wall-clock order, in columns.
    s_wall: Vec<u64>,
    s_cpu_all: Vec<u64>,
    s_cpu_proc: Vec<u64>,
    s_stack: Vec<u32>,
    s_tid: Vec<u32>,
    s_weight: Vec<u32>,
    s_tier: Vec<u8>,
    groups: Vec<Group>,
    procs: Vec<Proc>,
    /// Ends of the axes (the last sample's time, plus its period on the cpu axis).
    end_wall: u64,
    end_cpu_all: u64,
    end_cpu_proc: Vec<u64>,
    default_axis: Axis,
    start_unix_ns: u64,
    /// [issue 14] Request markers.
    markers: markers::MarkerIndex,
}

/// Per-stack tier weights of a filtered selection.
struct Selection {
    weights: Vec<TierArray>,
}

impl ProfileIndex {
    /// Every function of the profile.
    pub fn functions_table(&self) -> &[Function] {
        &self.functions
    }

    /// The axis used when a filter names none.
    pub fn default_axis(&self) -> Axis {
        self.default_axis
    }

    /// Wall-clock start of the profile (the earliest process start), ns since the epoch.
    pub fn start_unix_ns(&self) -> u64 {
        self.start_unix_ns
    }

    /// Number of distinct (process, stack) pairs.
    pub fn stack_count(&self) -> usize {
        self.stack_proc.len()
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.s_stack.len()
    }

    /// Number of nodes of the unfiltered, unfolded call tree (the root included).
    pub fn full_tree_nodes(&self) -> usize {
        self.native.full.len()
    }

    /// Do at least half of the samples (by weight) run the program's own code
    /// (interpreted or JIT-compiled: a Python, JS or Java frame on the stack)? Views of
    /// such profiles start code-only.
    pub fn mostly_program_code(&self) -> bool {
        self.mostly_program
    }

    /// Per-line costs of source file `file` (as frames name it), by line number; None when
    /// no sampled frame is in that file. Over all samples (no filter).
    pub fn line_costs(&self, file: &str) -> Option<&BTreeMap<u32, LineCost>> {
        self.lines.get(file)
    }

    /// The text of source file `file` when the profile carries it (`prof run` stores the
    /// program's own sampled script files).
    pub fn source(&self, file: &str) -> Option<&str> {
        self.sources.get(file).map(String::as_str)
    }

    /// The stacks of a view.
    fn view(&self, mode: NativeMode) -> &Stacks {
        match mode {
            NativeMode::Show => &self.native,
            NativeMode::Hide => &self.code,
        }
    }

    /// Total weight per tier of every sample.
    pub fn tier_totals(&self) -> TierArray {
        let mut t = [0u64; TIERS];
        for g in &self.groups {
            t[g.tier as usize] += g.weight;
        }
        t
    }
}

#[cfg(test)]
mod tests;

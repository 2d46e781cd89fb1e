//! Symbolization, aggregation and reports for prof logs.
//!
//! ```no_run
//! let bytes = std::fs::read("prof.log").unwrap();
//! let profile = prof_format::read_profile(&bytes).unwrap();
//! let mut sym = prof_analysis::Symbolizer::new();
//! let analysis = prof_analysis::analyze(&profile, &mut sym);
//! let summary = analysis.summary();
//! print!("{}", prof_analysis::render_text(&summary, 20));
//! std::fs::write("prof.folded", analysis.collapsed()).unwrap();
//! ```
//!
//! - [`Symbolizer`]: module file + address -> [`Frame`]s (DWARF with inlined frames via
//!   addr2line, else the ELF symbol table), with build-id checks and debug-file lookup.
//! - [`analyze`]: symbolizes every stack node a profile's samples use, once, and aggregates
//!   samples by leaf node.
//! - [`Analysis::summary`] / [`render_text`]: the report; [`Analysis::collapsed`]: folded
//!   stacks for flamegraphs.

mod analysis;
pub mod code_only;
pub mod diff;
pub mod export;
pub mod import;
mod jit;
pub mod markers;
pub mod palette;
mod python;
mod summary;
mod symbolize;
mod syscalls;
mod tiers;
pub mod tree;

pub use analysis::{
    analyze, analyze_with, Analysis, CollapseOptions, FrameId, LeafWeight, NO_STACK,
};
pub use summary::{
    clip, render_text, FunctionSummary, ProcessSummary, Summary, ThreadSummary, Timeline,
    TimelineBucket,
};
pub use symbolize::{
    demangle, hex, module_name, AnyFile, FileAccess, Frame, SymbolError, Symbolizer, UnderDirs,
};
pub use syscalls::syscall_name;
pub use tiers::{RuleError, Tier, TierCounts, TierRules};

/// Errors of the convenience entry points.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] prof_format::Error),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Reads, decodes and analyzes a profile file.
pub fn analyze_file(
    path: impl AsRef<std::path::Path>,
    sym: &mut Symbolizer,
) -> Result<(prof_format::Profile, Analysis), Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let profile = prof_format::read_profile(&bytes)?;
    let analysis = analyze(&profile, sym);
    Ok((profile, analysis))
}

#[cfg(test)]
mod tests;

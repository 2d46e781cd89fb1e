//! Exporters: a symbolized profile in the formats other tools open.
//!
//! | format | what | opens in |
//! |---|---|---|
//! | [`ExportFormat::Speedscope`] | speedscope JSON, one sampled profile per thread, samples in time order | speedscope |
//! | [`ExportFormat::Pprof`] | gzipped `profile.proto`, tiers and threads as labels | `go tool pprof`, pprof-based UIs |
//! | [`ExportFormat::Firefox`] | Firefox Profiler processed profile, tiers as categories | profiler.firefox.com |
//! | [`ExportFormat::Collapsed`] | folded stacks | flamegraph.pl, inferno |
//! | [`ExportFormat::Html`] | one self-contained page with an interactive flamegraph | any browser |
//! | [`ExportFormat::Svg`] | a flamegraph picture coloured by tier | any browser or SVG viewer |
//!
//! [`export`] renders any of them; the server's download endpoint and `prof report
//! --format` both call it.

mod firefox;
mod html;
mod pprof;
mod speedscope;
mod svg;

use std::collections::HashMap;

use prof_format::Profile;

use crate::analysis::{Analysis, FrameId};
use crate::tiers::Tier;

pub use pprof::{pprof_message, pprof_protobuf, pprof_protobuf_gzipped, proto as pprof_proto};

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    Speedscope,
    Pprof,
    Firefox,
    Collapsed,
    Html,
    Svg,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 6] = [
        ExportFormat::Speedscope,
        ExportFormat::Pprof,
        ExportFormat::Firefox,
        ExportFormat::Collapsed,
        ExportFormat::Html,
        ExportFormat::Svg,
    ];

    /// The name used by `prof report --format` and `?format=`.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Speedscope => "speedscope",
            ExportFormat::Pprof => "pprof",
            ExportFormat::Firefox => "firefox",
            ExportFormat::Collapsed => "collapsed",
            ExportFormat::Html => "html",
            ExportFormat::Svg => "svg",
        }
    }

    pub fn from_name(s: &str) -> Option<ExportFormat> {
        ExportFormat::ALL.into_iter().find(|f| f.name() == s)
    }

    /// HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Speedscope | ExportFormat::Firefox => "application/json",
            ExportFormat::Pprof => "application/octet-stream",
            ExportFormat::Collapsed => "text/plain; charset=utf-8",
            ExportFormat::Html => "text/html; charset=utf-8",
            ExportFormat::Svg => "image/svg+xml",
        }
    }

    /// Conventional file name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Speedscope => ".speedscope.json",
            ExportFormat::Pprof => ".pb.gz",
            ExportFormat::Firefox => ".firefox.json",
            ExportFormat::Collapsed => ".folded",
            ExportFormat::Html => ".html",
            ExportFormat::Svg => ".svg",
        }
    }

    /// Whether the output is binary (not for a terminal).
    pub fn is_binary(self) -> bool {
        self == ExportFormat::Pprof
    }
}

/// Options of [`export`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Title of the HTML/SVG flamegraph and name of the speedscope/Firefox profile
    /// (default: the first process's command).
    pub title: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("encoding {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

/// Renders `analysis` (of `profile`, from [`crate::analyze`]) in `format`.
pub fn export(
    format: ExportFormat,
    profile: &Profile,
    analysis: &Analysis,
    opts: &ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    let title = opts.title.clone().unwrap_or_else(|| default_title(profile));
    Ok(match format {
        ExportFormat::Speedscope => speedscope::speedscope(profile, analysis, &title).into_bytes(),
        ExportFormat::Pprof => pprof::pprof_protobuf_gzipped(profile, analysis)?,
        ExportFormat::Firefox => firefox::firefox(profile, analysis, &title)?.into_bytes(),
        ExportFormat::Collapsed => analysis.collapsed().into_bytes(),
        ExportFormat::Html => html::html(profile, analysis, &title)?.into_bytes(),
        ExportFormat::Svg => svg::svg(profile, analysis, &title).into_bytes(),
    })
}

/// The first process's command line (what a user ran), else "prof profile".
pub fn default_title(profile: &Profile) -> String {
    profile
        .processes
        .iter()
        .map(|p| {
            if p.info.argv.is_empty() {
                p.info.exe.clone()
            } else {
                p.info.argv.join(" ")
            }
        })
        .find(|c| !c.is_empty())
        .unwrap_or_else(|| "prof profile".to_string())
}

/// Latest name of every thread of a process.
pub(crate) fn thread_names(p: &prof_format::Process) -> HashMap<u32, String> {
    p.threads.iter().cloned().collect()
}

/// The command of a process, as the summary shows it.
pub(crate) fn command(p: &prof_format::Process) -> String {
    if p.info.argv.is_empty() {
        p.info.exe.clone()
    } else {
        p.info.argv.join(" ")
    }
}

/// Symbolized stacks by (process, leaf), computed once each.
pub(crate) struct Stacks<'a> {
    analysis: &'a Analysis,
    cache: HashMap<(usize, u32), Vec<FrameId>>,
}

impl<'a> Stacks<'a> {
    pub fn new(analysis: &'a Analysis) -> Self {
        Stacks {
            analysis,
            cache: HashMap::new(),
        }
    }

    /// Frames root first (empty: no stack).
    pub fn get(&mut self, process: usize, leaf: u32) -> &[FrameId] {
        let a = self.analysis;
        self.cache
            .entry((process, leaf))
            .or_insert_with(|| a.stack_ids(process, leaf))
    }
}

/// Colours of the tiers, from the one palette (web/palette.json), shared by the SVG and
/// HTML flamegraphs.
pub(crate) fn tier_color(t: Tier) -> &'static str {
    crate::palette::tier_colour(t)
}

#[cfg(test)]
mod tests;

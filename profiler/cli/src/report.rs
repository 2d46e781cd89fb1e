//! `prof report`: load a profile (recovering what a cut or damaged file still holds; vmprof
//! logs, `perf script` output and folded stacks are imported) and print it as text, JSON
//! or folded stacks, or export it (speedscope, pprof, Firefox, HTML, SVG).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use prof_analysis::export::{ExportFormat, ExportOptions};
use prof_format::{read_profile, Error as FormatError, Profile, HEADER_LEN};

use crate::{Format, ReportArgs};

/// Reads a profile file. Returns the profile and one-line warnings about damage.
/// Gzipped input (vmprof logs) expands to at most `max_gunzipped` bytes.
pub fn load(path: &Path, max_gunzipped: u64) -> Result<(Profile, Vec<String>)> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("{shown}: cannot read"))?;
    decode_limited(&bytes, max_gunzipped).map_err(|e| anyhow!("{shown}: {e}"))
}

/// Decodes profile bytes; a file corrupt midway yields the records before the corruption.
pub fn decode(bytes: &[u8]) -> Result<(Profile, Vec<String>), String> {
    decode_limited(bytes, prof_analysis::import::MAX_GUNZIPPED)
}

/// [`decode`] with gzipped input expanded to at most `max_gunzipped` bytes.
pub fn decode_limited(bytes: &[u8], max_gunzipped: u64) -> Result<(Profile, Vec<String>), String> {
    use prof_analysis::import::{import_bytes_limited, ImportError};
    // Other tools' profiles are recognized from their content.
    if !bytes.starts_with(prof_format::MAGIC) && prof_analysis::import::detect(bytes).is_some() {
        return import_bytes_limited(bytes, max_gunzipped)
            .map(|i| (i.profile, Vec::new()))
            .map_err(|e| match e {
                ImportError::GzipTooLarge { limit } => format!(
                    "the gzipped input expands to more than {} MiB; raise the bound with --max-gunzip-mb if it is genuine",
                    limit >> 20
                ),
                e => e.to_string(),
            });
    }
    let mut warnings = Vec::new();
    let mut cut = bytes.len();
    let profile = loop {
        match read_profile(&bytes[..cut]) {
            Ok(p) => break p,
            Err(FormatError::Corrupt { offset, what }) if offset > HEADER_LEN && offset < cut => {
                warnings.push(format!(
                    "corrupt at byte {offset} ({what}); reporting the records before it"
                ));
                cut = offset;
            }
            Err(FormatError::BadMagic) => {
                // Says what the bytes look like and which formats were expected.
                return Err(match prof_analysis::import::import_bytes(bytes) {
                    Err(e) => e.to_string(),
                    Ok(_) => {
                        "not a prof profile (it does not start with the prof magic bytes)".into()
                    }
                });
            }
            Err(FormatError::TooShort(n)) => {
                return Err(format!(
                    "not a prof profile (only {n} bytes, shorter than a header)"
                ))
            }
            Err(FormatError::Corrupt { offset, what }) => {
                return Err(format!(
                    "not a readable prof profile: corrupt at byte {offset} ({what})"
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    if profile.truncated {
        warnings.push(
            "the profile is truncated (it ends inside a record); reporting the whole records before the cut"
                .into(),
        );
    }
    if profile.processes.is_empty() {
        return Err("the profile holds no process (nothing was recorded)".into());
    }
    Ok((profile, warnings))
}

pub fn report(args: ReportArgs) -> Result<()> {
    let (profile, warnings) = load(&args.path, args.max_gunzip_mb.saturating_mul(1 << 20))?;
    for w in &warnings {
        eprintln!("prof: warning: {}: {w}", args.path.display());
    }
    let rules = crate::jit::tier_rules(args.tier_rules.as_deref()).map_err(|e| anyhow!(e))?; // [issue 5]
    let mut sym = prof_analysis::Symbolizer::new();
    let mut analysis = prof_analysis::analyze_with(&profile, &mut sym, &rules);
    analysis.set_native_internals(args.native_internals);
    if let Some(base) = &args.diff {
        let out = diff_report(&args, base, &profile, &analysis, &mut sym, &rules)?;
        return emit(&args, out.as_bytes());
    }
    let out = match args.format {
        Format::Text => {
            let summary = analysis.summary_for_people(args.native_internals);
            prof_analysis::render_text(&summary, args.top.unwrap_or(20))
        }
        Format::Json => {
            let summary = analysis.summary();
            let mut v = serde_json::to_value(&summary).context("encoding the summary")?;
            if let (Some(n), Some(funcs)) = (
                args.top,
                v.get_mut("functions").and_then(|f| f.as_array_mut()),
            ) {
                funcs.truncate(n);
            }
            let mut s = serde_json::to_string_pretty(&v).context("encoding the summary")?;
            s.push('\n');
            s
        }
        Format::Collapsed => analysis.collapsed(),
        Format::Speedscope => return export(&args, ExportFormat::Speedscope, &profile, &analysis),
        Format::Pprof => return export(&args, ExportFormat::Pprof, &profile, &analysis),
        Format::Firefox => return export(&args, ExportFormat::Firefox, &profile, &analysis),
        Format::Html => return export(&args, ExportFormat::Html, &profile, &analysis),
        Format::Svg => return export(&args, ExportFormat::Svg, &profile, &analysis),
    };
    emit(&args, out.as_bytes())
}

/// `prof report A --diff B`: the biggest changes of function shares from B to A.
fn diff_report(
    args: &ReportArgs,
    base_path: &std::path::Path,
    profile: &Profile,
    analysis: &prof_analysis::Analysis,
    sym: &mut prof_analysis::Symbolizer,
    rules: &prof_analysis::TierRules,
) -> Result<String> {
    use prof_analysis::tree::{Filter, NativeMode, ProfileIndex};
    let (base, warnings) = load(base_path, args.max_gunzip_mb.saturating_mul(1 << 20))?;
    for w in &warnings {
        eprintln!("prof: warning: {}: {w}", base_path.display());
    }
    let mut base_analysis = prof_analysis::analyze_with(&base, sym, rules);
    base_analysis.set_native_internals(args.native_internals);
    let a = ProfileIndex::new(profile, analysis);
    let b = ProfileIndex::new(&base, &base_analysis);
    let native = if !args.native_internals && a.mostly_program_code() {
        NativeMode::Hide
    } else {
        NativeMode::Show
    };
    let filter = Filter {
        native,
        ..Filter::default()
    };
    let rows = prof_analysis::diff::diff_functions(&a, &b, &filter, &filter)
        .map_err(|e| anyhow!("comparing the profiles: {e}"))?;
    match args.format {
        Format::Text => Ok(format!(
            "{} compared with the base {} ({} view; shares of each profile's samples)\n{}",
            args.path.display(),
            base_path.display(),
            if native == NativeMode::Hide {
                "code-only"
            } else {
                "every frame"
            },
            prof_analysis::diff::render_diff_text(&rows, args.top.unwrap_or(20))
        )),
        Format::Json => {
            let top = args.top.unwrap_or(rows.len());
            let v = serde_json::json!({
                "profile": args.path.display().to_string(),
                "base": base_path.display().to_string(),
                "native": native.name(),
                "weight": a.tier_totals().iter().sum::<u64>(),
                "base_weight": b.tier_totals().iter().sum::<u64>(),
                "functions": rows.iter().take(top).map(|r| serde_json::json!({
                    "name": r.name,
                    "module": r.module,
                    "self": r.self_,
                    "base_self": r.base_self,
                    "delta_self": r.delta_self(),
                    "total": r.total,
                    "base_total": r.base_total,
                    "delta_total": r.delta_total(),
                })).collect::<Vec<_>>(),
            });
            let mut s = serde_json::to_string_pretty(&v).context("encoding the diff")?;
            s.push('\n');
            Ok(s)
        }
        other => bail!(
            "--diff writes text or json, not {}",
            format!("{other:?}").to_lowercase()
        ),
    }
}

fn export(
    args: &ReportArgs,
    format: ExportFormat,
    profile: &Profile,
    analysis: &prof_analysis::Analysis,
) -> Result<()> {
    if format.is_binary() && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "the {} output is binary: write it to a file with -o FILE (or redirect stdout)",
            format.name()
        );
    }
    let bytes = prof_analysis::export::export(format, profile, analysis, &ExportOptions::default())
        .with_context(|| format!("exporting {}", args.path.display()))?;
    emit(args, &bytes)
}

/// Writes the report to `-o FILE`, else to stdout.
fn emit(args: &ReportArgs, bytes: &[u8]) -> Result<()> {
    match &args.output {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
        }
        None => write_stdout(bytes),
    }
}

/// Writes to stdout; a closed pipe (`prof report | head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_profiles_are_refused_clearly() {
        assert!(decode(b"hello world, this is text")
            .unwrap_err()
            .starts_with("not a prof profile"));
        assert!(decode(b"")
            .unwrap_err()
            .starts_with("not a prof profile (only 0 bytes"));
        assert!(decode(b"\x7fELF\x02\x01\x01")
            .unwrap_err()
            .starts_with("not a prof profile"));
        let header = prof_format::LogWriter::new(Vec::new())
            .into_inner()
            .unwrap();
        assert!(decode(&header).unwrap_err().contains("no process"));
    }
}

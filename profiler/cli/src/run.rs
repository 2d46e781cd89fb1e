//! `prof run`: start the command with the agent preloaded, wait for it, merge the logs of
//! every process it made into one profile and print a summary.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::{refuse, Coded};
use crate::{merge, report, signals, target, RunArgs};

const AGENT_FILE: &str = "libprof_agent.so";

pub fn run(args: RunArgs) -> Result<i32> {
    let shown = target::display(&args.command);
    let search_path = std::env::var_os("PATH");
    let program = target::resolve(&args.command[0], search_path.as_deref()).map_err(refuse)?;
    target::check(&program, search_path.as_deref()).map_err(refuse)?;
    let agent = find_agent()?;
    let rules = crate::jit::tier_rules(args.tier_rules.as_deref()).map_err(refuse)?; // [issue 5]
    let output = Output::prepare(&args.output)?;
    let logs = tempfile::Builder::new()
        .prefix("prof-run-")
        .tempdir()
        .context("creating a temporary directory for the logs")?;

    if args.rate > 5000 {
        eprintln!(
            "prof: --rate {}: every sample costs a timer interrupt and a signal; above ~5000 Hz they slow the program down and skew what it spends",
            args.rate
        );
    }
    signals::install().context("installing signal handlers")?;
    let mut command = std::process::Command::new(&program);
    command
        .arg0(&args.command[0])
        .args(&args.command[1..])
        .env(
            "LD_PRELOAD",
            preload_value(&agent, std::env::var_os("LD_PRELOAD").as_deref()),
        )
        .env("PROF_DIR", logs.path())
        .env("PROF_RATE", args.rate.to_string())
        .env("PROF_MODE", args.mode.env_value());
    // [issue 5] the runtimes' JIT maps, appended to the user's settings.
    let jit_maps = crate::jit::JitMaps::configure(&mut command, args.no_jit_maps, logs.path());
    crate::markers::configure(&mut command, logs.path(), std::env::var_os("PYTHONPATH"));
    let mut child = command
        .spawn()
        .map_err(|e| refuse(format!("{shown}: cannot run: {e}")))?;
    let pid = child.id() as i32;
    signals::child_started(pid);
    // The summary's symbolization starts while the command runs.
    let warmer = if args.quiet {
        None
    } else {
        crate::warm::Warmer::start(logs.path().to_path_buf(), rules.clone())
    };
    wait_exited_unreaped(pid).context("waiting for the command")?;
    signals::child_exited();
    let sym = warmer.map(|w| w.finish());
    let status = child.wait().context("waiting for the command")?;
    let (code, killed_by) = match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        (None, None) => (1, None),
    };

    let mut merged = merge::merge_dir(logs.path())?;
    // [issue 5] the logs hold the JIT maps now: remove the map files only prof asked for.
    if let Ok((profile, _)) = report::decode(&merged.bytes) {
        jit_maps.clean_up(&profile);
        // [issue 13] the program's sampled script files, for the per-line view.
        if !args.no_source && !profile.truncated {
            if let Ok(cwd) = std::env::current_dir() {
                let roots = crate::source::program_roots(&cwd, &args.command);
                merged
                    .bytes
                    .extend(crate::source::source_records(&profile, &cwd, &roots));
            }
        }
    }
    for w in &merged.warnings {
        eprintln!("prof: warning: {w}");
    }
    if merged.logs == 0 {
        let why = match killed_by {
            Some(s) => {
                format!(" ({shown} was killed by signal {s} before the agent wrote its log)")
            }
            None => String::new(),
        };
        let msg = format!("no profile was written: the agent did not load into {shown}{why}");
        return Err(anyhow::Error::new(Coded {
            code: if code != 0 { code } else { 1 },
            msg,
        }));
    }
    output.write(&merged.bytes)?;

    if !args.quiet {
        let sym = sym.unwrap_or_default();
        print_summary(
            &merged.bytes,
            &args.output,
            args.native_internals,
            &rules,
            sym,
        );
    }
    if let Some(web) = &args.web {
        return crate::web::after_run(web, &args.output, code, args.data.as_deref());
    }
    Ok(code)
}

/// Waits until the child has exited without reaping it, so that its pid cannot be reused
/// while the signal handler may still forward to it.
fn wait_exited_unreaped(pid: i32) -> std::io::Result<()> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    loop {
        match waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The agent library: `$PROF_AGENT`, else next to the `prof` executable, else in
/// `../lib/prof/` relative to it (an installed layout).
fn find_agent() -> Result<PathBuf> {
    let agent = if let Some(p) = std::env::var_os("PROF_AGENT") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(refuse(format!(
                "PROF_AGENT={}: no such file (it should name {AGENT_FILE})",
                p.display()
            )));
        }
        p
    } else {
        let exe = std::env::current_exe().context("locating the prof executable")?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let candidates = [
            dir.join(AGENT_FILE),
            dir.join("../lib/prof").join(AGENT_FILE),
        ];
        match candidates.iter().find(|c| c.is_file()) {
            Some(c) => c.clone(),
            None => {
                return Err(refuse(format!(
                    "cannot find the agent library {AGENT_FILE} (looked in {} and {}); build it with `cargo build --workspace` or set PROF_AGENT",
                    dir.display(),
                    dir.join("../lib/prof").display()
                )))
            }
        }
    };
    let agent = agent
        .canonicalize()
        .with_context(|| format!("resolving {}", agent.display()))?;
    if agent
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|&b| b == b' ' || b == b':')
    {
        return Err(refuse(format!(
            "the agent's path {} contains a space or a colon, which LD_PRELOAD cannot express; move it or set PROF_AGENT",
            agent.display()
        )));
    }
    Ok(agent)
}

/// `LD_PRELOAD` with the agent first, keeping whatever the user preloads after it.
fn preload_value(agent: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = agent.as_os_str().to_owned();
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(":");
        v.push(e);
    }
    v
}

/// The profile's destination. A temporary file next to it is created before the command
/// runs (so an unwritable destination is reported before, not after, a long run) and is
/// renamed into place at the end; an existing profile becomes `PATH.old`.
struct Output {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl Output {
    fn prepare(path: &Path) -> Result<Output> {
        let shown = path.display();
        if path.is_dir() {
            return Err(refuse(format!(
                "cannot write the profile to {shown}: it is a directory"
            )));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o666)) // less the umask
            .tempfile_in(dir)
            .map_err(|e| {
                refuse(format!(
                    "cannot write the profile to {shown}: {}",
                    io_reason(&e)
                ))
            })?;
        Ok(Output {
            path: path.to_path_buf(),
            tmp,
        })
    }

    fn write(mut self, bytes: &[u8]) -> Result<()> {
        let shown = self.path.display().to_string();
        self.tmp
            .write_all(bytes)
            .with_context(|| format!("writing the profile to {shown}"))?;
        self.tmp
            .flush()
            .with_context(|| format!("writing the profile to {shown}"))?;
        if self.path.symlink_metadata().is_ok() {
            let mut old = self.path.clone().into_os_string();
            old.push(".old");
            std::fs::rename(&self.path, &old)
                .with_context(|| format!("renaming the existing {shown} to {shown}.old"))?;
        }
        self.tmp
            .persist(&self.path)
            .with_context(|| format!("writing the profile to {shown}"))?;
        Ok(())
    }
}

/// The OS's reason ("Permission denied"), without paths or "(os error N)".
fn io_reason(e: &std::io::Error) -> String {
    let s = match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.to_string(),
    };
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn print_summary(
    bytes: &[u8],
    path: &Path,
    native_internals: bool,
    rules: &prof_analysis::TierRules,
    mut sym: prof_analysis::Symbolizer,
) {
    let (profile, _) = match report::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("prof: warning: cannot summarize the profile: {e}");
            return;
        }
    };
    let mut analysis = prof_analysis::analyze_with(&profile, &mut sym, rules);
    analysis.set_native_internals(native_internals);
    let summary = analysis.summary_for_people(native_internals);
    let text = prof_analysis::render_text(&summary, 10);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n{}", text.trim_end());
    let _ = writeln!(
        err,
        "prof: profile written to {} ({} bytes); see `prof report {}`",
        path.display(),
        bytes.len(),
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_keeps_existing_entries_after_the_agent() {
        let a = Path::new("/x/libprof_agent.so");
        assert_eq!(preload_value(a, None), "/x/libprof_agent.so");
        assert_eq!(
            preload_value(a, Some(OsStr::new(""))),
            "/x/libprof_agent.so"
        );
        assert_eq!(
            preload_value(a, Some(OsStr::new("/y/l.so"))),
            "/x/libprof_agent.so:/y/l.so"
        );
    }

    #[test]
    fn unwritable_output_is_refused_before_running() {
        let err = Output::prepare(Path::new("/nonexistent-dir/prof.data"))
            .err()
            .unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            format!("{err:#}").contains("cannot write the profile to /nonexistent-dir/prof.data")
        );
        let d = tempfile::tempdir().unwrap();
        let err = Output::prepare(d.path()).err().unwrap();
        assert!(format!("{err:#}").contains("is a directory"));
    }

    #[test]
    fn existing_output_becomes_old() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("prof.data");
        std::fs::write(&p, b"previous").unwrap();
        let o = Output::prepare(&p).unwrap();
        o.write(b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::read(d.path().join("prof.data.old")).unwrap(),
            b"previous"
        );
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }
}

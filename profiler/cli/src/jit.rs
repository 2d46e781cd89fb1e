//! JIT maps and tier rules for `prof run` and `prof report` (issue 5).
//!
//! [`tier_rules`]: the built-in tier rules plus the user's `--tier-rules FILE`.
//!
//! [`JitMaps`]: turn on the runtimes' own JIT code maps in the
//! command's environment, appending to the user's settings, never replacing them; and
//! after the run, remove the `/tmp/perf-PID.map` files that only exist because prof asked
//! for them (the agent has copied them into the profile by then).
//!
//! - Node/V8: `NODE_OPTIONS += --perf-basic-prof --interpreted-frames-native-stack` (the
//!   second flag gives every interpreted function a frame of its own in native stacks,
//!   so the frame-pointer walk sees JS functions instead of one interpreter frame).
//! - CPython: nothing. The agent reads CPython's frames itself; 3.12+'s perf trampolines
//!   (`PYTHONPERFSUPPORT=1`) would only add `py::` names for frames prof already names, and
//!   cost a lot: with an eval-frame hook installed, CPython stops inlining Python-to-Python
//!   calls, so every call goes through C (28% slower calls measured on 3.12, ~7 native
//!   frames per Python frame, and 6% of a Django profile's stacks cut at the depth limit).
//!   A user's own `PYTHONPERFSUPPORT` is kept, and its map read.
//! - HotSpot: `JAVA_TOOL_OPTIONS += -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit
//!   -XX:+PreserveFramePointer` (the map is written at exit, before the agent's last
//!   write; without frame pointers in compiled code ~80% of the stacks through C2 code
//!   stopped at their leaf here). The JVM prints `Picked up JAVA_TOOL_OPTIONS: ...` on
//!   stderr.
//! - PyPy: `PYPYLOG=jit-backend-addr,jit-tracing,jit-blackhole,gc-collect-step:
//!   $PROF_DIR/pypy-%d.log` when the user has no PYPYLOG of their own: compiled loops and
//!   bridges with their addresses, and the time spent tracing and in major collections.
//!   The file lives in prof's temporary log directory and goes with it. Not what does not
//!   pay for itself (bench/RESULTS-pypy.md): `gc-minor` (thousands of sections a second:
//!   ~6% of the program's CPU time to tell ~2% of it as minor GC) and `jit-log-opt-bridge`
//!   (~4%: the agent names a bridge from the loop it jumps back to instead).

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use prof_format::Profile;

const NODE_FLAGS: [&str; 2] = ["--perf-basic-prof", "--interpreted-frames-native-stack"];
const JAVA_FLAGS: [&str; 3] = [
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:+DumpPerfMapAtExit",
    "-XX:+PreserveFramePointer",
];
const PYPY_SECTIONS: &str = "jit-backend-addr,jit-tracing,jit-blackhole,gc-collect-step";

/// The built-in tier rules, preceded by those in `file` if given. The error is one line
/// naming the file and line (`rules.txt:3: unknown tier "fast" (...)`).
pub fn tier_rules(file: Option<&Path>) -> Result<prof_analysis::TierRules, String> {
    match file {
        None => Ok(prof_analysis::TierRules::builtin()),
        Some(f) => {
            prof_analysis::TierRules::with_user_file(f).map_err(|e| format!("bad tier rules: {e}"))
        }
    }
}

/// What `prof run` changed in the environment, for the clean-up after the run.
#[derive(Debug, Default)]
pub struct JitMaps {
    /// Whether prof turned maps on at all (`--no-jit-maps` not given).
    enabled: bool,
    /// The user had asked for perf maps through the environment already: every map is
    /// theirs, none is removed.
    user_env: bool,
    started: Option<SystemTime>,
}

/// `existing` with `flags` appended (those not already in it), space-separated.
fn append_flags(existing: Option<&OsStr>, flags: &[&str]) -> OsString {
    let mut v = existing.map(OsStr::to_os_string).unwrap_or_default();
    let have = v.to_string_lossy().into_owned();
    for f in flags {
        if have.split_ascii_whitespace().any(|w| w == *f) {
            continue;
        }
        if !v.is_empty() {
            v.push(" ");
        }
        v.push(f);
    }
    v
}

/// True when a setting in the user's own environment asks a runtime for a perf map.
fn env_asks_for_maps(get: &dyn Fn(&str) -> Option<OsString>) -> bool {
    let has = |var: &str, pats: &[&str]| {
        get(var).is_some_and(|v| {
            let v = v.to_string_lossy();
            pats.iter().any(|p| v.contains(p))
        })
    };
    has("NODE_OPTIONS", &["--perf-basic-prof", "--perf-prof"])
        || ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"]
            .iter()
            .any(|v| has(v, &["DumpPerfMap"]))
        || get("PYTHONPERFSUPPORT").is_some_and(|v| !v.is_empty() && v != "0")
}

/// True when a process's command line asks for a perf map itself.
fn argv_asks_for_maps(argv: &[String]) -> bool {
    argv.iter().enumerate().any(|(i, a)| {
        a.starts_with("--perf-basic-prof")
            || a.starts_with("--perf-prof")
            || a.contains("DumpPerfMap")
            || a == "-Xperf"
            || (a == "-X" && argv.get(i + 1).is_some_and(|n| n == "perf"))
    })
}

impl JitMaps {
    /// Sets the runtimes' JIT map options on `cmd` (unless `disabled`), from the current
    /// environment plus what prof adds.
    pub fn configure(cmd: &mut Command, disabled: bool, log_dir: &Path) -> JitMaps {
        Self::configure_with(cmd, disabled, log_dir, &|k| std::env::var_os(k))
    }

    fn configure_with(
        cmd: &mut Command,
        disabled: bool,
        log_dir: &Path,
        get: &dyn Fn(&str) -> Option<OsString>,
    ) -> JitMaps {
        if disabled {
            return JitMaps::default();
        }
        let user_env = env_asks_for_maps(get);
        let node_had_maps =
            get("NODE_OPTIONS").is_some_and(|v| v.to_string_lossy().contains("--perf-basic-prof"));
        if !node_had_maps {
            // node writes a V8 log into its working directory when --perf-basic-prof is
            // on; the agent removes it at exit (profiler/agent/src/jit.rs).
            cmd.env("PROF_V8_LOG", "remove");
        }
        cmd.env(
            "NODE_OPTIONS",
            append_flags(get("NODE_OPTIONS").as_deref(), &NODE_FLAGS),
        );
        cmd.env(
            "JAVA_TOOL_OPTIONS",
            append_flags(get("JAVA_TOOL_OPTIONS").as_deref(), &JAVA_FLAGS),
        );
        if get("PYPYLOG").is_none() {
            let mut v = OsString::from(format!("{PYPY_SECTIONS}:"));
            v.push(log_dir.join("pypy-%d.log"));
            cmd.env("PYPYLOG", v);
        }
        JitMaps {
            enabled: true,
            user_env,
            // File times come from the kernel's coarse clock (a tick behind): a second of
            // slack keeps a map written right at the start from looking older.
            started: SystemTime::now().checked_sub(std::time::Duration::from_secs(1)),
        }
    }

    /// Removes the perf maps prof caused: those of the profile's processes, written
    /// during the run, by a process whose command line did not ask for one, when the
    /// user's environment did not either. Returns the files removed.
    pub fn clean_up(&self, profile: &Profile) -> Vec<String> {
        self.clean_up_in(profile, Path::new("/tmp"))
    }

    fn clean_up_in(&self, profile: &Profile, dir: &Path) -> Vec<String> {
        let mut removed = Vec::new();
        let Some(started) = self.started.filter(|_| self.enabled && !self.user_env) else {
            return removed;
        };
        for p in &profile.processes {
            if argv_asks_for_maps(&p.info.argv) {
                continue;
            }
            let path = dir.join(format!("perf-{}.map", p.info.pid));
            let fresh = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.file_type().is_file())
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t >= started);
            if fresh && std::fs::remove_file(&path).is_ok() {
                removed.push(path.display().to_string());
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn envs(cmd: &Command) -> HashMap<String, String> {
        cmd.get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    #[test]
    fn settings_are_appended_never_replaced() {
        let user: HashMap<&str, &str> = [
            ("NODE_OPTIONS", "--max-old-space-size=512"),
            ("JAVA_TOOL_OPTIONS", "-Xmx1g -XX:+PreserveFramePointer"),
            ("PYTHONPERFSUPPORT", "0"),
            ("PYPYLOG", "gc:/mine.log"),
        ]
        .into();
        let get = |k: &str| user.get(k).map(OsString::from);
        let mut cmd = Command::new("true");
        let m = JitMaps::configure_with(&mut cmd, false, Path::new("/d"), &get);
        let e = envs(&cmd);
        assert_eq!(
            e["NODE_OPTIONS"],
            "--max-old-space-size=512 --perf-basic-prof --interpreted-frames-native-stack"
        );
        assert_eq!(
            e["JAVA_TOOL_OPTIONS"],
            "-Xmx1g -XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
        );
        assert!(!e.contains_key("PYTHONPERFSUPPORT"), "the user's 0 stays");
        assert!(!e.contains_key("PYPYLOG"), "the user's PYPYLOG stays");
        assert_eq!(e["PROF_V8_LOG"], "remove");
        assert!(!m.user_env);

        let none = |_: &str| None;
        let mut cmd = Command::new("true");
        JitMaps::configure_with(&mut cmd, false, Path::new("/d"), &none);
        let e = envs(&cmd);
        assert_eq!(
            e["NODE_OPTIONS"],
            "--perf-basic-prof --interpreted-frames-native-stack"
        );
        assert!(
            !e.contains_key("PYTHONPERFSUPPORT"),
            "CPython's perf trampolines stay off"
        );
        assert_eq!(
            e["PYPYLOG"],
            "jit-backend-addr,jit-tracing,jit-blackhole,gc-collect-step:/d/pypy-%d.log"
        );

        let mut cmd = Command::new("true");
        let m = JitMaps::configure_with(&mut cmd, true, Path::new("/d"), &none);
        assert!(envs(&cmd).is_empty(), "--no-jit-maps changes nothing");
        assert!(!m.enabled);
    }

    #[test]
    fn the_users_own_maps_are_kept() {
        let node = |k: &str| (k == "NODE_OPTIONS").then(|| OsString::from("--perf-basic-prof"));
        assert!(env_asks_for_maps(&node));
        let py = |k: &str| (k == "PYTHONPERFSUPPORT").then(|| OsString::from("1"));
        assert!(env_asks_for_maps(&py));
        assert!(!env_asks_for_maps(&|_| None));
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(argv_asks_for_maps(&argv(&[
            "node",
            "--perf-basic-prof",
            "x.js"
        ])));
        assert!(argv_asks_for_maps(&argv(&[
            "java",
            "-XX:+DumpPerfMapAtExit",
            "Hot"
        ])));
        assert!(argv_asks_for_maps(&argv(&[
            "python3", "-X", "perf", "a.py"
        ])));
        assert!(!argv_asks_for_maps(&argv(&["node", "x.js", "-X"])));
    }

    #[test]
    fn clean_up_removes_only_fresh_maps_of_profiled_processes() {
        let d = tempfile::tempdir().unwrap();
        let mut w = prof_format::LogWriter::new(Vec::new());
        for (pid, argv) in [
            (11, vec!["node", "a.js"]),
            (12, vec!["node", "--perf-basic-prof", "b.js"]),
        ] {
            w.process(&prof_format::ProcessInfo {
                pid,
                ppid: 1,
                start_unix_ns: 0,
                period_ns: 1,
                mode: prof_format::Mode::Cpu,
                timer: prof_format::TimerSource::PerfEvent,
                time_unit_ns: 1,
                max_depth: 1,
                exe: String::new(),
                argv: argv.into_iter().map(String::from).collect(),
                agent_version: String::new(),
            });
        }
        let profile = prof_format::read_profile(&w.into_inner().unwrap()).unwrap();
        let mut cmd = Command::new("true");
        let m = JitMaps::configure_with(&mut cmd, false, d.path(), &|_| None);
        for n in [11, 12, 13] {
            std::fs::write(d.path().join(format!("perf-{n}.map")), "1 2 x\n").unwrap();
        }
        let removed = m.clean_up_in(&profile, d.path());
        assert_eq!(
            removed,
            vec![d.path().join("perf-11.map").display().to_string()]
        );
        assert!(
            d.path().join("perf-12.map").exists(),
            "asked for on its command line"
        );
        assert!(
            d.path().join("perf-13.map").exists(),
            "not a profiled process"
        );
        // The user's environment asked for maps: nothing is removed.
        std::fs::write(d.path().join("perf-11.map"), "1 2 x\n").unwrap();
        let node = |k: &str| (k == "NODE_OPTIONS").then(|| OsString::from("--perf-basic-prof"));
        let m = JitMaps::configure_with(&mut Command::new("true"), false, d.path(), &node);
        assert!(m.clean_up_in(&profile, d.path()).is_empty());
        // --no-jit-maps: nothing is removed.
        let m = JitMaps::configure_with(&mut Command::new("true"), true, d.path(), &|_| None);
        assert!(m.clean_up_in(&profile, d.path()).is_empty());
    }
}

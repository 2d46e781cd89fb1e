//! Tier classification: interpreter, warmup (baseline compilers, tracing, compiler
//! threads), JIT-compiled code, native code, GC, kernel. Rules are data: a built-in rule
//! file (rules/builtin.rules) plus an optional user file that takes precedence.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::symbolize::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Interpreter,
    Warmup,
    Jit,
    Native,
    Gc,
    Kernel,
}

impl Tier {
    pub const ALL: [Tier; 6] = [
        Tier::Interpreter,
        Tier::Warmup,
        Tier::Jit,
        Tier::Native,
        Tier::Gc,
        Tier::Kernel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Interpreter => "interpreter",
            Tier::Warmup => "warmup",
            Tier::Jit => "jit",
            Tier::Native => "native",
            Tier::Gc => "gc",
            Tier::Kernel => "kernel",
        }
    }

    pub fn from_name(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Weights per tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCounts {
    pub interpreter: u64,
    pub warmup: u64,
    pub jit: u64,
    pub native: u64,
    pub gc: u64,
    #[serde(default)]
    pub kernel: u64,
}

impl TierCounts {
    pub fn add(&mut self, t: Tier, w: u64) {
        *self.slot(t) += w;
    }

    pub fn get(&self, t: Tier) -> u64 {
        match t {
            Tier::Interpreter => self.interpreter,
            Tier::Warmup => self.warmup,
            Tier::Jit => self.jit,
            Tier::Native => self.native,
            Tier::Gc => self.gc,
            Tier::Kernel => self.kernel,
        }
    }

    fn slot(&mut self, t: Tier) -> &mut u64 {
        match t {
            Tier::Interpreter => &mut self.interpreter,
            Tier::Warmup => &mut self.warmup,
            Tier::Jit => &mut self.jit,
            Tier::Native => &mut self.native,
            Tier::Gc => &mut self.gc,
            Tier::Kernel => &mut self.kernel,
        }
    }

    pub fn merge(&mut self, o: &TierCounts) {
        for t in Tier::ALL {
            self.add(t, o.get(t));
        }
    }

    pub fn total(&self) -> u64 {
        Tier::ALL.iter().map(|&t| self.get(t)).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Function,
    Module,
    File,
    Thread,
    Phase,
}

#[derive(Debug, Clone)]
struct Rule {
    /// None: `none` rules, whose frames decide no tier (the search goes on outwards).
    tier: Option<Tier>,
    field: Field,
    re: Regex,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("{origin}:{line}: {what}")]
    Syntax {
        origin: String,
        line: usize,
        what: String,
    },
    #[error("cannot read tier rules {path}: {reason}")]
    Io { path: String, reason: String },
}

/// An ordered rule list. [`TierRules::builtin`] has the built-in rules; user rules go first.
#[derive(Debug, Clone)]
pub struct TierRules {
    rules: Vec<Rule>,
}

const BUILTIN: &str = include_str!("../rules/builtin.rules");

impl TierRules {
    pub fn builtin() -> TierRules {
        // The built-in file is compiled in and tested to parse; never panic regardless.
        TierRules {
            rules: parse(BUILTIN, "builtin.rules").unwrap_or_default(),
        }
    }

    /// The built-in rules, preceded by the rules in `text` (named `origin` in errors).
    pub fn with_user_rules(text: &str, origin: &str) -> Result<TierRules, RuleError> {
        let mut rules = parse(text, origin)?;
        rules.extend(TierRules::builtin().rules);
        Ok(TierRules { rules })
    }

    /// [`with_user_rules`](Self::with_user_rules) from a file.
    pub fn with_user_file(path: &std::path::Path) -> Result<TierRules, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::with_user_rules(&text, &path.display().to_string())
    }

    /// The tier a thread's name forces on all its samples (compiler and GC threads).
    pub fn thread_tier(&self, name: &str) -> Option<Tier> {
        self.rules
            .iter()
            .find(|r| r.field == Field::Thread && r.re.is_match(name))
            .and_then(|r| r.tier)
    }

    /// The tier a runtime phase gives the samples taken during it (PyPy's `jit-tracing`,
    /// `gc-minor`: JIT_PHASE records), if any phase rule matches its name.
    pub fn phase_tier(&self, name: &str) -> Option<Tier> {
        self.rules
            .iter()
            .find(|r| r.field == Field::Phase && r.re.is_match(name))
            .and_then(|r| r.tier)
    }

    /// The tier a frame's own name, module or source file gives, if any rule matches it.
    pub fn frame_tier(&self, f: &Frame) -> Option<Tier> {
        self.rules
            .iter()
            .find(|r| match r.field {
                Field::Function => r.re.is_match(&f.name),
                Field::Module => r.re.is_match(&f.module),
                Field::File => f.file.as_deref().is_some_and(|p| r.re.is_match(p)),
                Field::Thread | Field::Phase => false,
            })
            .and_then(|r| r.tier)
    }
}

fn parse(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: String| RuleError::Syntax {
            origin: origin.to_string(),
            line: i + 1,
            what,
        };
        // TIER, FIELD, then the rest of the line (which may contain spaces) is the regex.
        let (tier, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let (field, pattern) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let pattern = pattern.trim();
        let tier = match tier {
            "none" => None,
            t => Some(Tier::from_name(t).ok_or_else(|| {
                err(format!(
                    "unknown tier {t:?} (expected interpreter, warmup, jit, native, gc, kernel or none)"
                ))
            })?),
        };
        let field = match field {
            "function" => Field::Function,
            "module" => Field::Module,
            "file" => Field::File,
            "thread" => Field::Thread,
            "phase" => Field::Phase,
            other => {
                return Err(err(format!(
                    "unknown field {other:?} (expected function, module, file, thread or phase)"
                )))
            }
        };
        if pattern.is_empty() {
            return Err(err("missing regular expression (TIER FIELD REGEX)".into()));
        }
        let re = Regex::new(pattern).map_err(|e| err(format!("bad regular expression: {e}")))?;
        rules.push(Rule { tier, field, re });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, module: &str) -> Frame {
        Frame::bare(name, module)
    }

    #[test]
    fn builtin_rules_classify_runtimes() {
        parse(BUILTIN, "builtin.rules").expect("the built-in rules must parse");
        let r = TierRules::builtin();
        assert_eq!(
            r.frame_tier(&f("JS:~fib /x.js:1:1", "[jit]")),
            Some(Tier::Interpreter)
        );
        assert_eq!(
            r.frame_tier(&f("JS:^fib /x.js:1:1", "[jit]")),
            Some(Tier::Warmup)
        );
        assert_eq!(
            r.frame_tier(&f("JS:+fib /x.js:1:1", "[jit]")),
            Some(Tier::Warmup)
        );
        assert_eq!(
            r.frame_tier(&f("JS:*fib /x.js:1:1", "[jit]")),
            Some(Tier::Jit)
        );
        assert_eq!(
            r.frame_tier(&f("Builtins_LdaZeroHandler", "node")),
            Some(Tier::Interpreter)
        );
        assert_eq!(
            r.frame_tier(&f("v8::internal::compiler::PipelineImpl::Run", "node")),
            Some(Tier::Warmup)
        );
        assert_eq!(
            r.frame_tier(&f("v8::internal::Heap::CollectGarbage", "node")),
            Some(Tier::Gc)
        );
        // Node's bindings and addons are native; V8's builtins decide nothing.
        assert_eq!(
            r.frame_tier(&f(
                "node::crypto::Hash::HashUpdate(char const*, unsigned long)",
                "node"
            )),
            Some(Tier::Native)
        );
        assert_eq!(
            r.frame_tier(&f(
                "v8::Maybe<bool> node::fs::ReadFileUtf8(v8::Isolate*)",
                "node"
            )),
            Some(Tier::Native)
        );
        assert_eq!(
            r.frame_tier(&f("napi_call", "addon.node")),
            Some(Tier::Native)
        );
        assert_eq!(r.frame_tier(&f("Builtins_LoadIC", "node")), None);
        assert_eq!(
            r.frame_tier(&f(
                "v8::internal::JsonStringifier::Serialize_(bool)",
                "node"
            )),
            None
        );
        assert_eq!(
            r.frame_tier(&f("_PyEval_EvalFrameDefault", "libpython3.11.so")),
            Some(Tier::Interpreter)
        );
        assert_eq!(
            r.frame_tier(&f("gc_collect_main", "python3")),
            Some(Tier::Gc)
        );
        assert_eq!(
            r.frame_tier(&f("[syscall read]", "[kernel]")),
            Some(Tier::Kernel)
        );
        assert_eq!(r.frame_tier(&f("memcpy", "libc.so.6")), None);
        assert_eq!(r.thread_tier("C2 CompilerThre"), Some(Tier::Warmup));
        assert_eq!(r.thread_tier("main"), None);
    }

    fn in_file(name: &str, module: &str, file: &str) -> Frame {
        Frame {
            file: Some(file.into()),
            ..Frame::bare(name, module)
        }
    }

    #[test]
    fn c_code_called_from_python_is_native() {
        let r = TierRules::builtin();
        let lib = "libpython3.11.so.1.0";
        let src = "/tmp/python-build/Python-3.11.7";
        // Extension modules: their own shared objects, or built in (sources in Modules/).
        for (name, module) in [
            (
                "_pysqlite_query_execute",
                "_sqlite3.cpython-311-x86_64-linux-gnu.so",
            ),
            (
                "_hashlib_HASH_update",
                "_hashlib.cpython-312-x86_64-linux-gnu.so",
            ),
            ("ext_fn", "_speedups.abi3.so"),
        ] {
            assert_eq!(
                r.frame_tier(&f(name, module)),
                Some(Tier::Native),
                "{module}"
            );
        }
        let sleep = in_file("time_sleep", lib, &format!("{src}/Modules/timemodule.c"));
        assert_eq!(r.frame_tier(&sleep), Some(Tier::Native));
        let sre = in_file(
            "sre_ucs1_match",
            lib,
            &format!("{src}/./Modules/_sre/sre_lib.h"),
        );
        assert_eq!(r.frame_tier(&sre), Some(Tier::Native));
        // The interpreter's own C decides nothing (the Python frame outside it does), nor
        // does 3.11/3.12's collector file (gc_collect_main does, further out).
        for file in ["Objects/dictobject.c", "Python/ceval.c", "Include/object.h"] {
            let fr = in_file("x", lib, &format!("{src}/{file}"));
            assert_eq!(r.frame_tier(&fr), None, "{file}");
        }
        let helper = in_file("update_refs", lib, &format!("{src}/Modules/gcmodule.c"));
        assert_eq!(r.frame_tier(&helper), None);
        let collect = in_file("gc_collect_main", lib, &format!("{src}/Modules/gcmodule.c"));
        assert_eq!(r.frame_tier(&collect), Some(Tier::Gc));
        // Libraries decide nothing by themselves: the extension frame outside them does.
        assert_eq!(
            r.frame_tier(&f("sqlite3VdbeExec", "libsqlite3.so.0.8.6")),
            None
        );
    }

    #[test]
    fn none_rules_stop_later_rules() {
        let r = TierRules::with_user_rules("none file /vendored/\n", "mine.rules").unwrap();
        let fr = in_file("time_sleep", "python3", "/vendored/Modules/timemodule.c");
        assert_eq!(r.frame_tier(&fr), None);
        assert!(TierRules::with_user_rules("none function x\n", "m").is_ok());
    }

    #[test]
    fn user_rules_come_first() {
        let r = TierRules::with_user_rules("# mine\ngc function ^memcpy$\n", "mine.rules").unwrap();
        assert_eq!(r.frame_tier(&f("memcpy", "libc.so.6")), Some(Tier::Gc));
        let r = TierRules::with_user_rules("native function ^JS:\\*\n", "mine.rules").unwrap();
        assert_eq!(r.frame_tier(&f("JS:*fib", "[jit]")), Some(Tier::Native));
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let e = TierRules::with_user_rules("\nfast function ^x\n", "r.rules").unwrap_err();
        assert_eq!(e.to_string(), "r.rules:2: unknown tier \"fast\" (expected interpreter, warmup, jit, native, gc, kernel or none)");
        let e = TierRules::with_user_rules("jit name ^x\n", "r.rules").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.rules:1: unknown field \"name\""),
            "{e}"
        );
        let e = TierRules::with_user_rules("jit function (\n", "r.rules").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.rules:1: bad regular expression"),
            "{e}"
        );
        let e = TierRules::with_user_rules("jit function\n", "r.rules").unwrap_err();
        assert!(e.to_string().contains("missing regular expression"), "{e}");
    }
}

//! The code-only view: a stack as the program's author reads it.
//!
//! A sampled stack of an interpreted or JIT-compiled program is mostly the runtime's own
//! machinery: `_start … Py_RunMain … _PyEval_EvalFrameDefault` above `<module>`, the
//! evaluation loop and call helpers between two Python frames, dictionary lookups and
//! reference counting below the innermost one. The code-only view ([`NativeMode::Hide`])
//! keeps the program's frames (Python, JavaScript, Java) and folds the runtime's frames
//! into the nearest program frame:
//!
//! - everything outside the outermost program frame goes (the tree starts at `<module>`
//!   or the JS/Java entry); the runtime's own Python code (CPython's frozen import
//!   system, PyPy's `<builtin>/app_main.py` and app-level builtins) counts as runtime;
//! - runtime frames (the interpreter's binary or library, libpypy, node/V8, libjvm, libc
//!   and the other system libraries, JIT stubs and builtins) between program frames go;
//! - C code called *from* program code stays: an extension module, a library it calls
//!   (`sqlite3VdbeExec`), a syscall — from the first such frame below the innermost
//!   program frame down to the leaf;
//! - a stack with no program frame at all (a GC or compiler thread, interpreter start-up)
//!   becomes one `[runtime]` frame — unless the profile has no program frame anywhere (a
//!   C or Rust program), where the view is the plain one.
//!
//! [`fold`] is the rule on one stack; [`FrameKind::of`] classifies a frame by its name,
//! module and source file. Both are used by [`crate::tree::ProfileIndex`] and can be used
//! by any report (the CLI's text summary).

use std::sync::OnceLock;

use regex::Regex;

/// Name of the frame a stack without program frames folds into.
pub const RUNTIME_NAME: &str = "[runtime]";
/// Module of [`RUNTIME_NAME`].
pub const RUNTIME_MODULE: &str = "[folded]";

/// Whether a view shows the runtime's native frames or folds them (code-only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeMode {
    /// Every frame as sampled.
    #[default]
    Show,
    /// Code-only: runtime frames folded into the nearest program frame.
    Hide,
}

impl NativeMode {
    pub fn name(self) -> &'static str {
        match self {
            NativeMode::Show => "show",
            NativeMode::Hide => "hide",
        }
    }

    pub fn from_name(s: &str) -> Option<NativeMode> {
        match s {
            "show" => Some(NativeMode::Show),
            "hide" => Some(NativeMode::Hide),
            _ => None,
        }
    }
}

/// What a frame is to the code-only view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// The program's own code: a Python, JavaScript or Java function.
    Program,
    /// The runtime's machinery (interpreter, VM, JIT stubs, libc and system libraries).
    Runtime,
    /// Other native code: extension modules, libraries, the kernel.
    Foreign,
}

fn runtime_module() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Interpreters and VMs (their executables and shared libraries), the C and C++
        // runtimes, the dynamic loader, and frames in no module.
        Regex::new(
            r"^(python[0-9.]*[dmu]*|libpython[0-9.]*[dmu]*\.so(\..*)?|pypy[0-9.]*(-c)?|libpypy[0-9.]*-c\.so(\..*)?|node|nodejs|libnode\.so(\..*)?|java|libjvm\.so|libjli\.so|libc\.so(\..*)?|libc-[0-9.]+\.so|ld-linux.*|ld-[0-9.]+\.so|libpthread\.so(\..*)?|libm\.so(\..*)?|libdl\.so(\..*)?|librt\.so(\..*)?|libstdc\+\+\.so(\..*)?|libgcc_s\.so(\..*)?|libffi\.so(\..*)?|libz\.so(\..*)?|\[vdso\]|\[unknown\]|\[plt\]|\[jit.*\])$",
        )
        .expect("valid regex")
    })
}

impl FrameKind {
    /// Classifies a frame (or a function: frames merged by name and module) by its name,
    /// module file name and source file.
    pub fn of(name: &str, module: &str, file: Option<&str>) -> FrameKind {
        // Python code of the runtime itself: CPython's frozen modules (the import system,
        // `site` at start-up), PyPy's app-level interpreter (`<builtin>/app_main.py`, its
        // builtins written in Python, its frozen modules).
        if module.starts_with("<frozen")
            || module.starts_with("frozen ")
            || file.is_some_and(|f| f.starts_with("<builtin>/"))
        {
            return FrameKind::Runtime;
        }
        if is_program(name, module) {
            return FrameKind::Program;
        }
        // C code built into the interpreter but not part of it: CPython's extension
        // modules under Modules/ (time.sleep, _sre, _io), named where it has debug info.
        // Its collector lives there too and is the runtime's.
        if let Some(f) = file {
            if (f.starts_with("Modules/") || f.contains("/Modules/")) && !f.ends_with("gcmodule.c")
            {
                return FrameKind::Foreign;
            }
        }
        if runtime_module().is_match(module) {
            FrameKind::Runtime
        } else {
            FrameKind::Foreign
        }
    }
}

/// A frame of the program's own code: Python (CPython's and PyPy's frames carry their
/// file name as module: `app.py`, `<frozen importlib._bootstrap>`, `[python]`), V8's JS
/// functions (`JS:*f`, `JS:f` once tiers are merged), HotSpot's compiled Java methods.
fn is_program(name: &str, module: &str) -> bool {
    if module.ends_with(".py")
        || module.ends_with(".pyw")
        || module == crate::python::PYTHON_MODULE
        || (module.starts_with('<') && module.ends_with('>'))
    {
        return true;
    }
    if ["JS:", "Eval:", "Function:", "Script:"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return true;
    }
    // HotSpot's methods (perf-map names with a signature); its stubs have none.
    module.starts_with("[jit c") || (module == "[jit]" && name.contains('(') && name.contains('.'))
}

/// The frames of one stack (kinds root first) that the code-only view keeps, as indices
/// root first. `None`: the stack has no program frame (the caller decides: the plain
/// stack for a profile without program code, else one [`RUNTIME_NAME`] frame).
pub fn fold(kinds: &[FrameKind]) -> Option<Vec<usize>> {
    let first = kinds.iter().position(|&k| k == FrameKind::Program)?;
    let last = kinds.iter().rposition(|&k| k == FrameKind::Program)?;
    let mut keep: Vec<usize> = (first..=last)
        .filter(|&i| kinds[i] != FrameKind::Runtime)
        .collect();
    // Below the innermost program frame: the runtime's frames fold into it, until C code
    // the program called, which stays down to the leaf.
    if let Some(j) = (last + 1..kinds.len()).find(|&i| kinds[i] == FrameKind::Foreign) {
        keep.extend(j..kinds.len());
    }
    Some(keep)
}

/// V8's perf-map name of a JS function without the tier that compiled it: `JS:*f`,
/// `JS:~f`, `JS:^f`, `JS:+f` -> `JS:f` (also for `Eval:`, `Function:`, `Script:`).
/// None for other names.
pub fn merge_v8_tier(name: &str) -> Option<String> {
    let (kind, rest) = name.split_once(':')?;
    if !matches!(kind, "JS" | "Eval" | "Function" | "Script") {
        return None;
    }
    let f = rest.strip_prefix(['~', '^', '+', '*'])?;
    Some(format!("{kind}:{f}"))
}

/// Is a profile "mostly interpreted/JIT code": do at least half of the samples (by
/// weight) have a program frame on their stack? `stacks` yields (weight, has a program
/// frame). The viewer turns code-only on by default for such profiles.
pub fn mostly_program(stacks: impl IntoIterator<Item = (u64, bool)>) -> bool {
    let (mut all, mut program) = (0u64, 0u64);
    for (w, p) in stacks {
        all += w;
        if p {
            program += w;
        }
    }
    all > 0 && program * 2 >= all
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameKind::*;

    fn kinds(frames: &[(&str, &str)]) -> Vec<FrameKind> {
        frames
            .iter()
            .map(|(n, m)| FrameKind::of(n, m, None))
            .collect()
    }

    #[test]
    fn classifies_frames() {
        assert_eq!(FrameKind::of("<module>", "app.py", None), Program);
        assert_eq!(FrameKind::of("f", "[python]", None), Program);
        assert_eq!(
            FrameKind::of("_find_and_load", "<frozen importlib._bootstrap>", None),
            Runtime
        );
        assert_eq!(
            FrameKind::of("entry_point", "app_main.py", Some("<builtin>/app_main.py")),
            Runtime
        );
        assert_eq!(
            FrameKind::of(
                "__init__",
                "frozen zipimport",
                Some("<builtin>/frozen zipimport")
            ),
            Runtime
        );
        assert_eq!(FrameKind::of("<module>", "<string>", None), Program);
        assert_eq!(FrameKind::of("JS:*fib", "[jit]", None), Program);
        assert_eq!(FrameKind::of("JS:fib", "[jit]", None), Program);
        assert_eq!(
            FrameKind::of("_PyEval_EvalFrameDefault", "python3.11", None),
            Runtime
        );
        assert_eq!(
            FrameKind::of("Py_DECREF", "libpython3.12.so.1.0", None),
            Runtime
        );
        assert_eq!(
            FrameKind::of("pypy_g_foo", "libpypy3.9-c.so", None),
            Runtime
        );
        assert_eq!(
            FrameKind::of("Builtins_CallFunction", "node", None),
            Runtime
        );
        assert_eq!(FrameKind::of("Builtin:LoadIC", "[jit]", None), Runtime);
        assert_eq!(
            FrameKind::of("__libc_start_main", "libc.so.6", None),
            Runtime
        );
        assert_eq!(
            FrameKind::of("sqlite3VdbeExec", "libsqlite3.so.0", None),
            Foreign
        );
        assert_eq!(
            FrameKind::of(
                "_pysqlite_query_execute",
                "_sqlite3.cpython-311-x86_64-linux-gnu.so",
                None
            ),
            Foreign
        );
        assert_eq!(
            FrameKind::of("[syscall nanosleep]", "[kernel]", None),
            Foreign
        );
        assert_eq!(
            FrameKind::of("time_sleep", "python3.11", Some("./Modules/timemodule.c")),
            Foreign
        );
        assert_eq!(
            FrameKind::of("gc_collect_main", "python3.11", Some("Modules/gcmodule.c")),
            Runtime
        );
        assert_eq!(
            FrameKind::of("void Main.work(int)", "[jit c2]", None),
            Program
        );
    }

    #[test]
    fn folds_runtime_into_program_frames() {
        let k = kinds(&[
            ("_start", "python3.11"),
            ("__libc_start_main", "libc.so.6"),
            ("Py_RunMain", "python3.11"),
            ("_PyEval_EvalFrameDefault", "python3.11"),
            ("<module>", "app.py"),
            ("_PyEval_EvalFrameDefault", "python3.11"),
            ("handler", "views.py"),
            ("_PyObject_Call", "python3.11"),
            (
                "_pysqlite_query_execute",
                "_sqlite3.cpython-311-x86_64-linux-gnu.so",
            ),
            ("sqlite3VdbeExec", "libsqlite3.so.0"),
            ("memcpy", "libc.so.6"),
        ]);
        assert_eq!(fold(&k), Some(vec![4, 6, 8, 9, 10]));
        // Runtime frames below the innermost program frame fold into it.
        let k = kinds(&[
            ("_start", "python3.11"),
            ("<module>", "app.py"),
            ("lookup", "app.py"),
            ("unicodekeys_lookup_unicode", "python3.11"),
            ("malloc", "libc.so.6"),
        ]);
        assert_eq!(fold(&k), Some(vec![1, 2]));
        // A C library calling back into Python stays between the program frames.
        let k = kinds(&[
            ("<module>", "app.py"),
            ("PyObject_Call", "libpython3.12.so.1.0"),
            ("sort_cmp", "_ext.cpython-312-x86_64-linux-gnu.so"),
            ("key", "app.py"),
        ]);
        assert_eq!(fold(&k), Some(vec![0, 2, 3]));
        assert_eq!(
            fold(&kinds(&[("_start", "a.out"), ("main", "a.out")])),
            None
        );
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn v8_tiers_merge() {
        assert_eq!(merge_v8_tier("JS:*fib").as_deref(), Some("JS:fib"));
        assert_eq!(merge_v8_tier("JS:~fib").as_deref(), Some("JS:fib"));
        assert_eq!(merge_v8_tier("Script:^ ").as_deref(), Some("Script: "));
        assert_eq!(merge_v8_tier("JS:fib"), None);
        assert_eq!(merge_v8_tier("Builtin:LoadIC"), None);
    }

    #[test]
    fn mostly_program_by_weight() {
        assert!(mostly_program([(3, true), (2, false)]));
        assert!(!mostly_program([(1, true), (2, false)]));
        assert!(!mostly_program(std::iter::empty()));
    }
}

//! Python frames: line numbers from CPython's location table, and hiding the interpreter's
//! own C frames between Python frames.

use prof_format::PyCode;

use crate::symbolize::Frame;

/// Module name given to Python frames whose file is unknown.
pub const PYTHON_MODULE: &str = "[python]";

/// A Python frame's module: its file's base name (`app.py`) or a pseudo-file (`<string>`).
/// Python functions are told apart by their whole file too (every package's
/// `__init__.py` body is `<module>` in module `__init__.py`).
pub fn is_python_module(module: &str) -> bool {
    module.ends_with(".py") || (module.starts_with('<') && module.ends_with('>'))
}

/// The file part of a function's identity (name, module, this): a Python function's
/// whole path, "" for any other (a native function's frames name several source files).
pub fn identity_file<'a>(module: &str, file: Option<&'a str>) -> &'a str {
    match file {
        Some(f) if is_python_module(module) => f,
        _ => "",
    }
}

/// The frame of a Python code object at instruction index `offset`.
pub fn frame(code: Option<&PyCode>, offset: u32) -> Frame {
    let Some(c) = code else {
        return Frame::bare("<unknown python code>", PYTHON_MODULE);
    };
    let module = match c.filename.rsplit('/').next() {
        // PyPy cuts long file names to 107 characters and `...`.
        Some(base) if base.ends_with("...") => PYTHON_MODULE.to_string(),
        Some(base) if !base.is_empty() => base.to_string(),
        _ => PYTHON_MODULE.to_string(),
    };
    let line = line_for(c, offset).or((c.firstlineno > 0).then_some(c.firstlineno));
    Frame {
        name: c.qualname.clone(),
        module,
        file: (!c.filename.is_empty()).then(|| c.filename.clone()),
        line,
        inlined: false,
    }
}

/// The line of instruction `offset` (3.11+ location table).
pub fn line_for(c: &PyCode, offset: u32) -> Option<u32> {
    if c.python_minor < 11 {
        return None;
    }
    prof_format::pyline::line_for(&c.linetable, c.firstlineno, offset)
}

/// Is this the C function that evaluates Python frames (replaced by them)?
pub fn is_eval_frame(f: &Frame) -> bool {
    matches!(
        f.name.as_str(),
        "_PyEval_EvalFrameDefault" | "_PyEval_EvalFrame" | "PyEval_EvalFrameEx"
    )
}

/// A CPython 3.12+ perf trampoline frame (`py::qualname:file`, named by the perf map when
/// PYTHONPERFSUPPORT is on): it stands for the Python frame that follows it.
pub fn is_perf_trampoline(f: &Frame) -> bool {
    f.name.starts_with("py::")
}

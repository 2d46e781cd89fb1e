//! vmprof for the import tests: a venv per interpreter (under the target directory) with
//! the `vmprof` package installed from PyPI, made once and reused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Panics naming `install` unless `tool args` runs successfully.
pub fn require(tool: &str, args: &[&str], install: &str) {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is needed by this test and is missing: {install} (scripts/test.sh does)"
    );
}

/// The python of a venv made with `interpreter -m venv` that has vmprof installed.
/// `install` says how to get the interpreter when it is missing.
pub fn vmprof_venv(interpreter: &str, install: &str) -> PathBuf {
    require(interpreter, &["--version"], install);
    crate::venv::pip_venv(interpreter.as_ref(), interpreter, "vmprof", "vmprof")
}

/// tests/fixtures/vmprof_cpu.py: a CPU-bound script (`vm_fib`, `vm_sieve`, `vm_main`).
pub fn cpu_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vmprof_cpu.py")
}

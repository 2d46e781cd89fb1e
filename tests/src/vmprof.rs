//! vmprof for the import tests: a venv per interpreter (under the target directory) with
//! the `vmprof` package installed from PyPI, made once and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::{bins, run_captured, TIMEOUT};

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
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require(interpreter, &["--version"], install);
    let venv = bins().dir.join("prof-e2e-venvs").join(interpreter);
    let python = venv.join("bin/python");
    let has_vmprof = |py: &Path| {
        Command::new(py)
            .args(["-c", "import vmprof"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if has_vmprof(&python) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let o = run_captured(
        Command::new(interpreter).args(["-m", "venv"]).arg(&venv),
        TIMEOUT,
    );
    assert!(
        o.status.success(),
        "`{interpreter} -m venv` failed (install the venv module: apt-get install -y python3-venv): {}",
        o.stderr
    );
    let o = run_captured(
        Command::new(venv.join("bin/pip")).args(["install", "-q", "vmprof"]),
        Duration::from_secs(600),
    );
    assert!(
        o.status.success(),
        "`pip install vmprof` into {} failed (it needs PyPI): {}",
        venv.display(),
        o.stderr
    );
    assert!(
        has_vmprof(&python),
        "vmprof does not import in {}",
        venv.display()
    );
    python
}

/// tests/fixtures/vmprof_cpu.py: a CPU-bound script (`vm_fib`, `vm_sieve`, `vm_main`).
pub fn cpu_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vmprof_cpu.py")
}

//! Python venvs for the tests, under the target directory, with packages from PyPI: made
//! once and reused.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::{bins, run_captured, TIMEOUT};

/// The python of `target/<profile>/prof-e2e-venvs/<name>`, a venv made with `interpreter
/// -m venv` in which `pip install <requirement>` made `import <module>` work. Panics with
/// what to install when the interpreter, its venv module or PyPI is missing.
pub fn pip_venv(interpreter: &OsStr, name: &str, requirement: &str, module: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = bins().dir.join("prof-e2e-venvs").join(name);
    let python = venv.join("bin/python");
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if imports(&python) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let o = run_captured(
        Command::new(interpreter).args(["-m", "venv"]).arg(&venv),
        TIMEOUT,
    );
    assert!(
        o.status.success(),
        "`{} -m venv` failed (install the interpreter and its venv module: pyenv install, or apt-get install -y python3-venv): {}",
        interpreter.to_string_lossy(),
        o.stderr
    );
    let o = run_captured(
        Command::new(venv.join("bin/pip")).args(["install", "-q", requirement]),
        Duration::from_secs(600),
    );
    assert!(
        o.status.success(),
        "`pip install {requirement}` into {} failed (it needs PyPI): {}",
        venv.display(),
        o.stderr
    );
    assert!(
        imports(&python),
        "{module} does not import in {}",
        venv.display()
    );
    python
}

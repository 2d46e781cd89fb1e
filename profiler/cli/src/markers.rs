//! [issue 14] Makes the `prof_markers` Python module importable by the profiled program:
//! the module (python/prof_markers.py, embedded) goes into the run's temporary directory,
//! appended to `PYTHONPATH` so that the program's own modules keep precedence.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// The module's source, also shipped in the repository for projects to vendor.
pub const PY_MODULE: &str = include_str!("../python/prof_markers.py");

/// Writes the module under `dir` and points `PYTHONPATH` at it. Failing to write it only
/// costs the program its markers (it sees no `prof_markers`), so it is a warning.
pub fn configure(cmd: &mut Command, dir: &Path, current: Option<OsString>) {
    // Programs without the C ABI (node, Java) append finished markers to this file.
    cmd.env("PROF_MARKER_FILE", dir.join(crate::marker_file::FILE_NAME));
    let py = dir.join("python");
    let written = std::fs::create_dir_all(&py)
        .and_then(|()| std::fs::write(py.join("prof_markers.py"), PY_MODULE));
    if let Err(e) = written {
        eprintln!(
            "prof: warning: cannot write the prof_markers module into {}: {e}; markers are off",
            py.display()
        );
        return;
    }
    cmd.env("PYTHONPATH", append_path(current, &py));
}

fn append_path(current: Option<OsString>, dir: &Path) -> OsString {
    match current {
        Some(mut v) if !v.is_empty() => {
            v.push(":");
            v.push(dir);
            v
        }
        _ => dir.as_os_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_after_the_users_path() {
        let d = Path::new("/tmp/prof-run-x/python");
        assert_eq!(append_path(None, d), "/tmp/prof-run-x/python");
        assert_eq!(append_path(Some("".into()), d), "/tmp/prof-run-x/python");
        assert_eq!(
            append_path(Some("/app:/lib".into()), d),
            "/app:/lib:/tmp/prof-run-x/python"
        );
    }
}

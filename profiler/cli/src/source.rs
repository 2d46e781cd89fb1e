//! Source capture (`prof run`, issue 13): after the program exits, the text of its own
//! script files that got samples (Python files named by sampled code objects, JS scripts
//! named by sampled JIT code) is appended to the profile as SOURCE records, for the
//! viewer's per-line view. Only files inside the program's tree (the working directory
//! and the directories of the script files named on the command line), never installed
//! packages (site-packages, dist-packages, node_modules) nor system directories, at most
//! [`MAX_FILE`] bytes each and [`MAX_TOTAL`] in all. `--no-source` turns it off.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use prof_format::{node_kind, JitSource, Profile};

/// Largest file stored.
pub const MAX_FILE: u64 = 1 << 20;
/// Most source bytes stored per profile.
pub const MAX_TOTAL: u64 = 8 << 20;

/// Where the program's own files may live: the working directory and the directory of
/// every script file (`*.py`, `*.js`...) named on the command line.
pub fn program_roots(cwd: &Path, command: &[OsString]) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut add = |p: &Path| {
        if let Ok(c) = p.canonicalize() {
            if allowed_root(&c) && !roots.contains(&c) {
                roots.push(c);
            }
        }
    };
    add(cwd);
    for a in command.iter().skip(1) {
        let p = cwd.join(a);
        let script = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("py" | "pyw" | "js" | "mjs" | "cjs")
        );
        if script && p.is_file() {
            if let Some(dir) = p.parent() {
                add(dir);
            }
        }
    }
    roots
}

/// The root directory or a system directory is nobody's program tree.
fn allowed_root(p: &Path) -> bool {
    p.components().count() > 1 && !system_path(p)
}

fn system_path(p: &Path) -> bool {
    ["/etc", "/proc", "/sys", "/dev", "/boot", "/root/.ssh"]
        .iter()
        .any(|s| p.starts_with(s))
}

fn installed_package(p: &Path) -> bool {
    p.components().any(|c| match c {
        Component::Normal(n) => matches!(
            n.to_str(),
            Some("site-packages" | "dist-packages" | "node_modules" | "lib-python")
        ),
        _ => false,
    })
}

/// Paths (as the frames name them) of the script files with samples.
pub fn sampled_files(profile: &Profile) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for p in &profile.processes {
        // Every node on a sampled stack, once.
        let mut on_stack = vec![false; p.nodes.len()];
        for s in &p.samples {
            let mut id = s.leaf as usize;
            while id != 0 && id < p.nodes.len() && !on_stack[id] {
                on_stack[id] = true;
                id = p.nodes[id].parent as usize;
            }
        }
        let mut codes = BTreeSet::new();
        let mut addrs = Vec::new();
        for (id, n) in p.nodes.iter().enumerate() {
            if !on_stack[id] {
                continue;
            }
            match n.kind {
                node_kind::PYTHON => {
                    codes.insert((n.value >> 32) as u32);
                }
                node_kind::PYPY => {
                    codes.insert((n.value >> 8) as u32);
                }
                node_kind::NATIVE => addrs.push(n.value),
                _ => {}
            }
        }
        for c in &p.py_code {
            if codes.contains(&c.id) && !c.filename.is_empty() {
                files.insert(c.filename.clone());
            }
        }
        // V8's perf-map names carry the script: `JS:*f /app/main.js:3:13`.
        for j in &p.jit_code {
            if j.source != JitSource::PerfMap {
                continue;
            }
            let Some(file) = js_script(&j.name) else {
                continue;
            };
            let end = j.start.saturating_add(j.size);
            if addrs.iter().any(|&a| a >= j.start && a <= end) {
                files.insert(file.to_string());
            }
        }
    }
    files
}

/// The script of a V8 perf-map name, if it names a file path.
fn js_script(name: &str) -> Option<&str> {
    let (kind, rest) = name.split_once(':')?;
    if !matches!(kind, "JS" | "Eval" | "Function" | "Script") {
        return None;
    }
    let loc = rest.split_once(' ')?.1.trim();
    let mut it = loc.rsplitn(3, ':');
    let (_col, _line, file) = (it.next()?, it.next()?, it.next()?);
    file.starts_with('/').then_some(file)
}

/// SOURCE records for the sampled files inside `roots` (paths relative to `cwd` are
/// resolved against it), within the size caps.
pub fn source_records(profile: &Profile, cwd: &Path, roots: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for name in sampled_files(profile) {
        let Ok(path) = cwd.join(&name).canonicalize() else {
            continue;
        };
        if !roots.iter().any(|r| path.starts_with(r))
            || system_path(&path)
            || installed_package(&path)
        {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_FILE || total + meta.len() > MAX_TOTAL {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not UTF-8: not a script we can show
        };
        total += text.len() as u64;
        out.extend(prof_format::source_record(&name, &text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let app = d.path().join("app");
        std::fs::create_dir_all(app.join("site-packages")).unwrap();
        std::fs::write(app.join("main.py"), "x = 1\n").unwrap();
        let roots = program_roots(
            Path::new("/"),
            &["python3".into(), app.join("main.py").into_os_string()],
        );
        assert_eq!(roots, vec![app.canonicalize().unwrap()], "/ is no root");
        assert!(installed_package(&app.join("site-packages/x.py")));
        assert!(!installed_package(&app.join("main.py")));
        assert!(system_path(Path::new("/etc/passwd")));
        assert_eq!(js_script("JS:*fib /app/a.js:3:13"), Some("/app/a.js"));
        assert_eq!(js_script("JS:~ node:internal/main:1:1"), None);
        assert_eq!(js_script("Builtin:LoadIC"), None);
    }
}

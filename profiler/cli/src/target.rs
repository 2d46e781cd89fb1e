//! Resolving the command to profile and refusing what LD_PRELOAD cannot reach: missing or
//! non-executable files, statically linked ELF binaries (no dynamic loader to preload
//! into) and setuid/setgid programs (the loader ignores LD_PRELOAD for them).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a command cannot be profiled (the message names the command).
pub type Refusal = String;

/// Finds `cmd` the way `execvp` would: a name with a slash is a path, anything else is
/// looked up in `path` (the value of `PATH`; an empty entry means the current directory).
pub fn resolve(cmd: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, Refusal> {
    let shown = cmd.to_string_lossy();
    if cmd.is_empty() {
        return Err("the command is empty".into());
    }
    if cmd.as_bytes().contains(&b'/') {
        let p = PathBuf::from(cmd);
        return match std::fs::metadata(&p) {
            Ok(_) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{shown}: no such file"))
            }
            Err(e) => Err(format!("{shown}: {e}")),
        };
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut not_executable = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(cmd);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                not_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match not_executable {
        Some(p) => Err(format!("{shown}: {} is not executable", p.display())),
        None => Err(format!("{shown}: command not found")),
    }
}

/// Checks that the program at `path` can be profiled. Scripts are judged by their
/// interpreter (`#!/usr/bin/env X` by X).
pub fn check(path: &Path, search_path: Option<&OsStr>) -> Result<(), Refusal> {
    check_depth(path, search_path, 0)
}

fn check_depth(path: &Path, search_path: Option<&OsStr>, depth: u32) -> Result<(), Refusal> {
    let shown = path.display();
    if depth > 4 {
        return Err(format!("{shown}: too many levels of #! interpreters"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{shown}: is a directory"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 || !executable_by_me(path) {
        return Err(format!("{shown}: permission denied (not executable)"));
    }
    if mode & 0o6000 != 0 {
        let which = if mode & 0o4000 != 0 {
            "setuid"
        } else {
            "setgid"
        };
        return Err(format!(
            "{shown} is {which}: the dynamic loader ignores LD_PRELOAD for it, so it cannot be profiled"
        ));
    }
    let mut file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut head = [0u8; 256];
    let n = read_up_to(&mut file, &mut head).map_err(|e| format!("{shown}: {e}"))?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        let interp = shebang_program(head, search_path)
            .map_err(|why| format!("{shown}: bad #! line: {why}"))?;
        return check_depth(&interp, search_path, depth + 1);
    }
    if head.starts_with(b"\x7fELF") {
        return match elf_has_interp(&file) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{shown} is statically linked: LD_PRELOAD cannot load the profiler into it"
            )),
            Err(why) => Err(format!("{shown}: not a valid ELF executable ({why})")),
        };
    }
    // Anything else (a script without #!) is run by the shell through execvp's fallback.
    Ok(())
}

fn executable_by_me(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The program a `#!` line runs: the interpreter, or for `/usr/bin/env [-S] [VAR=x] X`, X
/// resolved through PATH.
fn shebang_program(head: &[u8], search_path: Option<&OsStr>) -> Result<PathBuf, String> {
    let line = &head[2..];
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(OsStr::from_bytes);
    let interp = words.next().ok_or("no interpreter")?;
    let interp_path = PathBuf::from(interp);
    if interp_path.file_name() != Some(OsStr::new("env")) {
        return Ok(interp_path);
    }
    let prog = words
        .find(|w| !w.as_bytes().starts_with(b"-") && !w.as_bytes().contains(&b'='))
        .ok_or("`env` names no program")?;
    resolve(prog, search_path)
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn elf_has_interp(f: &File) -> Result<bool, String> {
    let mut eh = [0u8; 64];
    let n = f.read_at(&mut eh, 0).map_err(|e| e.to_string())?;
    if n < 52 {
        return Err("truncated ELF header".into());
    }
    let class64 = match eh[4] {
        1 => false,
        2 => true,
        _ => return Err("unknown ELF class".into()),
    };
    let le = match eh[5] {
        1 => true,
        2 => false,
        _ => return Err("unknown ELF byte order".into()),
    };
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let (phoff, phentsize, phnum) = if class64 {
        if n < 64 {
            return Err("truncated ELF header".into());
        }
        let lo = u32_at(&eh, 0x20) as u64;
        let hi = u32_at(&eh, 0x24) as u64;
        let off = if le { lo | hi << 32 } else { hi | lo << 32 };
        (off, u16_at(&eh, 0x36) as u64, u16_at(&eh, 0x38) as u64)
    } else {
        (
            u32_at(&eh, 0x1c) as u64,
            u16_at(&eh, 0x2a) as u64,
            u16_at(&eh, 0x2c) as u64,
        )
    };
    if phnum == 0 {
        return Ok(false);
    }
    if phentsize < 4 || phnum > 4096 {
        return Err("bad program header table".into());
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut table, phoff)
        .map_err(|_| "truncated program header table".to_string())?;
    const PT_INTERP: u32 = 3;
    Ok(table
        .chunks_exact(phentsize as usize)
        .any(|ph| u32_at(ph, 0) == PT_INTERP))
}

/// `argv[0]` as the user typed it, for error messages.
pub fn display(cmd: &[OsString]) -> String {
    cmd.first()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn resolves_through_path_and_refuses_missing() {
        let sh = resolve(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        )
        .unwrap();
        assert!(sh.ends_with("sh"));
        let err = resolve(OsStr::new("no-such-cmd-xyz"), Some(OsStr::new("/bin"))).unwrap_err();
        assert_eq!(err, "no-such-cmd-xyz: command not found");
        let err = resolve(OsStr::new("./no/such"), None).unwrap_err();
        assert_eq!(err, "./no/such: no such file");
    }

    #[test]
    fn dynamic_elf_passes() {
        check(Path::new("/bin/sh"), None).unwrap();
    }

    #[test]
    fn scripts_are_judged_by_interpreter() {
        let d = tempfile::tempdir().unwrap();
        let ok = script(d.path(), "ok", "#!/bin/sh\necho hi\n", 0o755);
        check(&ok, None).unwrap();
        let via_env = script(d.path(), "env", "#!/usr/bin/env -S sh -e\necho hi\n", 0o755);
        check(&via_env, Some(OsStr::new("/usr/bin:/bin"))).unwrap();
        let missing = script(d.path(), "missing", "#!/usr/bin/env nope-xyz\n", 0o755);
        let err = check(&missing, Some(OsStr::new("/usr/bin:/bin"))).unwrap_err();
        assert!(err.contains("nope-xyz: command not found"), "{err}");
        let noexec = script(d.path(), "noexec", "#!/bin/sh\n", 0o644);
        let err = check(&noexec, None).unwrap_err();
        assert!(err.contains("not executable"), "{err}");
    }

    #[test]
    fn setuid_and_static_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let suid = d.path().join("suid");
        std::fs::copy("/bin/sh", &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let err = check(&suid, None).unwrap_err();
        assert!(err.contains("is setuid"), "{err}");

        // A minimal static ELF: a 64-bit header whose only program header is PT_LOAD.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = 1; // PT_LOAD
        let p = d.path().join("static");
        std::fs::write(&p, &elf).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check(&p, None).unwrap_err();
        assert!(err.contains("statically linked"), "{err}");
        elf[64] = 3; // PT_INTERP
        std::fs::write(&p, &elf).unwrap();
        check(&p, None).unwrap();
        std::fs::write(&p, &elf[..40]).unwrap();
        let err = check(&p, None).unwrap_err();
        assert!(err.contains("not a valid ELF"), "{err}");
    }
}

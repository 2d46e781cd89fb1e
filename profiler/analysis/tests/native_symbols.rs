//! Real symbolization: C and C++ fixtures compiled with gcc/g++ in a temp dir, addresses
//! taken from `nm`, build ids read with `object`, profiles built in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::Object;
use prof_analysis::{analyze, Frame, SymbolError, Symbolizer};
use prof_format::{
    node_kind, read_profile, LogWriter, Mode, Module, PendingSample, ProcessInfo, Profile,
    TimerSource,
};

const PROG_C: &str = r#"#include <stdio.h>

static inline __attribute__((always_inline)) int inl_step(int x) {
    int y = x * 3 + 1;
    __asm__ volatile(".globl inl_mark\ninl_mark:\n\tnop"); /* INL */
    return y ^ (x >> 2);
}

__attribute__((noinline, noclone)) int work(int n) { /* WORK */
    int s = 0;
    for (int i = 0; i < n; i++)
        s += inl_step(i + s); /* CALL */
    return s;
}

__attribute__((noinline, noclone)) int other(int n) {
    return work(n) + 1;
}

int main(int argc, char **argv) {
    (void)argv;
    printf("%d\n", other(argc * 1000));
    return 0;
}
"#;

const OTHER_C: &str = r#"#include <stdio.h>
__attribute__((noinline)) int something_else(int n) { return n * 7; }
int main(int argc, char **argv) { (void)argv; printf("%d\n", something_else(argc)); return 0; }
"#;

const LIB_C: &str = r#"
__attribute__((noinline, noclone)) static int demo_hidden(int n) {
    int s = 0;
    for (int i = 0; i < n; i++) s += i * i; /* HIDDEN */
    return s;
}
__attribute__((noinline, noclone)) int demo_work(int n) { return demo_hidden(n) + 1; }
int demo_entry(int n) { return demo_work(n) * 2; }
"#;

const CPP: &str = r#"#include <cstdio>
namespace ns {
struct Widget {
    int k;
    __attribute__((noinline)) int compute(int x);
};
int Widget::compute(int x) { return x * k + 1; } /* COMPUTE */
template <typename T> __attribute__((noinline)) T twice(T v) { return v + v; }
}
extern "C" __attribute__((noinline)) int g(int x) { return x - 1; }
int main(int argc, char**) {
    ns::Widget w{argc};
    std::printf("%d %ld %d\n", w.compute(argc), ns::twice<long>(argc), g(argc));
    return 0;
}
"#;

fn tool(name: &str) -> Command {
    let probe = Command::new(name).arg("--version").output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        panic!("`{name}` is not installed or does not run: these tests compile C/C++ fixtures and need gcc, g++ and binutils (nm, strip, objcopy)");
    }
    Command::new(name)
}

fn run(mut c: Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compile(compiler: &str, src: &str, ext: &str, out: &Path, extra: &[&str]) {
    let src_path = out.with_extension(ext);
    std::fs::write(&src_path, src).unwrap();
    let mut c = tool(compiler);
    c.args([
        "-g",
        "-O1",
        "-fno-omit-frame-pointer",
        "-Wl,--build-id=sha1",
    ])
    .args(extra)
    .arg("-o")
    .arg(out)
    .arg(&src_path);
    run(c);
}

/// `nm -S --defined-only`: name -> (address, size).
fn nm(file: &Path) -> HashMap<String, (u64, u64)> {
    let out = tool("nm")
        .arg("-S")
        .arg("--defined-only")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nm {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (addr, size, name) = match parts[..] {
            [a, s, _, n] => (a, s, n),
            [a, _, n] => (a, "0", n),
            _ => continue,
        };
        m.insert(
            name.to_string(),
            (
                u64::from_str_radix(addr, 16).unwrap(),
                u64::from_str_radix(size, 16).unwrap(),
            ),
        );
    }
    m
}

fn build_id(file: &Path) -> Vec<u8> {
    let data = std::fs::read(file).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    obj.build_id()
        .unwrap()
        .expect("fixture has a build id")
        .to_vec()
}

/// 1-based line of the source line containing `marker`.
fn line_of(src: &str, marker: &str) -> u32 {
    src.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker}")) as u32
        + 1
}

fn module(id: u32, path: &Path, build_id: Vec<u8>, bias: u64) -> Module {
    Module {
        id,
        path: path.to_str().unwrap().to_string(),
        build_id,
        bias,
        ranges: vec![(bias, bias + 0x10_0000)],
    }
}

/// A one-process profile with the given modules and stacks (root first, runtime addresses).
fn profile(modules: &[Module], stacks: &[Vec<u64>]) -> Profile {
    let mut w = LogWriter::new(Vec::new());
    w.process(&ProcessInfo {
        pid: 42,
        ppid: 1,
        start_unix_ns: 0,
        period_ns: 1_000_000,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 1,
        max_depth: 64,
        exe: "prog".into(),
        argv: vec!["prog".into()],
        agent_version: "test".into(),
    });
    for m in modules {
        w.module(m);
    }
    for (i, s) in stacks.iter().enumerate() {
        let leaf = w.stacks.intern(s.iter().map(|&a| (node_kind::NATIVE, a)));
        w.samples(
            42,
            &[PendingSample {
                time_ns: i as u64,
                leaf,
                weight: 1,
                flags: 0,
            }],
        );
    }
    read_profile(&w.into_inner().unwrap()).unwrap()
}

/// Frames of a single leaf address.
fn leaf_frames(sym: &mut Symbolizer, m: &Module, addr: u64) -> Vec<Frame> {
    sym.symbolize(m, addr, false).to_vec()
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.name.as_str()).collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    prog: PathBuf,
    syms: HashMap<String, (u64, u64)>,
}

fn prog_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog");
    compile("gcc", PROG_C, "c", &prog, &[]);
    let syms = nm(&prog);
    Fixture { dir, prog, syms }
}

const BIAS: u64 = 0x5555_0000_0000;

#[test]
fn dwarf_names_lines_and_inlined_frames() {
    let fx = prog_fixture();
    let id = build_id(&fx.prog);
    let m = module(1, &fx.prog, id, BIAS);
    let mut sym = Symbolizer::without_debug_dirs();

    // Inside the inlined function: the real function first, then the inlined one.
    let (mark, _) = fx.syms["inl_mark"];
    let frames = leaf_frames(&mut sym, &m, BIAS + mark);
    assert_eq!(names(&frames), ["work", "inl_step"], "{frames:#?}");
    assert!(!frames[0].inlined && frames[1].inlined);
    assert!(frames.iter().all(|f| f.module == "prog"));
    assert!(
        frames
            .iter()
            .all(|f| f.file.as_deref().unwrap().ends_with("prog.c")),
        "{frames:#?}"
    );
    assert_eq!(
        frames[0].line,
        Some(line_of(PROG_C, "/* CALL */")),
        "call site of the inlined function"
    );
    assert_eq!(frames[1].line, Some(line_of(PROG_C, "/* INL */")));

    // The first instruction of a noinline function.
    let (work, _) = fx.syms["work"];
    let frames = leaf_frames(&mut sym, &m, BIAS + work);
    assert_eq!(names(&frames), ["work"]);
    // Leaf functions have no prologue: the first instruction may belong to a later line.
    let body = line_of(PROG_C, "/* WORK */")..=line_of(PROG_C, "return s;");
    assert!(body.contains(&frames[0].line.unwrap()), "{frames:#?}");

    // A return address one past the end of `other` belongs to `other` (the call before it).
    let (other, other_size) = fx.syms["other"];
    let frames = sym.symbolize(&m, BIAS + other + other_size, true).to_vec();
    assert_eq!(names(&frames), ["other"], "{frames:#?}");

    // A whole stack through analyze(): main -> other -> work -> inl_step.
    let (main, _) = fx.syms["main"];
    let p = profile(
        std::slice::from_ref(&m),
        &[vec![BIAS + main + 1, BIAS + other + 1, BIAS + mark]],
    );
    let a = analyze(&p, &mut sym);
    assert_eq!(a.collapsed(), "main;other;work;inl_step 1\n");
    let s = a.summary();
    let inl = s.functions.iter().find(|f| f.name == "inl_step").unwrap();
    assert_eq!(
        (inl.self_, inl.total, inl.line),
        (1, 1, Some(line_of(PROG_C, "/* INL */")))
    );
    assert!(s.symbol_warnings.is_empty(), "{:?}", s.symbol_warnings);
    assert_eq!(
        sym.dwarf_source(m.path.as_str(), &m.build_id),
        Some(fx.prog.as_path())
    );
}

#[test]
fn symbol_table_fallback_without_dwarf() {
    let fx = prog_fixture();
    let nodebug = fx.dir.path().join("prog_nodebug");
    let mut c = tool("strip");
    c.arg("--strip-debug").arg("-o").arg(&nodebug).arg(&fx.prog);
    run(c);
    let m = module(1, &nodebug, build_id(&nodebug), 0);
    let mut sym = Symbolizer::without_debug_dirs();
    assert_eq!(sym.dwarf_source(&m.path, &m.build_id), None);
    // The asm label is a NOTYPE symbol: the containing function is still `work`.
    let frames = leaf_frames(&mut sym, &m, fx.syms["inl_mark"].0);
    assert_eq!(frames, [Frame::bare("work", "prog_nodebug")]);
    let (other, size) = fx.syms["other"];
    assert_eq!(
        names(&leaf_frames(&mut sym, &m, other + size / 2)),
        ["other"]
    );
    // PLT stubs have no symbols of their own.
    let data = std::fs::read(&nodebug).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let plt = obj
        .section_by_name(".plt")
        .expect("the fixture calls printf through the PLT");
    use object::ObjectSection;
    assert_eq!(
        leaf_frames(&mut sym, &m, plt.address() + 0x14),
        [Frame::bare("[plt]", "prog_nodebug")]
    );
}

#[test]
fn fully_stripped_executable_shows_offsets() {
    let fx = prog_fixture();
    let stripped = fx.dir.path().join("prog_stripped");
    let mut c = tool("strip");
    c.arg("-o").arg(&stripped).arg(&fx.prog);
    run(c);
    let m = module(1, &stripped, build_id(&stripped), BIAS);
    let mut sym = Symbolizer::without_debug_dirs();
    let (work, _) = fx.syms["work"];
    // An executable's .dynsym has only its imports: nothing names `work`.
    let frames = leaf_frames(&mut sym, &m, BIAS + work + 2);
    assert_eq!(
        frames,
        [Frame::bare(
            format!("prog_stripped+{:#x}", work + 2),
            "prog_stripped"
        )]
    );
    // As a return address the same offset is shown (not offset - 1).
    let frames = sym.symbolize(&m, BIAS + work + 2, true).to_vec();
    assert_eq!(frames[0].name, format!("prog_stripped+{:#x}", work + 2));
}

#[test]
fn shared_library_dynsym_fallback_and_dwarf() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libdemo.so");
    compile("gcc", LIB_C, "c", &lib, &["-shared", "-fPIC"]);
    let syms = nm(&lib);
    let stripped = dir.path().join("libdemo_stripped.so");
    let mut c = tool("strip");
    c.arg("-o").arg(&stripped).arg(&lib);
    run(c);

    let bias = 0x7f12_3400_0000;
    let mut sym = Symbolizer::without_debug_dirs();
    let (hidden, _) = syms["demo_hidden"];
    let (work, _) = syms["demo_work"];

    let full = module(1, &lib, build_id(&lib), bias);
    let frames = leaf_frames(&mut sym, &full, bias + hidden + 1);
    assert_eq!(names(&frames), ["demo_hidden"]);
    assert_eq!(frames[0].module, "libdemo.so");

    let m = module(2, &stripped, build_id(&stripped), bias);
    assert_eq!(
        leaf_frames(&mut sym, &m, bias + work),
        [Frame::bare("demo_work", "libdemo_stripped.so")]
    );
    // A static function is in no dynamic symbol table.
    assert_eq!(
        leaf_frames(&mut sym, &m, bias + hidden + 1),
        [Frame::bare(
            format!("libdemo_stripped.so+{:#x}", hidden + 1),
            "libdemo_stripped.so"
        )]
    );
}

#[test]
fn build_id_mismatch_is_never_guessed() {
    let fx = prog_fixture();
    let old_id = build_id(&fx.prog);
    let (work, _) = fx.syms["work"];
    // Rebuild something else at the same path.
    compile("gcc", OTHER_C, "c", &fx.prog, &[]);
    assert_ne!(build_id(&fx.prog), old_id);
    let m = module(1, &fx.prog, old_id.clone(), BIAS);
    let mut sym = Symbolizer::without_debug_dirs();
    assert_eq!(
        leaf_frames(&mut sym, &m, BIAS + work),
        [Frame::bare(format!("prog+{work:#x}"), "prog")]
    );
    match sym.load_error(&m.path, &m.build_id) {
        Some(SymbolError::BuildIdMismatch { expected, .. }) => {
            assert_eq!(*expected, prof_analysis::hex(&old_id))
        }
        other => panic!("expected a build id mismatch, got {other:?}"),
    }
    let p = profile(&[m], &[vec![BIAS + work]]);
    let s = analyze(&p, &mut sym).summary();
    assert_eq!(s.functions[0].name, format!("prog+{work:#x}"));
    assert!(
        s.symbol_warnings[0].contains("differs from the recorded one"),
        "{:?}",
        s.symbol_warnings
    );

    // Missing file: same placeholder.
    let gone = module(2, &fx.dir.path().join("gone.so"), vec![1, 2, 3, 4], BIAS);
    assert_eq!(
        leaf_frames(&mut sym, &gone, BIAS + 0x10),
        [Frame::bare("gone.so+0x10", "gone.so")]
    );
    assert!(matches!(
        sym.load_error(&gone.path, &gone.build_id),
        Some(SymbolError::Unreadable { .. })
    ));
}

#[test]
fn separate_debug_files_by_build_id_and_debuglink() {
    let fx = prog_fixture();
    let id = build_id(&fx.prog);
    let dbg = fx.dir.path().join("prog.debug");
    let mut c = tool("objcopy");
    c.arg("--only-keep-debug").arg(&fx.prog).arg(&dbg);
    run(c);
    let stripped = fx.dir.path().join("prog_s");
    let mut c = tool("strip");
    c.arg("-o").arg(&stripped).arg(&fx.prog);
    run(c);
    let (mark, _) = fx.syms["inl_mark"];
    let inl_line = Some(line_of(PROG_C, "/* INL */"));

    // 1. Debian layout: <dir>/.build-id/xx/yyyy.debug.
    let h = prof_analysis::hex(&id);
    let store = fx.dir.path().join("debugroot");
    let slot = store.join(".build-id").join(&h[..2]);
    std::fs::create_dir_all(&slot).unwrap();
    std::fs::copy(&dbg, slot.join(format!("{}.debug", &h[2..]))).unwrap();
    let m = module(1, &stripped, id.clone(), BIAS);
    let mut sym = Symbolizer::without_debug_dirs();
    sym.add_debug_dir(&store);
    let frames = leaf_frames(&mut sym, &m, BIAS + mark);
    assert_eq!(names(&frames), ["work", "inl_step"], "{frames:#?}");
    assert_eq!(frames[1].line, inl_line);
    assert_eq!(frames[0].module, "prog_s");

    // ... even when the binary itself is gone (the build id vouches for the debug file).
    let gone = module(2, &fx.dir.path().join("deleted/prog"), id.clone(), BIAS);
    assert_eq!(
        names(&leaf_frames(&mut sym, &gone, BIAS + mark)),
        ["work", "inl_step"]
    );

    // 2. .gnu_debuglink next to the binary.
    let linked_dir = fx.dir.path().join("linked");
    std::fs::create_dir_all(&linked_dir).unwrap();
    let linked = linked_dir.join("prog_l");
    let mut c = tool("objcopy");
    c.current_dir(fx.dir.path())
        .arg("--add-gnu-debuglink=prog.debug")
        .arg(&stripped)
        .arg(&linked);
    run(c);
    std::fs::copy(&dbg, linked_dir.join("prog.debug")).unwrap();
    let m = module(3, &linked, build_id(&linked), BIAS);
    let mut sym = Symbolizer::without_debug_dirs();
    let frames = leaf_frames(&mut sym, &m, BIAS + mark);
    assert_eq!(names(&frames), ["work", "inl_step"], "{frames:#?}");
    assert_eq!(
        sym.dwarf_source(&m.path, &m.build_id),
        Some(linked_dir.join("prog.debug").as_path())
    );

    // 3. A file registered by build id (symbol upload) replaces a missing binary.
    let mut sym = Symbolizer::without_debug_dirs();
    assert_eq!(sym.add_file(&dbg).unwrap(), id);
    assert_eq!(
        names(&leaf_frames(&mut sym, &gone, BIAS + mark)),
        ["work", "inl_step"]
    );
}

#[test]
fn cpp_names_are_demangled() {
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("cpp_prog");
    compile("g++", CPP, "cc", &prog, &[]);
    let syms = nm(&prog);
    let find = |prefix: &str| {
        syms.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, &v)| v)
            .unwrap_or_else(|| panic!("no {prefix}"))
    };
    let (compute, _) = find("_ZN2ns6Widget7computeEi");
    let (twice, _) = find("_ZN2ns5twiceIlEET_S1_");
    let (g, _) = syms["g"];

    let m = module(1, &prog, build_id(&prog), BIAS);
    let mut sym = Symbolizer::without_debug_dirs();
    let frames = leaf_frames(&mut sym, &m, BIAS + compute);
    assert_eq!(names(&frames), ["ns::Widget::compute(int)"]);
    assert_eq!(frames[0].line, Some(line_of(CPP, "/* COMPUTE */")));
    assert_eq!(
        names(&leaf_frames(&mut sym, &m, BIAS + twice)),
        ["long ns::twice<long>(long)"]
    );
    // extern "C" names stay as they are (a C++ demangler reads `g` as `__float128`).
    assert_eq!(names(&leaf_frames(&mut sym, &m, BIAS + g)), ["g"]);

    // Symbol table only.
    let nodebug = dir.path().join("cpp_nodebug");
    let mut c = tool("strip");
    c.arg("--strip-debug").arg("-o").arg(&nodebug).arg(&prog);
    run(c);
    let m = module(2, &nodebug, build_id(&nodebug), BIAS);
    assert_eq!(
        names(&leaf_frames(&mut sym, &m, BIAS + compute)),
        ["ns::Widget::compute(int)"]
    );
    assert_eq!(names(&leaf_frames(&mut sym, &m, BIAS + g)), ["g"]);
}

/// libc through its Debian debug package, when installed (libc6-dbg).
#[test]
fn system_libc_with_debug_package() {
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let Ok(data) = std::fs::read(libc) else {
        eprintln!("skipped: no {}", libc.display());
        return;
    };
    let obj = object::File::parse(&*data).unwrap();
    let Some(id) = obj.build_id().unwrap().map(<[u8]>::to_vec) else {
        return;
    };
    let h = prof_analysis::hex(&id);
    let debug = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &h[..2],
        &h[2..]
    ));
    if !debug.exists() {
        eprintln!("skipped: no {}", debug.display());
        return;
    }
    let syms = nm(&debug);
    let Some(&(qsort, size)) = syms.get("qsort_r").or_else(|| syms.get("__qsort_r")) else {
        return;
    };
    let bias = 0x7f00_0000_0000;
    let m = Module {
        id: 1,
        path: libc.to_str().unwrap().into(),
        build_id: id,
        bias,
        ranges: vec![(bias, bias + (64 << 20))],
    };
    let mut sym = Symbolizer::new();
    let frames = leaf_frames(&mut sym, &m, bias + qsort + size / 2);
    let last = frames.last().unwrap();
    assert!(frames[0].name.contains("qsort"), "{frames:#?}");
    assert!(last.file.is_some() && last.line.is_some(), "{frames:#?}");
    assert_eq!(last.module, "libc.so.6");
    assert_eq!(
        sym.dwarf_source(&m.path, &m.build_id),
        Some(debug.as_path())
    );
}

#[inline(never)]
fn rust_marker_function(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31)
}

/// This test binary's own Rust code, located through /proc/self/maps: demangled Rust names.
#[test]
fn rust_names_in_this_test_binary() {
    let addr = rust_marker_function as *const () as usize as u64;
    assert_eq!(rust_marker_function(1), 31);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let (start, end, offset, path) = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-')?;
            let (s, e) = (
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            );
            (s <= addr && addr < e && f.len() >= 6).then(|| {
                (
                    s,
                    e,
                    u64::from_str_radix(f[2], 16).unwrap(),
                    f[5].to_string(),
                )
            })
        })
        .expect("the test function is mapped");
    // Runtime = svma + bias; the segment maps file offset `offset` at `start`.
    let data = std::fs::read(&path).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let file_off = addr - start + offset;
    let svma = obj
        .segments()
        .find_map(|seg| {
            use object::ObjectSegment;
            let (fo, fs) = seg.file_range();
            (fo <= file_off && file_off < fo + fs).then(|| file_off - fo + seg.address())
        })
        .expect("a segment holds the function");
    let bias = addr - svma;
    let m = Module {
        id: 1,
        path: path.clone(),
        build_id: obj
            .build_id()
            .unwrap()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        bias,
        ranges: vec![(start, end)],
    };
    let mut sym = Symbolizer::without_debug_dirs();
    let frames = leaf_frames(&mut sym, &m, addr);
    assert_eq!(
        names(&frames),
        ["native_symbols::rust_marker_function"],
        "{frames:#?}"
    );
    assert!(
        frames[0]
            .file
            .as_deref()
            .unwrap()
            .ends_with("native_symbols.rs"),
        "{frames:#?}"
    );

    // And through a profile: the module map must find the address.
    let p = profile(&[m], &[vec![addr]]);
    assert_eq!(
        analyze(&p, &mut sym).collapsed(),
        "native_symbols::rust_marker_function 1\n"
    );
}

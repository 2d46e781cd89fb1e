//! ns per call of what kernel-time accounting adds to the SIGPROF handler (issue 12): the
//! thread's CPU clock (a syscall: the vDSO does not serve CPU clocks), read at every
//! kernel-catcher signal after a syscall and every 16th perf sample, and the check of
//! the 18 code bytes around a pc at every POSIX-timer signal (read in place inside a
//! loaded module, else with process_vm_readv).
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// A pc right after a `syscall` instruction: in libc's getppid (`mov $0x6e,%eax;
/// syscall; ret`).
fn after_syscall() -> u64 {
    let f = libc::getppid as *const u8;
    for i in 0..64 {
        // SAFETY: reading getppid's own code, which is mapped and readable (an ELF text
        // segment), within its first 64 bytes.
        let (a, b) = unsafe { (*f.add(i), *f.add(i + 1)) };
        if (a, b) == (0x0f, 0x05) {
            return f as u64 + i as u64 + 2;
        }
    }
    panic!("no syscall instruction in getppid");
}

fn bench(c: &mut Criterion) {
    prof_agent::testing::init_pid();
    let pc = after_syscall();
    assert_eq!(
        prof_agent::testing::syscall_at(pc),
        Some(110),
        "getppid is syscall 110"
    );
    c.bench_function("thread_cpu_clock", |b| {
        b.iter(|| black_box(prof_agent::testing::thread_cpu_ns()))
    });
    // Before the modules are indexed: the code is read with process_vm_readv.
    c.bench_function("syscall_at_process_vm_readv", |b| {
        b.iter(|| black_box(prof_agent::testing::syscall_at(black_box(pc))))
    });
    // Indexed (as by the writer thread): read in place.
    let _modules = prof_agent::testing::Unwinder::new();
    c.bench_function("syscall_at_syscall_return", |b| {
        b.iter(|| black_box(prof_agent::testing::syscall_at(black_box(pc))))
    });
    let elsewhere = bench as *const () as u64 + 16;
    c.bench_function("syscall_at_other_pc", |b| {
        b.iter(|| black_box(prof_agent::testing::syscall_at(black_box(elsewhere))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

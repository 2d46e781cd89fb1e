//! ns per sample of the in-handler unwinder on a ~30-frame DWARF stack (this benchmark is
//! built without frame pointers, so every frame needs CFI).
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[inline(never)]
fn recurse(n: u32, f: &mut dyn FnMut()) -> u32 {
    if n == 0 {
        f();
        return 0;
    }
    black_box(recurse(black_box(n - 1), f)) + 1
}

fn bench(c: &mut Criterion) {
    let mut u = prof_agent::testing::Unwinder::new();
    recurse(30, &mut || {
        let (frames, flags) = u.unwind_here(256);
        println!("unwound {} frames (flags {flags})", frames.len());
        c.bench_function("unwind_dwarf_30_frames", |b| {
            b.iter(|| black_box(u.unwind_here(256).0.len()))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

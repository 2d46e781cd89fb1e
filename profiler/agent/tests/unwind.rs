//! The in-handler unwinder, run on this test's own stack (Rust test binaries are built
//! without frame pointers, so the walk needs DWARF CFI the whole way).
#![cfg(target_arch = "x86_64")]
use std::hint::black_box;

#[inline(never)]
fn recurse(n: u32, f: &mut dyn FnMut()) -> u32 {
    if n == 0 {
        f();
        return 0;
    }
    black_box(recurse(black_box(n - 1), f)) + 1
}

fn addr_of_recurse() -> (u64, u64) {
    // The function's code range, approximately: [start, start + 512).
    let start = recurse as *const () as u64;
    (start, start + 512)
}

#[test]
fn unwinds_through_deep_recursion_to_the_thread_entry() {
    let (lo, hi) = addr_of_recurse();
    let mut checked = false;
    std::thread::spawn(move || {
        // Stack bounds are per thread: set up on the thread that unwinds.
        let mut u = prof_agent::testing::Unwinder::new();
        recurse(40, &mut || {
            let (frames, flags) = u.unwind_here(256);
            let in_recurse = frames.iter().filter(|&&a| a >= lo && a < hi).count();
            // 41 activations of recurse: the one calling the closure plus 40 recursive calls.
            assert!(
                in_recurse >= 40,
                "only {in_recurse} recurse frames in {} ({flags:#x})",
                frames.len()
            );
            assert_eq!(
                flags, 0,
                "the walk must reach the thread entry cleanly: {frames:x?}"
            );
            checked = true;
        });
        assert!(checked);
    })
    .join()
    .unwrap();
}

#[test]
fn depth_limit_sets_the_truncation_flag() {
    let mut u = prof_agent::testing::Unwinder::new();
    recurse(50, &mut || {
        let (frames, flags) = u.unwind_here(20);
        assert_eq!(frames.len(), 20);
        assert_eq!(flags, prof_format::flags::TRUNCATED);
    });
}

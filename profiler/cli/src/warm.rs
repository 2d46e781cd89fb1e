//! Symbolization while the command runs, so the summary is printed as soon as it exits.
//!
//! Loading a module's symbols and DWARF (decompressing debug sections, parsing line
//! programs) is most of the time `prof run` spends after the command exits: ~100 ms for a
//! CPython with debug info and libc6-dbg. The logs are readable while they grow (the agent
//! writes whole records, and a truncated tail is ignored), so a thread symbolizes what the
//! logs hold so far, at 0.5, 1, 2, 4... s into the run, at the lowest CPU priority
//! (SCHED_IDLE): it uses a CPU the command leaves idle and never competes with it. The
//! summary then reuses the warmed symbolizer, whose cache already holds most addresses
//! (hot code shows up early).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prof_analysis::{Symbolizer, TierRules};

pub struct Warmer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Symbolizer>,
}

/// The first round's delay: a command that ends sooner costs nothing extra.
const FIRST: Duration = Duration::from_millis(500);
/// How often the stop flag is checked while waiting for the next round.
const TICK: Duration = Duration::from_millis(20);

impl Warmer {
    pub fn start(logs: PathBuf, rules: TierRules) -> Option<Warmer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("prof-warm".into())
            .spawn(move || {
                lowest_priority();
                let mut sym = Symbolizer::new();
                let mut wait = FIRST;
                let mut next = Instant::now() + wait;
                while !flag.load(Ordering::Acquire) {
                    if Instant::now() < next {
                        std::thread::sleep(TICK);
                        continue;
                    }
                    round(&logs, &rules, &mut sym);
                    wait *= 2;
                    next = Instant::now() + wait;
                }
                sym
            })
            .ok()?;
        Some(Warmer { stop, thread })
    }

    /// Stops warming (waiting for a round in progress: its work is kept) and hands over
    /// the symbolizer.
    pub fn finish(self) -> Symbolizer {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or_else(|_| Symbolizer::new())
    }
}

/// Symbolizes every frame of the logs as they are now. Errors are not reported: the
/// logs are incomplete by nature here, and the summary reads them again at the end.
fn round(logs: &std::path::Path, rules: &TierRules, sym: &mut Symbolizer) {
    let Ok(merged) = crate::merge::merge_dir(logs) else {
        return;
    };
    if merged.logs == 0 {
        return;
    }
    if let Ok((profile, _)) = crate::report::decode(&merged.bytes) {
        let _ = prof_analysis::analyze_with(&profile, sym, rules);
    }
}

fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 = the calling thread; a valid sched_param. Failure leaves the thread
    // at normal priority, which is harmless.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

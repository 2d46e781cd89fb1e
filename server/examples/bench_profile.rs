//! Writes a large synthetic profile for the server benchmark (bench/server.sh):
//! `bench_profile OUT [SAMPLES] [STACKS]` (defaults: 1,000,000 samples over 5,000 distinct
//! stacks). Its frames are real functions of this executable (its symbol table, its build
//! id, its path), so the server really symbolizes them: DWARF lookups, inlined frames.
//! Stacks are random walks 6 to 40 frames deep over a fixed random call graph (shared
//! prefixes, like real programs); sample counts per stack follow a Zipf law; four threads;
//! samples 1 ms apart per thread.

use prof_e2e::rng::Rng;
use std::collections::HashSet;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use prof_format::{
    node_kind, LogWriter, Mode, Module, PendingSample, ProcessEnd, ProcessInfo, TimerSource,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_profile OUT [SAMPLES] [STACKS]"))?;
    let samples: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let want_stacks: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5000);

    let exe = std::fs::canonicalize("/proc/self/exe")?;
    let bytes = std::fs::read(&exe)?;
    let obj = object::File::parse(&*bytes)?;
    let build_id = obj
        .build_id()?
        .ok_or_else(|| anyhow::anyhow!("{} has no build id", exe.display()))?
        .to_vec();
    let text = obj
        .section_by_name(".text")
        .ok_or_else(|| anyhow::anyhow!("no .text"))?;
    let (lo, hi) = (text.address(), text.address() + text.size());
    let mut seen = HashSet::new();
    let mut funcs: Vec<u64> = obj
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() >= 16)
        .map(|s| s.address())
        .filter(|&a| a >= lo && a < hi && seen.insert(a))
        .collect();
    funcs.sort_unstable();
    let n_funcs = funcs.len().min(3000);
    let funcs = &funcs[..n_funcs];
    eprintln!(
        "bench_profile: {} functions of {} (build id {})",
        n_funcs,
        exe.display(),
        prof_analysis::hex(&build_id)
    );

    let bias = 0x5555_0000_0000u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A random call graph: every function calls 2 to 6 others.
    let callees: Vec<Vec<usize>> = (0..n_funcs)
        .map(|_| {
            (0..2 + rng.below(5))
                .map(|_| rng.below(n_funcs as u64) as usize)
                .collect()
        })
        .collect();

    let mut w = LogWriter::new(Vec::with_capacity(8 << 20));
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    w.process(&ProcessInfo {
        pid: 1000,
        ppid: 1,
        start_unix_ns: start,
        period_ns: 1_000_000,
        mode: Mode::Cpu,
        timer: TimerSource::PerfEvent,
        time_unit_ns: 100_000,
        max_depth: 128,
        exe: exe.display().to_string(),
        argv: vec!["bench-app".into(), "--big".into()],
        agent_version: "bench".into(),
    });
    w.module(&Module {
        id: 1,
        path: exe.display().to_string(),
        build_id,
        bias,
        ranges: vec![(lo + bias, hi + bias)],
    });
    for t in 1..=4u32 {
        w.thread(1000 + t, &format!("worker-{t}"));
    }

    let roots: Vec<usize> = (0..4).map(|_| rng.below(n_funcs as u64) as usize).collect();
    let mut leaves: Vec<u32> = Vec::new();
    let mut distinct = HashSet::new();
    let mut tries = 0;
    while leaves.len() < want_stacks && tries < want_stacks * 100 {
        tries += 1;
        let depth = 6 + rng.below(35) as usize;
        let mut f = roots[rng.below(4) as usize];
        let mut stack = vec![(node_kind::NATIVE, funcs[f] + bias + 4)];
        for _ in 1..depth {
            let c = &callees[f];
            f = c[rng.below(c.len() as u64) as usize];
            stack.push((node_kind::NATIVE, funcs[f] + bias + 4));
        }
        let leaf = w.stacks.intern(stack);
        if distinct.insert(leaf) {
            leaves.push(leaf);
        }
    }

    // Zipf(1.1) over the stacks, via the cumulative weights.
    let weights: Vec<f64> = (1..=leaves.len())
        .map(|r| 1.0 / (r as f64).powf(1.1))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for x in &weights {
        acc += x / total;
        cdf.push(acc);
    }
    let mut per_thread: Vec<Vec<PendingSample>> = vec![Vec::new(); 4];
    for i in 0..samples {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let k = cdf.partition_point(|&c| c < u).min(leaves.len() - 1);
        let t = (i % 4) as usize;
        let time_ns = (i / 4) * 1_000_000;
        per_thread[t].push(PendingSample {
            time_ns,
            leaf: leaves[k],
            weight: 1,
            flags: 0,
        });
        if per_thread[t].len() == 1000 {
            w.samples(1001 + t as u32, &per_thread[t]);
            per_thread[t].clear();
        }
    }
    for (t, rest) in per_thread.iter().enumerate() {
        w.samples(1001 + t as u32, rest);
    }
    w.end(&ProcessEnd {
        duration_ns: samples / 4 * 1_000_000,
        cpu_user_ns: samples * 1_000_000,
        cpu_system_ns: 0,
        signals: samples,
    });
    let node_count = w.stacks.len();
    let data = w.into_inner()?;
    std::fs::write(out, &data)?;
    eprintln!(
        "bench_profile: wrote {out}: {samples} samples, {} distinct stacks, {} stack nodes, {} bytes",
        leaves.len(),
        node_count,
        data.len()
    );
    Ok(())
}

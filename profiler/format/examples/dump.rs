//! Prints what a prof log holds, record by record in summary: `cargo run -p prof-format
//! --example dump -- FILE`. A debugging aid for the format, not a user tool.
use std::collections::HashMap;

fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE");
    let bytes = std::fs::read(&path).expect("read");
    let p = match prof_format::read_profile(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "version {} truncated {} bytes {}",
        p.version,
        p.truncated,
        bytes.len()
    );
    for pr in &p.processes {
        let i = &pr.info;
        println!(
            "process {} (ppid {}) {:?} mode {:?} timer {:?} period {} ns",
            i.pid, i.ppid, i.argv, i.mode, i.timer, i.period_ns
        );
        for m in &pr.modules {
            println!(
                "  module {} {} bias {:#x} ranges {:x?}",
                m.id, m.path, m.bias, m.ranges
            );
        }
        println!("  threads {:?}", pr.threads);
        let mut by_tid: HashMap<u32, (usize, u64)> = HashMap::new();
        let mut flags: HashMap<u32, usize> = HashMap::new();
        for s in &pr.samples {
            let e = by_tid.entry(s.tid).or_default();
            e.0 += 1;
            e.1 += s.weight as u64;
            *flags.entry(s.flags).or_default() += 1;
        }
        println!(
            "  nodes {} samples {} lost {} per tid {:?} flags {:?}",
            pr.nodes.len() - 1,
            pr.samples.len(),
            pr.lost,
            by_tid,
            flags
        );
        println!("  end {:?} notices {:?}", pr.end, pr.notices);
        for m in pr.markers() {
            println!("  marker {m:?}");
        }
        let want: u32 = std::env::var("FLAGS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for s in pr
            .samples
            .iter()
            .filter(|s| want == 0 || s.flags & want != 0)
            .take(if want == 0 { 3 } else { 8 })
        {
            let st: Vec<String> = pr
                .stack(s.leaf)
                .map(|n| {
                    if n.kind == 0 {
                        format!("{:x}", n.value)
                    } else {
                        format!("k{}:{:x}", n.kind, n.value)
                    }
                })
                .collect();
            println!("  sample t={} tid={} {:?}", s.time_ns, s.tid, st);
        }
    }
}

//! Python stacks as the tests read them: folded stacks, the chains of callers of a
//! function, and the check that a function sits at one depth under whole Python chains
//! (CPython and PyPy alike).

use std::path::Path;

use crate::{prof, run_captured, Value, TIMEOUT};

/// Folded stacks (`prof report --format collapsed`) as (frames, weight).
pub fn folded(profile: &Path) -> Vec<(Vec<String>, u64)> {
    let o = run_captured(
        prof()
            .args(["report", "--format", "collapsed"])
            .arg(profile),
        TIMEOUT,
    );
    assert!(o.status.success(), "prof report: {}", o.stderr);
    o.stdout
        .lines()
        .filter_map(|l| {
            let (stack, w) = l.rsplit_once(' ')?;
            Some((
                stack.split(';').map(str::to_string).collect(),
                w.parse().ok()?,
            ))
        })
        .collect()
}

/// The chains of callers of `func` (its outermost occurrence in each stack), heaviest
/// first, with their weights; and `func`'s total weight.
pub fn caller_chains(stacks: &[(Vec<String>, u64)], func: &str) -> (Vec<(String, u64)>, u64) {
    let mut chains: std::collections::HashMap<String, u64> = Default::default();
    let mut total = 0;
    for (frames, w) in stacks {
        if let Some(i) = frames.iter().position(|f| f == func) {
            *chains.entry(frames[..i].join(";")).or_default() += w;
            total += w;
        }
    }
    let mut v: Vec<(String, u64)> = chains.into_iter().collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    (v, total)
}

/// The Python stacks of `func` are whole: `func` sits under one chain of callers (ending
/// in `<module>;main`) for >= 99% of its weight, and from `<module>` to the innermost
/// Python frame every frame is a Python function (no interpreter frame interleaved).
/// Returns the weight of `func`.
pub fn assert_one_depth(
    stacks: &[(Vec<String>, u64)],
    report: &Value,
    func: &str,
    who: &str,
) -> u64 {
    let (chains, total) = caller_chains(stacks, func);
    let show = |chains: &[(String, u64)]| {
        chains
            .iter()
            .take(5)
            .map(|(c, w)| format!("  {w}: ...{}\n", &c[c.len().saturating_sub(200)..]))
            .collect::<String>()
    };
    assert!(total >= 500, "{who}: only {total} samples in {func}");
    let (top, w) = &chains[0];
    assert!(
        top.ends_with(";<module>;main"),
        "{who}: {func}'s callers are not <module>;main:\n{}",
        show(&chains)
    );
    assert!(
        *w as f64 >= 0.99 * total as f64,
        "{who}: {func} at one depth for only {w} of {total}:\n{}",
        show(&chains)
    );
    // Python functions: frames whose module is a source file (`[python]`: a code object
    // freed before the agent could read its name, as exec's often are).
    let python: std::collections::HashSet<&str> = report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            let m = f["module"].as_str().unwrap_or("");
            m.ends_with(".py") || m.starts_with('<') || m == "[python]"
        })
        .filter_map(|f| f["name"].as_str())
        .collect();
    let mut interleaved = 0;
    let mut example = String::new();
    for (frames, w) in stacks {
        let Some(first) = frames.iter().position(|f| f == "<module>") else {
            continue;
        };
        if !frames.iter().any(|f| f == func) {
            continue;
        }
        let last = frames
            .iter()
            .rposition(|f| python.contains(f.as_str()))
            .unwrap();
        if let Some(c) = frames[first..last]
            .iter()
            .find(|f| !python.contains(f.as_str()))
        {
            interleaved += w;
            example = format!("{c} in {}", frames[first..=last].join(";"));
        }
    }
    assert!(
        interleaved as f64 <= 0.01 * total as f64,
        "{who}: {interleaved} of {total} samples of {func} have native frames between Python frames, e.g. {example}"
    );
    total
}

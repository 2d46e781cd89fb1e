//! fork + exec: every process of the run is in the profile with its own samples.

use prof_e2e::*;

#[test]
fn forked_and_execed_child_has_its_own_samples() {
    let parent = fixture("fork_parent");
    let child = fixture("child_burn");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.data");
    let o = run_captured(
        &mut prof_run(
            &[],
            &out,
            &[parent.as_os_str(), child.as_os_str(), "600".as_ref()],
        ),
        TIMEOUT,
    );
    assert_eq!(o.code(), Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("child_burn done"), "{}", o.stdout);
    let rep = report_json(&out);
    let procs = rep["processes"].as_array().expect("processes array");
    let find = |name: &str| {
        procs
            .iter()
            .filter(|p| {
                // argv[0]: the parent's arguments name the child's program too.
                let argv0 = p["command"]
                    .as_str()
                    .unwrap_or("")
                    .split(' ')
                    .next()
                    .unwrap_or("");
                argv0.contains(name)
            })
            .max_by_key(|p| p["samples"].as_u64().unwrap_or(0))
            .unwrap_or_else(|| panic!("no process running {name} in {procs:#?}"))
    };
    let (p, c) = (find("fork_parent"), find("child_burn"));
    assert_ne!(p["pid"], c["pid"], "{procs:#?}");
    assert!(p["samples"].as_u64().unwrap() > 50, "{procs:#?}");
    assert!(c["samples"].as_u64().unwrap() > 50, "{procs:#?}");
    let weight = num(&rep, "weight");
    let child_share = total_of(&rep, "child_burn") / weight;
    let parent_share = total_of(&rep, "parent_work") / weight;
    // 0.6 s in the child against 0.6 s in the parent.
    assert!(
        child_share > 0.3 && parent_share > 0.3,
        "child {child_share} parent {parent_share}\n{}",
        describe(&rep)
    );
    let threads = rep["threads"].as_array().expect("threads array");
    for pid in [&p["pid"], &c["pid"]] {
        assert!(
            threads.iter().any(|t| &t["pid"] == pid),
            "no thread of pid {pid}: {threads:#?}"
        );
    }
}

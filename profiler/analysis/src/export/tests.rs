use std::collections::HashMap;
use std::io::Read;

use prof_format::Profile;
use serde_json::Value;

use super::*;
use crate::import::import_bytes;
use crate::{analyze, Analysis, Symbolizer};

/// A small profile with times, two threads, tiers and source lines: perf script text.
const PERF: &str = "\
app 10/10 1.000000: 1000000 cpu-clock:
\t400500 hot_loop+0x1 (/opt/app)
  app.c:12
\t400400 main+0x2 (/opt/app)
  app.c:30

app 10/10 1.001000: 1000000 cpu-clock:
\t400500 hot_loop+0x1 (/opt/app)
  app.c:12
\t400400 main+0x2 (/opt/app)
  app.c:30

app 10/11 1.001500: 1000000 cpu-clock:
\tffffffff81000000 do_syscall_64+0x10 ([kernel.kallsyms])
\t400600 worker+0x3 (/opt/app)
  app.c:40

app 10/10 1.002000: 1000000 cpu-clock:
\t400400 main+0x2 (/opt/app)
  app.c:31
";

fn fixture() -> (Profile, Analysis) {
    let imp = import_bytes(PERF.as_bytes()).unwrap();
    let a = analyze(&imp.profile, &mut Symbolizer::without_debug_dirs());
    (imp.profile, a)
}

fn render(format: ExportFormat) -> Vec<u8> {
    let (p, a) = fixture();
    export(format, &p, &a, &ExportOptions::default()).unwrap()
}

#[test]
fn names_round_trip() {
    for f in ExportFormat::ALL {
        assert_eq!(ExportFormat::from_name(f.name()), Some(f));
    }
    assert_eq!(ExportFormat::from_name("png"), None);
}

#[test]
fn collapsed_golden() {
    let out = String::from_utf8(render(ExportFormat::Collapsed)).unwrap();
    assert_eq!(out, "main 1\nmain;hot_loop 2\nworker;do_syscall_64 1\n");
}

#[test]
fn speedscope_structure() {
    let v: Value = serde_json::from_slice(&render(ExportFormat::Speedscope)).unwrap();
    assert_eq!(v["$schema"], speedscope::SCHEMA);
    let frames = v["shared"]["frames"].as_array().unwrap();
    let profiles = v["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2, "one per thread");
    let names: Vec<&str> = frames.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let hot = names.iter().position(|&n| n == "hot_loop").unwrap();
    assert_eq!(frames[hot]["file"], "app.c");
    assert_eq!(frames[hot]["line"], 12);
    let main_thread = &profiles[0];
    assert_eq!(main_thread["type"], "sampled");
    assert_eq!(main_thread["unit"], "nanoseconds");
    assert_eq!(main_thread["name"], "app (pid 10): app (tid 10)");
    // Samples in time order, root first, weights in ns.
    let samples: Vec<Vec<&str>> = main_thread["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|i| names[i.as_u64().unwrap() as usize])
                .collect()
        })
        .collect();
    assert_eq!(
        samples,
        vec![
            vec!["main", "hot_loop"],
            vec!["main", "hot_loop"],
            vec!["main"]
        ]
    );
    assert_eq!(
        main_thread["weights"],
        serde_json::json!([1000000, 1000000, 1000000])
    );
    let (start, end) = (
        main_thread["startValue"].as_u64().unwrap(),
        main_thread["endValue"].as_u64().unwrap(),
    );
    assert_eq!(start, 0);
    assert_eq!(end, 3_000_000);
    assert_eq!(v["activeProfileIndex"], 0);
}

/// The pprof export, un-gzipped and decoded.
fn decoded_pprof() -> pprof_proto::Profile {
    use prost::Message;
    let gz = render(ExportFormat::Pprof);
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzipped");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    pprof_proto::Profile::decode(&raw[..]).expect("a profile.proto message")
}

#[test]
fn pprof_decodes_back() {
    let p = decoded_pprof();
    let s = |i: i64| p.string_table[i as usize].clone();
    assert_eq!(p.string_table[0], "");
    let types: Vec<(String, String)> = p
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(
        types,
        vec![
            ("samples".into(), "count".into()),
            ("cpu".into(), "nanoseconds".into())
        ]
    );
    assert_eq!(p.period, 1_000_000, "period");
    // functions and locations
    let funcs: HashMap<u64, (String, String)> = p
        .function
        .iter()
        .map(|f| (f.id, (s(f.name), s(f.filename))))
        .collect();
    let locs: HashMap<u64, (String, i64)> = p
        .location
        .iter()
        .map(|l| {
            assert_eq!(l.mapping_id, 1, "mapping id");
            let line = &l.line[0];
            (l.id, (funcs[&line.function_id].0.clone(), line.line))
        })
        .collect();
    assert!(funcs
        .values()
        .any(|(n, file)| n == "hot_loop" && file == "app.c"));
    // samples: totals, innermost-first locations, tier labels
    let mut total_count = 0;
    let mut total_ns = 0;
    let mut by_stack: HashMap<Vec<String>, (i64, String)> = HashMap::new();
    for sample in &p.sample {
        let locs_of: Vec<String> = sample
            .location_id
            .iter()
            .map(|id| locs[id].0.clone())
            .collect();
        total_count += sample.value[0];
        total_ns += sample.value[1];
        let tier = sample
            .label
            .iter()
            .find(|l| s(l.key) == "tier")
            .map(|l| s(l.str))
            .unwrap_or_default();
        by_stack.insert(locs_of, (sample.value[0], tier));
    }
    assert_eq!(total_count, 4);
    assert_eq!(total_ns, 4_000_000);
    assert_eq!(
        by_stack[&vec!["hot_loop".to_string(), "main".to_string()]],
        (2, "native".to_string())
    );
    assert_eq!(
        by_stack[&vec!["do_syscall_64".to_string(), "worker".to_string()]],
        (1, "kernel".to_string())
    );
}

#[test]
fn firefox_structure() {
    let v: Value = serde_json::from_slice(&render(ExportFormat::Firefox)).unwrap();
    let meta = &v["meta"];
    assert!(meta["preprocessedProfileVersion"].as_u64().unwrap() >= 40);
    let cats: Vec<&str> = meta["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for t in Tier::ALL {
        assert!(cats.contains(&t.name()), "{cats:?}");
    }
    let threads = v["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2);
    let mut samples = 0;
    for t in threads {
        let n = t["samples"]["length"].as_u64().unwrap();
        samples += t["samples"]["weight"]
            .as_array()
            .map(|w| w.iter().map(|x| x.as_u64().unwrap()).sum::<u64>())
            .unwrap_or(n);
        let strings: Vec<&str> = t["stringArray"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let ft = &t["funcTable"];
        let names = ft["name"].as_array().unwrap();
        for (i, n) in names.iter().enumerate() {
            let name = strings[n.as_u64().unwrap() as usize];
            if name == "hot_loop" {
                let file = ft["fileName"][i].as_u64().unwrap() as usize;
                assert_eq!(strings[file], "app.c");
                assert_eq!(ft["lineNumber"][i], 12);
            }
        }
        // Every frame's category is a tier (the sample's), never the default "Other".
        for c in t["frameTable"]["category"].as_array().unwrap() {
            assert!(c.as_u64().unwrap() >= 1);
        }
    }
    assert_eq!(samples, 4);
}

#[test]
fn svg_is_xml_with_the_hot_function() {
    let svg = String::from_utf8(render(ExportFormat::Svg)).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    let hot = titles
        .iter()
        .find(|t| t.starts_with("hot_loop"))
        .unwrap_or_else(|| panic!("{titles:?}"));
    assert!(hot.contains("total 2 (50.00%)"), "{hot}");
    assert!(hot.contains("native 100.0%"), "{hot}");
    assert!(hot.contains("app.c:12"), "{hot}");
    assert!(titles.iter().any(|t| t.contains("kernel 100.0%")));
}

#[test]
fn svg_and_html_escape_names() {
    let (p, a) = analyze_folded("a<b>&\"c\";</script><!--x 3\n");
    let svg = String::from_utf8(
        export(
            ExportFormat::Svg,
            &p,
            &a,
            &ExportOptions {
                title: Some("<t>".into()),
            },
        )
        .unwrap(),
    )
    .unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    let html = String::from_utf8(
        export(
            ExportFormat::Html,
            &p,
            &a,
            &ExportOptions {
                title: Some("<t>".into()),
            },
        )
        .unwrap(),
    )
    .unwrap();
    assert!(html.contains("<title>&lt;t&gt;</title>"));
    let data = html_data(&html);
    assert!(!data.contains("</script"));
    let v: Value = serde_json::from_str(&data).unwrap();
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"</script><!--x"), "{names:?}");
}

fn analyze_folded(text: &str) -> (Profile, Analysis) {
    let imp = import_bytes(text.as_bytes()).unwrap();
    let a = analyze(&imp.profile, &mut Symbolizer::without_debug_dirs());
    (imp.profile, a)
}

/// The JSON inside `<script id="prof-data">`.
pub(crate) fn html_data(html: &str) -> String {
    let start = html
        .find(r#"<script id="prof-data" type="application/json">"#)
        .unwrap();
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    rest[open..close].to_string()
}

#[test]
fn html_is_self_contained_with_the_tree() {
    let html = String::from_utf8(render(ExportFormat::Html)).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Self-contained: no external scripts, styles or fetches.
    for needle in [
        "<script src",
        "<link ",
        "fetch(",
        "XMLHttpRequest",
        "import(",
    ] {
        assert!(!html.contains(needle), "{needle}");
    }
    let v: Value = serde_json::from_str(&html_data(&html)).unwrap();
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[0].as_str().unwrap())
        .collect();
    let n = v["parent"].as_array().unwrap().len();
    assert_eq!(v["func"].as_array().unwrap().len(), n);
    assert_eq!(
        v["tierCounts"].as_array().unwrap().len(),
        n * Tier::ALL.len()
    );
    assert_eq!(v["total"][0], 4);
    let hot = v["func"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| names[f.as_u64().unwrap() as usize] == "hot_loop")
        .unwrap();
    assert_eq!(v["total"][hot], 2);
    assert_eq!(v["nsPerWeight"], 1_000_000);
    assert!(v["timeline"]["buckets"].as_u64().unwrap() > 0);
}

/// Compares `actual` with `testdata/golden/NAME` (the crate version replaced by
/// `VERSION`); `PROF_BLESS=1` rewrites the file instead.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/golden")
        .join(name);
    let actual = actual.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    if std::env::var_os("PROF_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (PROF_BLESS=1 cargo test writes it)",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{name} differs from {} (if the change is intended, rerun with PROF_BLESS=1):\n{}",
        path.display(),
        first_difference(&want, &actual)
    );
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n- {x}\n+ {y}", i + 1);
        }
    }
    format!("{} lines vs {} lines", a.lines().count(), b.lines().count())
}

fn pretty(bytes: &[u8]) -> String {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

#[test]
fn golden_files() {
    golden(
        "speedscope.json",
        &pretty(&render(ExportFormat::Speedscope)),
    );
    golden("firefox.json", &pretty(&render(ExportFormat::Firefox)));
    golden(
        "flamegraph.svg",
        &String::from_utf8(render(ExportFormat::Svg)).unwrap(),
    );
    let html = String::from_utf8(render(ExportFormat::Html)).unwrap();
    golden(
        "flamegraph-data.json",
        &(pretty(html_data(&html).as_bytes())),
    );
    // pprof: the decoded message.
    golden("pprof.txt", &format!("{:#?}\n", decoded_pprof()));
}

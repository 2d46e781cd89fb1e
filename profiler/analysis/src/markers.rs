//! [issue 14] Request markers: the intervals a program marked (`prof_marker_begin/end`,
//! the `prof_markers` Python module), placed on the timeline's axis, and their latency
//! statistics.

use prof_format::Marker;
use serde::{Deserialize, Serialize};

/// One marker of a process, with its place on the process's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerInfo {
    pub marker: Marker,
    /// Where it starts on the timeline's x axis: CPU time the process had used (cpu mode;
    /// the seed's plot: request time against CPU seconds since start), or wall time since
    /// the process started (wall mode), ns.
    pub timeline_ns: u64,
}

/// Places markers on the x axis: `cum` holds (sample time, CPU time used up to and
/// including that sample) in time order; `wall` puts them at their start time instead.
pub fn place(markers: Vec<Marker>, cum: &[(u64, u64)], wall: bool) -> Vec<MarkerInfo> {
    markers
        .into_iter()
        .map(|m| {
            let timeline_ns = if wall {
                m.start_ns
            } else {
                // CPU used by the samples taken before the marker started.
                let i = cum.partition_point(|&(t, _)| t < m.start_ns);
                if i == 0 {
                    0
                } else {
                    cum[i - 1].1
                }
            };
            MarkerInfo {
                marker: m,
                timeline_ns,
            }
        })
        .collect()
}

/// `markers[]` of the JSON summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerSummary {
    pub name: String,
    pub pid: u32,
    pub tid: u32,
    /// Seconds since its process started.
    pub start_s: f64,
    /// `null` when the process ended inside the marker.
    pub duration_s: Option<f64>,
    /// CPU time of its thread between begin and end (`null` for intervals given whole).
    pub cpu_s: Option<f64>,
    /// 0 for an outermost marker.
    #[serde(default)]
    pub depth: u32,
    /// Its place on the timeline's x axis (CPU seconds the process had used; wall seconds
    /// in wall mode).
    #[serde(default)]
    pub timeline_s: f64,
}

/// `marker_stats[]` of the JSON summary: one row per marker name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerStats {
    pub name: String,
    /// Markers with an end.
    pub count: u64,
    /// Markers still open when their process ended.
    pub open: u64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    pub mean_s: f64,
    pub max_s: f64,
    pub total_s: f64,
    /// Sum of their threads' CPU time (markers with a CPU time only).
    pub cpu_s: f64,
}

pub fn summarize(pid: u32, infos: &[MarkerInfo]) -> Vec<MarkerSummary> {
    infos
        .iter()
        .map(|i| {
            let m = &i.marker;
            MarkerSummary {
                name: m.name.clone(),
                pid,
                tid: m.tid,
                start_s: m.start_ns as f64 / 1e9,
                duration_s: m.end_ns.map(|e| (e - m.start_ns) as f64 / 1e9),
                cpu_s: m.cpu_ns.map(|c| c as f64 / 1e9),
                depth: m.depth,
                timeline_s: i.timeline_ns as f64 / 1e9,
            }
        })
        .collect()
}

/// Per-name statistics, busiest name (largest total time) first.
pub fn stats(markers: &[MarkerSummary]) -> Vec<MarkerStats> {
    let mut by_name: std::collections::BTreeMap<&str, (Vec<f64>, u64, f64)> = Default::default();
    for m in markers {
        let e = by_name.entry(&m.name).or_default();
        match m.duration_s {
            Some(d) => e.0.push(d),
            None => e.1 += 1,
        }
        e.2 += m.cpu_s.unwrap_or(0.0);
    }
    let mut out: Vec<MarkerStats> = by_name
        .into_iter()
        .map(|(name, (mut d, open, cpu_s))| {
            d.sort_by(f64::total_cmp);
            let total: f64 = d.iter().sum();
            MarkerStats {
                name: name.to_string(),
                count: d.len() as u64,
                open,
                p50_s: quantile(&d, 0.50),
                p90_s: quantile(&d, 0.90),
                p99_s: quantile(&d, 0.99),
                mean_s: if d.is_empty() {
                    0.0
                } else {
                    total / d.len() as f64
                },
                max_s: d.last().copied().unwrap_or(0.0),
                total_s: total,
                cpu_s,
            }
        })
        .collect();
    out.sort_by(|a, b| b.total_s.total_cmp(&a.total_s).then(a.name.cmp(&b.name)));
    out
}

/// The nearest-rank quantile of sorted values (0 for none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start_ns: u64, end_ns: Option<u64>) -> Marker {
        Marker {
            name: "req".into(),
            tid: 1,
            start_ns,
            end_ns,
            cpu_ns: end_ns.map(|e| (e - start_ns) / 2),
            depth: 0,
        }
    }

    #[test]
    fn markers_sit_at_the_cpu_time_used_before_them() {
        // Samples at 10, 20, 30 ms, each standing for 1 ms of CPU.
        let cum = [
            (10_000_000, 1_000_000),
            (20_000_000, 2_000_000),
            (30_000_000, 3_000_000),
        ];
        let placed = place(
            vec![m(5_000_000, None), m(25_000_000, Some(26_000_000))],
            &cum,
            false,
        );
        assert_eq!(placed[0].timeline_ns, 0);
        assert_eq!(placed[1].timeline_ns, 2_000_000);
        let wall = place(vec![m(25_000_000, None)], &cum, true);
        assert_eq!(wall[0].timeline_ns, 25_000_000);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let infos: Vec<MarkerInfo> = (1..=100u64)
            .map(|i| MarkerInfo {
                marker: m(0, Some(i * 1_000_000)),
                timeline_ns: 0,
            })
            .chain(std::iter::once(MarkerInfo {
                marker: m(0, None),
                timeline_ns: 0,
            }))
            .collect();
        let s = stats(&summarize(7, &infos));
        assert_eq!(s.len(), 1);
        let r = &s[0];
        assert_eq!((r.count, r.open), (100, 1));
        assert!((r.p50_s - 0.050).abs() < 1e-9, "{r:?}");
        assert!((r.p90_s - 0.090).abs() < 1e-9);
        assert!((r.p99_s - 0.099).abs() < 1e-9);
        assert!((r.max_s - 0.100).abs() < 1e-9);
        assert!((r.total_s - 5.050).abs() < 1e-9);
    }
}

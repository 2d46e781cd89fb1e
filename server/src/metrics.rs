//! Counters for `GET /metrics`, in the Prometheus text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::store::StoreCounts;

/// Upper bounds (seconds) of the request duration histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) -> requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> durations.
    durations: Mutex<BTreeMap<String, Histogram>>,
    pub uploads: AtomicU64,
    pub downloads: AtomicU64,
    /// Profiles removed by --keep-days / --max-profiles.
    pub retention_deletes: AtomicU64,
    /// Blobs without a record removed by the sweeper.
    pub orphans_swept: AtomicU64,
    /// Background maintenance runs that failed (storage errors).
    pub maintenance_errors: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub symbol_uploads: AtomicU64,
    pub analyses: AtomicU64,
    analysis_seconds: Mutex<f64>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        {
            let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            *r.entry((route.to_string(), method.to_string(), status))
                .or_default() += 1;
        }
        let mut d = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let h = d.entry(route.to_string()).or_default();
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn analysis(&self, seconds: f64) {
        self.analyses.fetch_add(1, Ordering::Relaxed);
        *self
            .analysis_seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += seconds;
    }

    /// The exposition text.
    /// The exposition text. `backends`: the database and blob store kinds (`sqlite` or
    /// `postgres`, `file` or `s3`).
    pub fn render(
        &self,
        store: &StoreCounts,
        backends: (&str, &str),
        cached: usize,
        hits: u64,
        misses: u64,
    ) -> String {
        let mut o = String::new();
        let metric = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        metric(
            &mut o,
            "prof_storage_info",
            "gauge",
            "The storage backends this replica uses.",
        );
        let _ = writeln!(
            o,
            "prof_storage_info{{db=\"{}\",store=\"{}\"}} 1",
            esc(backends.0),
            esc(backends.1)
        );
        metric(
            &mut o,
            "prof_http_requests_total",
            "counter",
            "HTTP requests by route pattern, method and status.",
        );
        for ((route, method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "prof_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        metric(
            &mut o,
            "prof_http_request_duration_seconds",
            "histogram",
            "Time to produce a response, by route pattern.",
        );
        for (route, h) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let r = esc(route);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "prof_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "prof_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}\n\
                 prof_http_request_duration_seconds_sum{{route=\"{r}\"}} {}\n\
                 prof_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let counters = [
            (
                "prof_uploads_total",
                "Profiles stored.",
                self.uploads.load(Ordering::Relaxed),
            ),
            (
                "prof_upload_bytes_total",
                "Bytes of profiles stored.",
                self.upload_bytes.load(Ordering::Relaxed),
            ),
            (
                "prof_downloads_total",
                "Profiles downloaded (as stored or exported).",
                self.downloads.load(Ordering::Relaxed),
            ),
            (
                "prof_retention_deletes_total",
                "Profiles deleted by --keep-days / --max-profiles.",
                self.retention_deletes.load(Ordering::Relaxed),
            ),
            (
                "prof_orphan_blobs_swept_total",
                "Blobs no record named, removed by the sweeper.",
                self.orphans_swept.load(Ordering::Relaxed),
            ),
            (
                "prof_maintenance_errors_total",
                "Retention or sweeper runs that failed.",
                self.maintenance_errors.load(Ordering::Relaxed),
            ),
            (
                "prof_symbol_uploads_total",
                "Symbol files stored.",
                self.symbol_uploads.load(Ordering::Relaxed),
            ),
            (
                "prof_analyses_total",
                "Profiles symbolized and indexed.",
                self.analyses.load(Ordering::Relaxed),
            ),
            (
                "prof_cache_hits_total",
                "Requests served from an already prepared profile.",
                hits,
            ),
            (
                "prof_cache_misses_total",
                "Requests that prepared a profile.",
                misses,
            ),
        ];
        for (name, help, v) in counters {
            metric(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        metric(
            &mut o,
            "prof_analysis_seconds_total",
            "counter",
            "Time spent symbolizing and indexing profiles.",
        );
        let _ = writeln!(
            o,
            "prof_analysis_seconds_total {}",
            *self
                .analysis_seconds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        );
        let gauges = [
            ("prof_profiles", "Profiles stored.", store.profiles),
            (
                "prof_profile_bytes",
                "Bytes of stored profiles.",
                store.profile_bytes,
            ),
            ("prof_symbol_files", "Symbol files stored.", store.symbols),
            (
                "prof_symbol_bytes",
                "Bytes of stored symbol files.",
                store.symbol_bytes,
            ),
            (
                "prof_cached_profiles",
                "Prepared profiles held in memory.",
                cached as u64,
            ),
        ];
        for (name, help, v) in gauges {
            metric(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
        o
    }
}

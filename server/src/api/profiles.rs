//! `/api/v1/profiles...`: upload (prof logs, and other tools' formats imported into one),
//! list, summary, tree, timeline, functions, download (the stored log, or an export
//! rendered from the prepared profile), delete.

use std::sync::atomic::Ordering;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prof_analysis::export::{ExportFormat, ExportOptions};
use prof_analysis::import::{detect, import_bytes_limited, ImportError, InputFormat};
use prof_analysis::tree::{Function, TreeOptions, TIERS};
use prof_format::Profile;
use serde::Serialize;

use super::{
    answer, base_url, blocking, check_id, json, json_bytes, load, new_id, query_params, read_body,
    record, record_json, tier_names, CanRead, CanWrite, State,
};
use crate::error::ApiError;
use crate::params::Params;
use crate::prepare::build_ids;
use crate::store::{ListQuery, ProfileRecord, StoreError};
use crate::AppState;

/// Decodes uploaded bytes: a prof log as is, another tool's profile imported (gzip input
/// expanded to at most `max` bytes: a gzip bomb is refused with 413, never expanded).
/// Returns the profile and the bytes to store (a prof log either way).
pub fn decode_upload(bytes: Vec<u8>, max: u64) -> Result<(Profile, Vec<u8>), ApiError> {
    match detect(&bytes) {
        Some(InputFormat::Prof) => {
            let p = prof_format::read_profile(&bytes).map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((p, bytes))
        }
        _ => match import_bytes_limited(&bytes, max) {
            Ok(imported) => Ok((imported.profile, imported.log)),
            Err(ImportError::GzipTooLarge { limit }) => Err(ApiError::TooLarge(format!(
                "the gzipped body expands to more than {limit} bytes, the most this server accepts (see --max-upload-mb)"
            ))),
            Err(e) => Err(ApiError::bad(e.to_string())),
        },
    }
}

/// A storage failure while writing: a full disk is 507 (the request may succeed once
/// space is freed), anything else 500.
pub(crate) fn store_write_error(e: StoreError) -> ApiError {
    if e.is_full() {
        ApiError::InsufficientStorage(format!("the server's storage is full: {e}"))
    } else {
        e.into()
    }
}

/// What a profile says about itself, for its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The first process's command line (its executable when argv is empty).
    pub command: String,
    pub processes: u32,
    /// Distinct (pid, tid) pairs.
    pub threads: u32,
    pub samples: u64,
    pub weight: u64,
    /// From the first process's start to the last one's end.
    pub duration_s: f64,
    pub start_unix_ns: u64,
    /// `cpu` or `wall`.
    pub mode: String,
}

pub fn describe(p: &Profile) -> Description {
    let first = p.processes.first();
    let command = first
        .map(|p| {
            if p.info.argv.is_empty() {
                p.info.exe.clone()
            } else {
                p.info.argv.join(" ")
            }
        })
        .unwrap_or_default();
    let mut threads = std::collections::HashSet::new();
    let (mut samples, mut weight) = (0u64, 0u64);
    let mut first_start = u64::MAX;
    let mut last_end = 0u64;
    for pr in &p.processes {
        for &(tid, _) in &pr.threads {
            threads.insert((pr.info.pid, tid));
        }
        let mut last = 0u64;
        for s in &pr.samples {
            threads.insert((pr.info.pid, s.tid));
            samples += 1;
            weight += s.weight as u64;
            last = last.max(s.time_ns);
        }
        let dur = pr.end.map(|e| e.duration_ns).unwrap_or(last);
        first_start = first_start.min(pr.info.start_unix_ns);
        last_end = last_end.max(pr.info.start_unix_ns.saturating_add(dur));
    }
    let duration_s = last_end.saturating_sub(first_start.min(last_end)) as f64 / 1e9;
    let mode = first
        .map(|p| p.info.mode.name())
        .unwrap_or("cpu")
        .to_string();
    Description {
        command,
        processes: p.processes.len() as u32,
        threads: threads.len() as u32,
        samples,
        weight,
        duration_s,
        start_unix_ns: if first_start == u64::MAX {
            0
        } else {
            first_start
        },
        mode,
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub async fn upload(
    _: CanWrite,
    req: HttpRequest,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["name", "tag"])?;
    let name = params.string("name", 200)?;
    let mut tags: Vec<String> = Vec::new();
    for t in params.all("tag") {
        if t.chars().count() > 64 {
            return Err(ApiError::bad(format!(
                "tag {t:?} is longer than 64 characters"
            )));
        }
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    if tags.len() > 32 {
        return Err(ApiError::bad("at most 32 tags"));
    }
    let bytes = read_body(&req, payload, st.config.max_upload_bytes).await?;
    let id = new_id()?;
    let st2 = st.clone();
    let id2 = id.clone();
    let size = bytes.len() as u64;
    let rec = blocking(move || store_profile(&st2, id2, false, name, tags, bytes)).await?;
    let id = rec.id.clone();
    after_store(&st, &id, size);

    let base = base_url(&req, &st);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/profiles/{id}")))
        .json(serde_json::json!({
            "id": id,
            "url": format!("{base}/p/{id}"),
            "name": rec.name,
            "size": size,
            "truncated": rec.truncated,
        })))
}

/// Decodes an uploaded profile (other tools' formats are imported into a prof log, which
/// is what gets stored), describes it and stores it under `id`. Runs on a blocking thread.
pub(crate) fn store_profile(
    st: &AppState,
    id: String,
    keep_id: bool,
    name: Option<String>,
    tags: Vec<String>,
    bytes: Vec<u8>,
) -> Result<ProfileRecord, ApiError> {
    let (profile, bytes) = decode_upload(bytes, st.config.max_upload_bytes)?;
    if profile.processes.is_empty() {
        return Err(ApiError::bad(
            "the profile holds no process (nothing was recorded)",
        ));
    }
    let d = describe(&profile);
    let mut rec = ProfileRecord {
        id,
        name: name.unwrap_or_else(|| clip(&d.command, 200)),
        tags,
        created_unix_ms: crate::store::now_ms(),
        size: 0,
        blob: String::new(),
        command: d.command,
        processes: d.processes,
        threads: d.threads,
        samples: d.samples,
        weight: d.weight,
        duration_s: d.duration_s,
        start_unix_ns: d.start_unix_ns,
        mode: d.mode,
        truncated: profile.truncated,
        build_ids: build_ids(&profile),
        tiers: None,
    };
    drop(profile);
    // Ids are 64 random bits: a clash (another replica drew the same) is refused by the
    // database's key and retried with a new id, except for a vmprof runtime id, which
    // its client already knows.
    for attempt in 0.. {
        match st.storage.add_profile(rec.clone(), &bytes) {
            Ok(()) => break,
            Err(StoreError::Duplicate(_)) if !keep_id && attempt < 3 => rec.id = new_id()?,
            Err(e) => return Err(store_write_error(e)),
        }
    }
    Ok(rec)
}

/// Counts a stored upload and prepares it in the background (one at a time), so the list
/// shows its tiers and the first view is fast.
pub(crate) fn after_store(st: &State, id: &str, size: u64) {
    st.metrics.uploads.fetch_add(1, Ordering::Relaxed);
    st.metrics.upload_bytes.fetch_add(size, Ordering::Relaxed);
    let st3 = st.clone();
    let id3 = id.to_string();
    actix_web::rt::spawn(async move {
        let Ok(_permit) = st3.warmup.acquire().await else {
            return;
        };
        if let Err(e) = load(&st3, &id3).await {
            if !matches!(e, ApiError::NotFound(_)) {
                tracing::warn!(profile = %id3, error = %e, "preparing an uploaded profile failed");
            }
        }
    });
}

pub async fn list(_: CanRead, req: HttpRequest, st: State) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["limit", "offset", "name", "tag"])?;
    let q = ListQuery {
        limit: params.u64_in("limit", 1, 1000)?.unwrap_or(50) as u32,
        offset: params.u64_in("offset", 0, u32::MAX as u64)?.unwrap_or(0),
        name: params.string("name", 200)?,
        tag: params.string("tag", 64)?,
    };
    let st2 = st.clone();
    let q2 = q.clone();
    let page = blocking(move || Ok(st2.storage.meta.list_profiles(&q2)?)).await?;
    let base = base_url(&req, &st);
    json(&serde_json::json!({
        "total": page.total,
        "limit": q.limit,
        "offset": q.offset,
        "items": page.items.iter().map(|r| record_json(r, &base)).collect::<Vec<_>>(),
    }))
}

pub async fn get_profile(
    _: CanRead,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let (rec, p) = load(&st, &path).await?;
    let mut v = record_json(&rec, &base_url(&req, &st));
    v["tiers"] = serde_json::to_value(&p.tiers).unwrap_or_default();
    v["symbols_uploaded"] = serde_json::to_value(&p.uploaded_symbols).unwrap_or_default();
    v["mostly_program_code"] = p.index.mostly_program_code().into();
    v["summary"] =
        serde_json::to_value(&p.summary).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Every marker is served by /markers, in columns: the summary keeps their statistics
    // (a busy server's profile holds hundreds of thousands).
    if let Some(m) = v["summary"].get_mut("markers") {
        *m = serde_json::Value::Array(Vec::new());
    }
    v["has_markers"] = p.index.has_markers().into();
    json(&v)
}

#[derive(Serialize)]
struct FunctionColumns<'a> {
    name: Vec<&'a str>,
    module: Vec<&'a str>,
    file: Vec<Option<&'a str>>,
    line: Vec<Option<u32>>,
}

impl<'a> FunctionColumns<'a> {
    fn new<I: IntoIterator<Item = &'a Function>>(fs: I) -> Self {
        let mut c = FunctionColumns {
            name: Vec::new(),
            module: Vec::new(),
            file: Vec::new(),
            line: Vec::new(),
        };
        for f in fs {
            c.name.push(&f.name);
            c.module.push(&f.module);
            c.file.push(f.file.as_deref());
            c.line.push(f.line);
        }
        c
    }
}

fn query_error(e: prof_analysis::tree::QueryError) -> ApiError {
    ApiError::bad(e.to_string())
}

pub async fn tree(
    _: CanRead,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let params = query_params(&req, &["invert", "max_nodes", "search"])?;
    let filter = params.filter()?;
    let opts = TreeOptions {
        invert: params.bool("invert")?,
        max_nodes: params.u64_in("max_nodes", 2, 1_000_000)?.unwrap_or(5000) as usize,
    };
    let search = match params.string("search", 1000)? {
        None => None,
        Some(s) => Some(
            regex::RegexBuilder::new(&s)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    ApiError::bad(format!(
                        "parameter \"search\" is not a valid regular expression: {e}"
                    ))
                })?,
        ),
    };
    let (_, p) = load(&st, &path).await?;
    answer(&req, p, move |p| {
        let pred = search.map(|re| move |f: &Function| re.is_match(&f.name));
        let pred_ref = pred.as_ref().map(|f| f as &dyn Fn(&Function) -> bool);
        let t = p
            .index
            .tree(&filter, &opts, pred_ref)
            .map_err(query_error)?;
        let axis = filter.axis.unwrap_or(p.index.default_axis());
        #[derive(Serialize)]
        struct Nodes<'a> {
            parent: &'a [i64],
            func: &'a [u32],
            #[serde(rename = "self")]
            self_: &'a [u64],
            total: &'a [u64],
            tiers: &'a [u64],
        }
        #[derive(Serialize)]
        struct Out<'a> {
            axis: &'static str,
            total: u64,
            matched: Option<u64>,
            folded_nodes: u64,
            tiers: [&'static str; TIERS],
            functions: FunctionColumns<'a>,
            nodes: Nodes<'a>,
        }
        let out = Out {
            axis: axis.name(),
            total: t.total,
            matched: pred.is_some().then_some(t.matched),
            folded_nodes: t.folded_nodes,
            tiers: tier_names(),
            functions: FunctionColumns::new(&t.functions),
            nodes: Nodes {
                parent: &t.parent,
                func: &t.func,
                self_: &t.self_,
                total: &t.total_weight,
                tiers: &t.tiers,
            },
        };
        json_bytes(&out)
    })
    .await
}

pub async fn timeline(
    _: CanRead,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let params = query_params(&req, &["buckets"])?;
    let filter = params.filter()?;
    let buckets = params.u64_in("buckets", 1, 10_000)?.unwrap_or(200) as usize;
    let (_, p) = load(&st, &path).await?;
    answer(&req, p, move |p| {
        let t = p.index.timeline(&filter, buckets).map_err(query_error)?;
        let v = serde_json::json!({
            "axis": t.axis.name(),
            "start_s": t.start_s,
            "end_s": t.end_s,
            "bucket_s": t.bucket_s,
            "buckets": t.buckets,
            "tiers": tier_names(),
            "counts": t.counts,
        });
        json_bytes(&v)
    })
    .await
}

pub async fn functions(
    _: CanRead,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let params = query_params(&req, &["limit", "sort"])?;
    let filter = params.filter()?;
    let limit = params.u64_in("limit", 1, 1_000_000)?.unwrap_or(1000) as usize;
    let by_total = match params.get("sort")? {
        None | Some("self") => false,
        Some("total") => true,
        Some(s) => {
            return Err(ApiError::bad(format!(
                "parameter \"sort\" must be self or total, not {s:?}"
            )))
        }
    };
    let (_, p) = load(&st, &path).await?;
    answer(&req, p, move |p| {
        let mut rows = p.index.functions(&filter).map_err(query_error)?;
        if by_total {
            rows.sort_by(|a, b| {
                b.total
                    .cmp(&a.total)
                    .then(b.self_.cmp(&a.self_))
                    .then_with(|| a.function.name.cmp(&b.function.name))
            });
        }
        let count = rows.len();
        let total: u64 = rows.iter().map(|r| r.self_).sum();
        rows.truncate(limit);
        #[derive(Serialize)]
        struct Out<'a> {
            total: u64,
            count: usize,
            tiers: [&'static str; TIERS],
            functions: FunctionColumns<'a>,
            #[serde(rename = "self")]
            self_: Vec<u64>,
            total_weight: Vec<u64>,
            self_tiers: Vec<u64>,
            total_tiers: Vec<u64>,
        }
        let out = Out {
            total,
            count,
            tiers: tier_names(),
            functions: FunctionColumns::new(rows.iter().map(|r| &r.function)),
            self_: rows.iter().map(|r| r.self_).collect(),
            total_weight: rows.iter().map(|r| r.total).collect(),
            self_tiers: rows.iter().flat_map(|r| r.self_tiers).collect(),
            total_tiers: rows.iter().flat_map(|r| r.total_tiers).collect(),
        };
        json_bytes(&out)
    })
    .await
}

pub async fn download(
    _: CanRead,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string(), &["format"])?;
    if let Some(format) = params.string("format", 32)? {
        return export(&st, &path, &format).await;
    }
    let rec = record(&st, &path).await?;
    let st2 = st.clone();
    let rec2 = rec.clone();
    let bytes = blocking(move || Ok(st2.storage.profile_bytes(&rec2)?)).await?;
    st.metrics.downloads.fetch_add(1, Ordering::Relaxed);
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"prof-{}.data\"", rec.id),
        ))
        .body(bytes))
}

pub async fn delete(
    _: CanWrite,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let id = path.into_inner();
    check_id(&id)?;
    let st2 = st.clone();
    let id2 = id.clone();
    let gone =
        blocking(move || st2.storage.delete_profile(&id2).map_err(store_write_error)).await?;
    st.cache.remove(&id);
    match gone {
        Some(_) => Ok(HttpResponse::NoContent().finish()),
        None => Err(ApiError::not_found(format!("no profile with id {id:?}"))),
    }
}

/// `GET .../download?format=F`: rendered from the prepared (cached) profile with the same
/// exporters as `prof report --format`.
async fn export(st: &State, id: &str, format: &str) -> Result<HttpResponse, ApiError> {
    let Some(fmt) = ExportFormat::from_name(format) else {
        let names: Vec<&str> = ExportFormat::ALL.iter().map(|f| f.name()).collect();
        return Err(ApiError::bad(format!(
            "unknown format {format:?}: expected one of {} (or no format for the profile itself)",
            names.join(", ")
        )));
    };
    let (rec, p) = load(st, id).await?;
    let title = rec.name.clone();
    let body = blocking(move || {
        let opts = ExportOptions { title: Some(title) };
        prof_analysis::export::export(fmt, &p.profile, &p.analysis, &opts)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    st.metrics.downloads.fetch_add(1, Ordering::Relaxed);
    Ok(HttpResponse::Ok()
        .content_type(fmt.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"prof-{}{}\"",
                rec.id,
                fmt.extension()
            ),
        ))
        .body(body))
}

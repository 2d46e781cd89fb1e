//! The HTTP handlers of `/api/v1`, `/healthz` and `/metrics` (documented in docs/API.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use prof_analysis::tree::{Function, TreeOptions, TIERS};
use prof_analysis::Tier;
use prof_format::Profile;
use serde::Serialize;

use crate::error::ApiError;
use crate::params::{Params, FILTER};
use crate::prepare::{build_ids, prepare, Prepared};
use crate::store::{ListQuery, ProfileRecord};
use crate::AppState;

pub type State = web::Data<AppState>;

/// Tier names in the order of every per-tier array.
pub fn tier_names() -> [&'static str; TIERS] {
    Tier::ALL.map(|t| t.name())
}

/// Weak ETag of a query's answer: the prepared profile (re-prepared when new symbols
/// arrive) and the request's path and query.
fn etag(p: &Prepared, req: &HttpRequest) -> String {
    format!("W/\"{:016x}-{:016x}\"", p.nonce, answer_key(req))
}

/// Hash of the request's path and query: the key of [`Prepared::answers`].
fn answer_key(req: &HttpRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.path().hash(&mut h);
    req.query_string().hash(&mut h);
    h.finish()
}

/// The answer to a query route: 304 for the client's copy, else a remembered answer,
/// else `compute` (on a blocking thread), remembered.
async fn answer<F>(
    req: &HttpRequest,
    p: Arc<Prepared>,
    compute: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(&Prepared) -> Result<Vec<u8>, ApiError> + Send + 'static,
{
    let tag = etag(&p, req);
    if let Some(r) = not_modified(req, &tag) {
        return Ok(r);
    }
    let key = answer_key(req);
    let body = match p.answers.get(key) {
        Some(b) => b,
        None => {
            let p2 = p.clone();
            let b = web::Bytes::from(blocking(move || compute(&p2)).await?);
            p.answers.put(key, b.clone());
            b
        }
    };
    Ok(json_body(body, tag))
}

/// 304 when the client already has this answer (`If-None-Match`).
fn not_modified(req: &HttpRequest, tag: &str) -> Option<HttpResponse> {
    let inm = req.headers().get(header::IF_NONE_MATCH)?.to_str().ok()?;
    inm.split(',')
        .any(|t| t.trim() == tag || t.trim() == "*")
        .then(|| {
            HttpResponse::NotModified()
                .insert_header((header::ETAG, tag.to_string()))
                .finish()
        })
}

fn json_body(body: web::Bytes, tag: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

// ---------------------------------------------------------------------------------------
// Authorization

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Checks the bearer token when the server has tokens and the access needs one (writes
/// always; reads with `--private`).
pub fn authorize(req: &HttpRequest, st: &AppState, access: Access) -> Result<(), ApiError> {
    let tokens = &st.config.tokens;
    if tokens.is_empty() || (access == Access::Read && !st.config.private) {
        return Ok(());
    }
    let what = match access {
        Access::Write => "uploads and deletes",
        Access::Read => "every request",
    };
    let Some(h) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(format!(
            "this server requires a token for {what}: send the header `Authorization: Bearer TOKEN`"
        )));
    };
    let h = h.to_str().unwrap_or("");
    let token = match h.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => {
            return Err(ApiError::Unauthorized(
                "malformed Authorization header: expected `Bearer TOKEN`".into(),
            ))
        }
    };
    if tokens
        .iter()
        .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the token is not valid for this server".into(),
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Reads a request body of at most `max` bytes. A larger body is drained (up to a bound,
/// so the client gets to read the 413 rather than a reset connection) and refused.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = |n: u64| {
        ApiError::TooLarge(format!(
            "the body ({n} bytes or more) is larger than this server accepts ({max} bytes; see --max-upload-mb)"
        ))
    };
    const DRAIN: u64 = 64 << 20;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > max.saturating_add(DRAIN) {
            return Err(too_large(n));
        }
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max) as usize);
    let mut seen = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad(format!(
                "the request body could not be read completely: {e}"
            ))
        })?;
        seen += chunk.len() as u64;
        if seen > max {
            buf = Vec::new();
            if seen > max.saturating_add(DRAIN) {
                return Err(too_large(seen));
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > max {
        return Err(too_large(seen));
    }
    Ok(buf)
}

/// `scheme://host` the client used (or `--public-url`).
pub fn base_url(req: &HttpRequest, st: &AppState) -> String {
    if let Some(u) = &st.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let ci = req.connection_info();
    format!("{}://{}", ci.scheme(), ci.host())
}

/// Profile ids are 16 lower-case hex digits; anything else names no profile.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no profile with id {id:?}")))
    }
}

pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| ApiError::Internal(format!("no randomness for an id: {e}")))?;
    Ok(prof_analysis::hex(&b))
}

/// RFC 3339 UTC time of a Unix time in ms.
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    web::block(f).await?
}

/// The stored record of profile `id` (404 if there is none).
pub async fn record(st: &State, id: &str) -> Result<ProfileRecord, ApiError> {
    check_id(id)?;
    let st2 = st.clone();
    let id2 = id.to_string();
    blocking(move || Ok(st2.storage.meta.profile(&id2)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no profile with id {id:?}")))
}

/// The record and the prepared (symbolized, indexed) profile `id`.
pub async fn load(st: &State, id: &str) -> Result<(ProfileRecord, Arc<Prepared>), ApiError> {
    let rec = record(st, id).await?;
    let rec2 = rec.clone();
    let st2 = st.clone();
    let p = st
        .cache
        .get(id, move |gen| {
            let st = st2.clone();
            let rec = rec2.clone();
            async move {
                let st3 = st.clone();
                let p = blocking(move || prepare(&st3.storage, &rec, gen)).await?;
                st.metrics.analysis(p.seconds);
                Ok(p)
            }
        })
        .await?;
    Ok((rec, p))
}

fn json<T: Serialize>(v: &T) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// The list / metadata view of a profile record.
pub fn record_json(rec: &ProfileRecord, base: &str) -> serde_json::Value {
    serde_json::json!({
        "id": rec.id,
        "name": rec.name,
        "tags": rec.tags,
        "created": iso8601(rec.created_unix_ms),
        "created_unix_ms": rec.created_unix_ms,
        "size": rec.size,
        "command": rec.command,
        "processes": rec.processes,
        "threads": rec.threads,
        "samples": rec.samples,
        "weight": rec.weight,
        "duration_s": rec.duration_s,
        "start_unix_ns": rec.start_unix_ns,
        "mode": rec.mode,
        "truncated": rec.truncated,
        "build_ids": rec.build_ids,
        "tiers": rec.tiers,
        "url": format!("{base}/p/{}", rec.id),
    })
}

// ---------------------------------------------------------------------------------------
// Profiles

/// What a profile says about itself, for its record.
fn describe(p: &Profile) -> (String, u32, u32, u64, u64, f64, u64, String) {
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
    (
        command,
        p.processes.len() as u32,
        threads.len() as u32,
        samples,
        weight,
        duration_s,
        if first_start == u64::MAX {
            0
        } else {
            first_start
        },
        mode,
    )
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Write)?;
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
    let rec = blocking(move || store_profile(&st2, id2, name, tags, bytes)).await?;
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
    name: Option<String>,
    tags: Vec<String>,
    bytes: Vec<u8>,
) -> Result<ProfileRecord, ApiError> {
    let (profile, bytes) = crate::exports::decode_upload(bytes)?;
    if profile.processes.is_empty() {
        return Err(ApiError::bad(
            "the profile holds no process (nothing was recorded)",
        ));
    }
    let (command, processes, threads, samples, weight, duration_s, start, mode) =
        describe(&profile);
    let rec = ProfileRecord {
        id,
        name: name.unwrap_or_else(|| clip(&command, 200)),
        tags,
        created_unix_ms: crate::store::now_ms(),
        size: 0,
        blob: String::new(),
        command,
        processes,
        threads,
        samples,
        weight,
        duration_s,
        start_unix_ns: start,
        mode,
        truncated: profile.truncated,
        build_ids: build_ids(&profile),
        tiers: None,
    };
    drop(profile);
    st.storage.add_profile(rec.clone(), &bytes)?;
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
                eprintln!("prof-server: preparing profile {id3}: {e}");
            }
        }
    });
}

pub async fn list(req: HttpRequest, st: State) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let params = Params::parse(req.query_string(), &["format"])?;
    let rec = record(&st, &path).await?;
    if let Some(format) = params.string("format", 32)? {
        return crate::exports::download(&st, rec, &format).await;
    }
    let st2 = st.clone();
    let rec2 = rec.clone();
    let bytes = blocking(move || Ok(st2.storage.profile_bytes(&rec2)?)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"prof-{}.data\"", rec.id),
        ))
        .body(bytes))
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Write)?;
    Params::parse(req.query_string(), &[])?;
    let id = path.into_inner();
    check_id(&id)?;
    let st2 = st.clone();
    let id2 = id.clone();
    let gone = blocking(move || Ok(st2.storage.delete_profile(&id2)?)).await?;
    st.cache.remove(&id);
    match gone {
        Some(_) => Ok(HttpResponse::NoContent().finish()),
        None => Err(ApiError::not_found(format!("no profile with id {id:?}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Symbols

/// Build ids in URLs: lower- or upper-case hex, 2 to 128 digits, even length.
fn check_build_id(b: &str) -> Result<String, ApiError> {
    let ok = (2..=128).contains(&b.len())
        && b.len().is_multiple_of(2)
        && b.bytes().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(b.to_ascii_lowercase())
    } else {
        Err(ApiError::bad(format!(
            "{b:?} is not a build id (an even number of hex digits, at most 128)"
        )))
    }
}

pub async fn symbol_head(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let id = check_build_id(&path)?;
    let st2 = st.clone();
    let id2 = id.clone();
    let rec = blocking(move || Ok(st2.storage.meta.symbol(&id2)?)).await?;
    match rec {
        Some(r) => Ok(HttpResponse::Ok()
            .insert_header(("X-Prof-Symbol-Size", r.size.to_string()))
            .finish()),
        None => Err(ApiError::not_found(format!("no symbols for build id {id}"))),
    }
}

pub async fn symbol_put(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Write)?;
    Params::parse(req.query_string(), &[])?;
    let id = check_build_id(&path)?;
    let bytes = read_body(&req, payload, st.config.max_upload_bytes).await?;
    let size = bytes.len() as u64;
    let st2 = st.clone();
    let id2 = id.clone();
    let replaced = blocking(move || {
        use object::Object;
        let obj = object::File::parse(&*bytes)
            .map_err(|e| ApiError::bad(format!("not an ELF file: {e}")))?;
        let found = obj
            .build_id()
            .ok()
            .flatten()
            .map(prof_analysis::hex)
            .ok_or_else(|| ApiError::bad("the file has no GNU build id note"))?;
        if found != id2 {
            return Err(ApiError::bad(format!(
                "the file's build id is {found}, not {id2}"
            )));
        }
        drop(obj);
        Ok(st2.storage.put_symbol(&id2, &bytes)?)
    })
    .await?;
    st.cache.symbols_uploaded(&id);
    st.metrics.symbol_uploads.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({ "build_id": id, "size": size });
    Ok(if replaced {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    })
}

// ---------------------------------------------------------------------------------------
// Operations

pub async fn healthz(st: State) -> Result<HttpResponse, ApiError> {
    let st2 = st.clone();
    match blocking(move || Ok(st2.storage.meta.ping()?)).await {
        Ok(()) => json(&serde_json::json!({ "status": "ok" })),
        Err(e) => Err(ApiError::Unavailable(format!(
            "storage is not answering: {e}"
        ))),
    }
}

pub async fn metrics(req: HttpRequest, st: State) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let st2 = st.clone();
    let counts = blocking(move || Ok(st2.storage.meta.counts()?)).await?;
    let text = st.metrics.render(
        &counts,
        st.cache.len(),
        st.cache.hits.load(Ordering::Relaxed),
        st.cache.misses.load(Ordering::Relaxed),
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}

pub async fn not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.path()
    )))
}

/// The query parameters of a tree/timeline/functions request: the shared filter ones plus
/// the route's own `extra` (any other name is a 400).
fn query_params(req: &HttpRequest, extra: &[&'static str]) -> Result<Params, ApiError> {
    let mut allowed = FILTER.to_vec();
    allowed.extend_from_slice(extra);
    Params::parse(req.query_string(), &allowed)
}

/// A JSON answer body.
fn json_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_767_225_599_000), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn ids() {
        assert!(check_id("0123456789abcdef").is_ok());
        assert!(check_id("0123456789ABCDEF").is_err());
        assert!(check_id("../../etc/passwd").is_err());
        assert_eq!(check_build_id("AB12").unwrap(), "ab12");
        assert!(check_build_id("abc").is_err());
        assert!(check_build_id("zz").is_err());
        assert_eq!(new_id().unwrap().len(), 16);
    }
}

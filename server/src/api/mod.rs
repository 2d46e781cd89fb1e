//! The HTTP handlers (documented in docs/API.md), one module per resource, and what they
//! share: authorization extractors ([`auth`]), bodies, ids, the prepared-profile lookup
//! and cached query answers.
//!
//! - [`profiles`] — `/api/v1/profiles...` (upload, list, summary, tree, timeline,
//!   functions, download and exports, delete);
//! - [`symbols`] — `/api/v1/symbols/BUILD_ID`;
//! - [`vmprof`] — vmprof's own client's upload API (`/api/runtime/...`);
//! - [`ops`] — `/healthz`, `/readyz`, `/metrics` and the JSON 404/405 answers.

pub mod auth;
pub mod ops;
pub mod profiles;
pub mod symbols;
pub mod vmprof;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use prof_analysis::tree::TIERS;
use prof_analysis::Tier;
use serde::Serialize;

use crate::error::ApiError;
use crate::params::{Params, FILTER};
use crate::prepare::{prepare, Prepared};
use crate::store::ProfileRecord;
use crate::AppState;

pub use auth::{authorize, Access, CanRead, CanWrite};
pub use ops::{healthz, metrics, not_allowed, not_found, readyz};
pub use profiles::{delete, download, functions, get_profile, list, timeline, tree, upload};
pub use symbols::{symbol_head, symbol_put};

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
pub(crate) async fn answer<F>(
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

/// RFC 3339 UTC time (whole seconds) of a Unix time in ms.
pub fn iso8601(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
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

/// The record and the prepared (symbolized, indexed) profile `id`. The record is read
/// from the database on every call (a profile deleted through another replica is gone
/// here too), with the symbol sequence of its build ids: a prepared copy older than a
/// symbol upload (through any replica) is prepared again.
pub async fn load(st: &State, id: &str) -> Result<(ProfileRecord, Arc<Prepared>), ApiError> {
    check_id(id)?;
    let st2 = st.clone();
    let id2 = id.to_string();
    let (rec, seq) = blocking(move || {
        let Some(rec) = st2.storage.meta.profile(&id2)? else {
            return Err(ApiError::not_found(format!("no profile with id {id2:?}")));
        };
        let seq = st2.storage.meta.symbol_seq(&rec.build_ids)?;
        Ok((rec, seq))
    })
    .await?;
    let rec2 = rec.clone();
    let st2 = st.clone();
    let p = st
        .cache
        .get(id, seq, move || {
            let st = st2.clone();
            let rec = rec2.clone();
            async move {
                let st3 = st.clone();
                let p = blocking(move || prepare(&st3, &rec, seq)).await?;
                st.metrics.analysis(p.seconds);
                Ok(p)
            }
        })
        .await?;
    Ok((rec, p))
}

pub(crate) fn json<T: Serialize>(v: &T) -> Result<HttpResponse, ApiError> {
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

/// The query parameters of a tree/timeline/functions request: the shared filter ones plus
/// the route's own `extra` (any other name is a 400).
pub(crate) fn query_params(req: &HttpRequest, extra: &[&'static str]) -> Result<Params, ApiError> {
    let mut allowed = FILTER.to_vec();
    allowed.extend_from_slice(extra);
    Params::parse(req.query_string(), &allowed)
}

/// A JSON answer body.
pub(crate) fn json_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
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
    fn dates_before_the_epoch_and_far_ahead() {
        assert_eq!(iso8601(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(iso8601(4_102_444_800_000), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn ids() {
        assert!(check_id("0123456789abcdef").is_ok());
        assert!(check_id("0123456789ABCDEF").is_err());
        assert!(check_id("../../etc/passwd").is_err());
        assert_eq!(new_id().unwrap().len(), 16);
    }
}

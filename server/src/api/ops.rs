//! `/healthz`, `/readyz`, `/metrics`, and the JSON answers for unknown routes and methods.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse};

use super::{blocking, json, CanRead, State};
use crate::error::ApiError;

/// What one storage check found, for the health answers.
fn outcome(r: &Result<(), crate::store::StoreError>) -> serde_json::Value {
    match r {
        Ok(()) => serde_json::json!("ok"),
        Err(e) => serde_json::json!(e.to_string()),
    }
}

/// Runs the database and blob store checks (`write`: small real writes, which a
/// read-only, missing or full disk fails) and answers 200 or 503 with both outcomes.
async fn checks(st: &State, write: bool) -> Result<HttpResponse, ApiError> {
    let st2 = st.clone();
    let (db, store) = blocking(move || {
        let s = &st2.storage;
        let db = if write {
            s.meta.check_writable()
        } else {
            s.meta.ping()
        };
        Ok((db, s.blobs.check(write)))
    })
    .await?;
    let ok = db.is_ok() && store.is_ok();
    let mut body = serde_json::json!({
        "status": if ok { "ok" } else { "failing" },
        "database": outcome(&db),
        "store": outcome(&store),
    });
    if ok {
        return json(&body);
    }
    let why: Vec<String> = [("database", &db), ("blob store", &store)]
        .into_iter()
        .filter_map(|(what, r)| r.as_ref().err().map(|e| format!("{what}: {e}")))
        .collect();
    body["error"] = serde_json::json!(why.join("; "));
    Ok(HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body))
}

/// `GET /healthz`: the server can store uploads (database and blob store accept a write).
pub async fn healthz(st: State) -> Result<HttpResponse, ApiError> {
    checks(&st, true).await
}

/// `GET /readyz`: the server can serve reads (database and blob store answer); for load
/// balancers deciding where to send traffic.
pub async fn readyz(st: State) -> Result<HttpResponse, ApiError> {
    checks(&st, false).await
}

pub async fn metrics(_: CanRead, st: State) -> Result<HttpResponse, ApiError> {
    let st2 = st.clone();
    let counts = blocking(move || Ok(st2.storage.meta.counts()?)).await?;
    let text = st.metrics.render(
        &counts,
        (st.storage.meta.kind(), st.storage.blobs.kind()),
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

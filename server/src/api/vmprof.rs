//! vmprof's own client's upload API: `python -m vmprof --web --web-url URL script.py`
//!   (vmprof 0.6.0's `vmshare/service.py`) calls `POST /api/runtime/new` with JSON
//!   `{"argv", "VM"}`, `POST /api/runtime/upload/cpu/{rid}/add` with the raw log, then
//!   `POST /api/runtime/{rid}/freeze/`, and prints `URL/#/{rid}`. The runtime id is the
//!   id the profile is stored under, so `/p/{rid}` shows it. Its `AUTHORIZATION: Token
//!   KEY` header is accepted (see [`super::auth`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::profiles::{after_store, store_profile};
use super::{base_url, blocking, check_id, new_id, read_body, CanWrite, State};
use crate::error::ApiError;

// ---------------------------------------------------------------------------------------
// vmprof's client

/// A runtime announced by `POST /api/runtime/new`, waiting for its log.
struct Runtime {
    argv: String,
    vm: String,
    created: Instant,
}

/// Runtimes expire after this long without a log.
const RUNTIME_TTL: Duration = Duration::from_secs(3600);
/// At most this many runtimes wait at once.
const MAX_RUNTIMES: usize = 1024;

fn runtimes() -> &'static Mutex<HashMap<String, Runtime>> {
    static R: OnceLock<Mutex<HashMap<String, Runtime>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `POST /api/runtime/new` with `{"argv": "...", "VM": "..."}`.
pub async fn runtime_new(
    _: CanWrite,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, 64 * 1024).await?;
    let meta: serde_json::Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("expected JSON {{\"argv\", \"VM\"}}: {e}")))?
    };
    let text = |k: &str| {
        let s = match &meta[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        };
        s.chars().take(1000).collect::<String>()
    };
    let rid = new_id()?;
    let mut map = runtimes().lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, r| r.created.elapsed() < RUNTIME_TTL);
    if map.len() >= MAX_RUNTIMES {
        return Err(ApiError::Unavailable(
            "too many vmprof runtimes are waiting for their logs; try again later".into(),
        ));
    }
    map.insert(
        rid.clone(),
        Runtime {
            argv: text("argv"),
            vm: text("VM"),
            created: Instant::now(),
        },
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "runtime_id": rid,
    })))
}

/// `POST /api/runtime/upload/{kind}/{rid}/add`: the raw log. CPU profiles (`cpu`) are
/// imported and stored under the runtime id; JIT logs and memory profiles are accepted
/// and not kept (prof has no use for them).
pub async fn runtime_add(
    _: CanWrite,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let (kind, rid) = path.into_inner();
    check_id(&rid)?;
    let (argv, vm) = {
        let map = runtimes().lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&rid) {
            Some(r) => (r.argv.clone(), r.vm.clone()),
            None => {
                return Err(ApiError::not_found(format!(
                    "no vmprof runtime {rid:?} is waiting (create it with POST /api/runtime/new)"
                )))
            }
        }
    };
    let bytes = read_body(&req, payload, st.config.max_upload_bytes).await?;
    if kind != "cpu" {
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "status": "ignored",
            "reason": format!("prof keeps only cpu profiles, not {kind:?} uploads"),
        })));
    }
    let size = bytes.len() as u64;
    let st2 = st.clone();
    let id = rid.clone();
    let name = if argv.is_empty() { None } else { Some(argv) };
    let mut tags = vec!["vmprof".to_string()];
    if !vm.is_empty() {
        tags.push(vm.chars().take(64).collect());
    }
    let rec = blocking(move || store_profile(&st2, id, true, name, tags, bytes)).await?;
    after_store(&st, &rid, size);
    let base = base_url(&req, &st);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "id": rec.id,
        "url": format!("{base}/p/{}", rec.id),
    })))
}

/// `POST /api/runtime/{rid}/freeze/`: the runtime is complete.
pub async fn runtime_freeze(
    _: CanWrite,
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    let rid = path.into_inner();
    check_id(&rid)?;
    let known = runtimes()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&rid)
        .is_some();
    if !known {
        return Err(ApiError::not_found(format!(
            "no vmprof runtime {rid:?} is waiting"
        )));
    }
    let base = base_url(&req, &st);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "url": format!("{base}/p/{rid}"),
    })))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(super::not_allowed));
    cfg.service(resource("/api/runtime/new").route(web::post().to(runtime_new)))
        .service(
            resource("/api/runtime/upload/{kind}/{rid}/add").route(web::post().to(runtime_add)),
        )
        .service(resource("/api/runtime/{rid}/freeze/").route(web::post().to(runtime_freeze)))
        .service(resource("/api/runtime/{rid}/freeze").route(web::post().to(runtime_freeze)));
}

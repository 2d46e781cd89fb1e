//! Other tools' formats on the server:
//!
//! - `GET /api/v1/profiles/{id}/download?format=speedscope|pprof|firefox|collapsed|html|svg`
//!   renders the stored profile with the same exporters as `prof report --format`;
//! - uploads may be vmprof logs, `perf script` output or folded stacks (recognized from
//!   their bytes): they are imported into a prof log, which is what is stored;
//! - vmprof's own client can upload here: `python -m vmprof --web --web-url URL script.py`
//!   (vmprof 0.6.0's `vmshare/service.py`) calls `POST /api/runtime/new` with JSON
//!   `{"argv", "VM"}`, `POST /api/runtime/upload/cpu/{rid}/add` with the raw log, then
//!   `POST /api/runtime/{rid}/freeze/`, and prints `URL/#/{rid}`. The runtime id is the
//!   id the profile is stored under, so `/p/{rid}` shows it. Its `AUTHORIZATION: Token
//!   KEY` header is accepted where prof's clients send `Authorization: Bearer KEY`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prof_analysis::export::{ExportFormat, ExportOptions};
use prof_analysis::import::{detect, import_bytes, InputFormat};
use prof_analysis::Symbolizer;
use prof_format::Profile;

use crate::api::{
    after_store, base_url, blocking, check_id, new_id, read_body, store_profile, State,
};
use crate::error::ApiError;
use crate::store::ProfileRecord;
use crate::AppState;

/// Decodes uploaded bytes: a prof log as is, another tool's profile imported. Returns the
/// profile and the bytes to store (a prof log either way).
pub fn decode_upload(bytes: Vec<u8>) -> Result<(Profile, Vec<u8>), ApiError> {
    match detect(&bytes) {
        Some(InputFormat::Prof) => {
            let p = prof_format::read_profile(&bytes).map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((p, bytes))
        }
        _ => {
            let imported = import_bytes(&bytes).map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((imported.profile, imported.log))
        }
    }
}

/// Decodes and symbolizes a stored profile like the server's preparation does (symbol
/// store first, then local files whose build ids match).
fn analyze_stored(
    st: &AppState,
    rec: &ProfileRecord,
) -> Result<(Profile, prof_analysis::Analysis), ApiError> {
    let bytes = st.storage.profile_bytes(rec)?;
    let mut profile = prof_format::read_profile(&bytes).map_err(|e| {
        ApiError::Internal(format!("stored profile {} no longer decodes: {e}", rec.id))
    })?;
    drop(bytes);
    crate::prepare::defuse_paths(&mut profile);
    let mut sym = Symbolizer::new();
    for id in crate::prepare::build_ids(&profile) {
        if let Some(path) = st.storage.symbol_path(&id)? {
            // A bad symbol file is reported by the summary endpoint; here it is skipped.
            let _ = sym.add_file(&path);
        }
    }
    let analysis = prof_analysis::analyze(&profile, &mut sym);
    Ok((profile, analysis))
}

/// `GET .../download?format=F`.
pub async fn download(
    st: &State,
    rec: ProfileRecord,
    format: &str,
) -> Result<HttpResponse, ApiError> {
    let Some(fmt) = ExportFormat::from_name(format) else {
        let names: Vec<&str> = ExportFormat::ALL.iter().map(|f| f.name()).collect();
        return Err(ApiError::bad(format!(
            "unknown format {format:?}: expected one of {} (or no format for the profile itself)",
            names.join(", ")
        )));
    };
    let st2 = st.clone();
    let rec2 = rec.clone();
    let body = blocking(move || {
        let (profile, analysis) = analyze_stored(&st2, &rec2)?;
        let opts = ExportOptions {
            title: Some(rec2.name.clone()),
        };
        prof_analysis::export::export(fmt, &profile, &analysis, &opts)
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
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

/// Uploads need a token when the server has tokens: vmprof's client sends
/// `AUTHORIZATION: Token KEY`, prof's `Authorization: Bearer KEY`; both are accepted.
fn authorize_upload(req: &HttpRequest, st: &AppState) -> Result<(), ApiError> {
    let tokens = &st.config.tokens;
    if tokens.is_empty() {
        return Ok(());
    }
    let Some(h) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "this server requires a token for uploads: run vmprof with --web-auth TOKEN".into(),
        ));
    };
    let token = match h.to_str().unwrap_or("").split_once(' ') {
        Some((scheme, t))
            if (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
                && !t.trim().is_empty() =>
        {
            t.trim().to_string()
        }
        _ => {
            return Err(ApiError::Unauthorized(
                "malformed Authorization header: expected `Token TOKEN` or `Bearer TOKEN`".into(),
            ))
        }
    };
    let ok = tokens.iter().any(|t| {
        t.len() == token.len()
            && t.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the token is not valid for this server".into(),
        ))
    }
}

/// `POST /api/runtime/new` with `{"argv": "...", "VM": "..."}`.
pub async fn runtime_new(
    req: HttpRequest,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize_upload(&req, &st)?;
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
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize_upload(&req, &st)?;
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
    let rec = blocking(move || store_profile(&st2, id, name, tags, bytes)).await?;
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
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize_upload(&req, &st)?;
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
    let resource =
        |path: &str| web::resource(path).default_service(web::to(crate::api::not_allowed));
    cfg.service(resource("/api/runtime/new").route(web::post().to(runtime_new)))
        .service(
            resource("/api/runtime/upload/{kind}/{rid}/add").route(web::post().to(runtime_add)),
        )
        .service(resource("/api/runtime/{rid}/freeze/").route(web::post().to(runtime_freeze)))
        .service(resource("/api/runtime/{rid}/freeze").route(web::post().to(runtime_freeze)));
}

//! The interactive viewer (the files of web/, embedded at build time): `/` (the profile
//! list) and `/p/{id}` (flamegraph, warmup curve, function table) serve the same HTML
//! shell, whose ES modules under `/static/` fetch everything else from `/api/v1`. The
//! server-rendered pages of `pages.rs` stay available without JavaScript at `/plain` and
//! `/plain/p/{id}`.
//!
//! The shell and the assets carry no profile data, so they need no token even with
//! `--private`: the viewer asks for one when the API answers 401.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::{api, pages, ApiError};

/// Scripts and styles only from this server, no inline code, data only from the API.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:expr) => {
        Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("main.js", JS),
    asset!("api.js", JS),
    asset!("util.js", JS),
    asset!("colors.js", JS),
    asset!("tiers.js", JS),
    asset!("palette.json", "application/json"),
    asset!("state.js", JS),
    asset!("flame.js", JS),
    asset!("timeline.js", JS),
    asset!("table.js", JS),
    asset!("list.js", JS),
    asset!("viewer.js", JS),
    asset!("layout.js", JS),
    asset!("compare.js", JS),
    asset!("source.js", JS),
    asset!("markers.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

const SHELL: &[u8] = include_bytes!("../../web/index.html");

/// Strong ETags, one per asset (and the shell last), computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| a.body)
            .chain([SHELL])
            .map(|b| format!("\"{}\"", &prof_analysis::hex(&Sha256::digest(b))[..20]))
            .collect()
    })
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// A response for an embedded file: revalidated on every use (`no-cache` with an ETag),
/// so a new server binary never runs with stale scripts.
fn send(req: &HttpRequest, mime: &str, body: &'static [u8], etag: &str) -> HttpResponse {
    let fresh = not_modified(req, etag);
    let mut r = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag.to_string()));
    if fresh {
        r.finish()
    } else {
        r.content_type(mime.to_string()).body(body)
    }
}

fn shell(req: &HttpRequest) -> HttpResponse {
    send(
        req,
        "text/html; charset=utf-8",
        SHELL,
        &etags()[ASSETS.len()],
    )
}

/// `GET /`: the profile list.
pub async fn list_page(req: HttpRequest) -> HttpResponse {
    shell(&req)
}

/// `GET /p/{id}`: the viewer of one profile. An id that names no profile gets the shell
/// with a 404 status (the script says so). With `--private` the profile is not looked
/// up here, where no token can come along, so that the page tells nothing about ids.
pub async fn viewer_page(
    req: HttpRequest,
    path: web::Path<String>,
    st: api::State,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let well_formed = id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let known = if !well_formed {
        false
    } else if st.config.private {
        true
    } else {
        match api::record(&st, &id).await {
            Ok(_) => true,
            Err(ApiError::NotFound(_)) => false,
            Err(e) => return Err(e),
        }
    };
    if known {
        return Ok(shell(&req));
    }
    Ok(HttpResponse::NotFound()
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(SHELL))
}

/// `GET /compare/{base}/{id}`: the differential view of two profiles (the same shell; the
/// script asks `/api/v1/profiles/{id}/diff?base={base}`).
pub async fn compare_page(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (base, id) = path.into_inner();
    let ok = |s: &str| api::check_id(s).is_ok();
    if ok(&base) && ok(&id) {
        return shell(&req);
    }
    HttpResponse::NotFound()
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(SHELL)
}

/// `GET /static/{file}`.
pub async fn static_file(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().position(|a| a.name == path.as_str()) {
        Some(i) => send(&req, ASSETS[i].mime, ASSETS[i].body, &etags()[i]),
        None => crate::error::json_error(
            actix_web::http::StatusCode::NOT_FOUND,
            &format!("no file {:?} in the viewer", path.as_str()),
        ),
    }
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(api::not_allowed))
}

/// The viewer's routes, and the plain pages under `/plain`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/")
            .route(web::get().to(list_page))
            .route(web::head().to(list_page)),
    )
    .service(
        resource("/p/{id}")
            .route(web::get().to(viewer_page))
            .route(web::head().to(viewer_page)),
    )
    .service(resource("/compare/{base}/{id}").route(web::get().to(compare_page)))
    .service(
        resource("/static/{file}")
            .route(web::get().to(static_file))
            .route(web::head().to(static_file)),
    )
    .service(resource("/plain").route(web::get().to(pages::index)))
    .service(resource("/plain/p/{id}").route(web::get().to(pages::profile)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_import_is_served() {
        // Each `from "./x.js"` in a served script names a served asset.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            // ... and each `new URL("./x", import.meta.url)` it reads.
            for part in text
                .split("from \"./")
                .skip(1)
                .chain(text.split("new URL(\"./").skip(1))
            {
                let name = &part[..part.find('"').unwrap()];
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} imports {name}, which is not served",
                    a.name
                );
            }
        }
        let shell = std::str::from_utf8(SHELL).unwrap();
        for part in shell.split("/static/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(ASSETS.iter().any(|b| b.name == name), "shell needs {name}");
        }
    }

    #[test]
    fn no_inline_code_in_the_shell() {
        let shell = std::str::from_utf8(SHELL).unwrap();
        assert!(!shell.contains("<script>") && !shell.contains("style="));
        // No inline event handlers (` onclick=`, ` onload=`...).
        for (i, _) in shell.match_indices(" on") {
            let rest = &shell[i + 3..];
            let word: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            assert!(
                !rest[word.len()..].starts_with('='),
                "inline handler on{word}= in the shell"
            );
        }
    }
}

//! `GET /api/v1/profiles/{id}/lines?file=PATH`: per-line costs of one source file, with
//! its text when the profile carries it (issue 13; `prof run` stores the program's own
//! sampled script files, see docs/FORMAT.md `SOURCE`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::api::{authorize, load, Access, State};
use crate::error::ApiError;
use crate::params::Params;

#[derive(Serialize)]
struct Out<'a> {
    file: &'a str,
    /// The file's lines (no line ends), or null when the profile has no copy of it.
    source: Option<Vec<&'a str>>,
    /// Line number (as a string key) -> `{"self", "total"}` weights.
    lines: std::collections::BTreeMap<String, prof_analysis::tree::LineCost>,
    /// Weight of all samples, for shares.
    total: u64,
}

pub async fn lines(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let params = Params::parse(req.query_string(), &["file"])?;
    let file = params
        .string("file", 4096)?
        .ok_or_else(|| ApiError::bad("parameter \"file\" is required: the source file's path"))?;
    let (_, p) = load(&st, &path).await?;
    let costs = p.index.line_costs(&file);
    let source = p.index.source(&file);
    if costs.is_none() && source.is_none() {
        return Err(ApiError::not_found(format!(
            "no sampled frame and no source in this profile for file {file:?}"
        )));
    }
    let out = Out {
        file: &file,
        source: source.map(|s| s.lines().collect()),
        lines: costs
            .map(|c| c.iter().map(|(l, v)| (l.to_string(), *v)).collect())
            .unwrap_or_default(),
        total: p.index.tier_totals().iter().sum(),
    };
    let body = serde_json::to_vec(&out).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

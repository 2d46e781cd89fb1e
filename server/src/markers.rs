//! `GET /api/v1/profiles/{id}/markers`: the profile's request markers in columns (issue
//! 14), for the viewer's latency plot: every marker's name, thread, start, duration, CPU
//! time and place on the timeline's axis, and per-name latency percentiles. The sample
//! filter's `process`/`thread` and marker parameters (`marker`, `marker_min`,
//! `marker_max`, `marker_from`, `marker_to`) select markers the same way they select
//! samples on the tree, functions and timeline endpoints.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::{authorize, load, Access, State};
use crate::error::ApiError;
use crate::params::{Params, FILTER};

pub async fn markers(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let params = Params::parse(req.query_string(), &FILTER)?;
    let filter = params.filter()?;
    let (_, p) = load(&st, &path).await?;
    let table = p
        .index
        .markers_table(&filter)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let body = serde_json::to_vec(&table).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

//! `GET /api/v1/profiles/{id}/diff?base={other}`: the profile's call tree with the base
//! profile's weights matched onto it by path, plus the functions whose share changed most
//! (issue 13; the `/compare/{base}/{id}` page draws it). The sample filter applies to
//! both profiles, but for the process, thread and time range, which only name samples of
//! the profile itself.

use actix_web::{web, HttpRequest, HttpResponse};
use prof_analysis::diff::{diff_functions, diff_tree};
use prof_analysis::tree::{QueryError, TreeOptions};
use serde::Serialize;

use crate::api::{authorize, check_id, load, tier_names, Access, State};
use crate::error::ApiError;
use crate::params::{Params, FILTER};

#[derive(Serialize)]
struct Columns<'a> {
    name: Vec<&'a str>,
    module: Vec<&'a str>,
    file: Vec<Option<&'a str>>,
    line: Vec<Option<u32>>,
}

pub async fn diff(
    req: HttpRequest,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &st, Access::Read)?;
    let mut allowed = FILTER.to_vec();
    allowed.extend(["base", "max_nodes", "limit"]);
    let params = Params::parse(req.query_string(), &allowed)?;
    let base_id = params.string("base", 64)?.ok_or_else(|| {
        ApiError::bad("parameter \"base\" is required: the id of the profile to compare with")
    })?;
    check_id(&base_id)?;
    let filter = params.filter()?;
    let mut base_filter = filter.clone();
    base_filter.process = None;
    base_filter.thread = None;
    base_filter.from_s = None;
    base_filter.to_s = None;
    let opts = TreeOptions {
        invert: false,
        max_nodes: params.u64_in("max_nodes", 2, 1_000_000)?.unwrap_or(5000) as usize,
    };
    let limit = params.u64_in("limit", 1, 100_000)?.unwrap_or(200) as usize;
    let (_, p) = load(&st, &path).await?;
    let (_, b) = load(&st, &base_id).await?;
    let out = crate::api::blocking(move || {
        let bad = |e: QueryError| ApiError::bad(e.to_string());
        let a_tree = p.index.tree(&filter, &opts, None).map_err(bad)?;
        let b_tree = match b.index.tree(&base_filter, &opts, None) {
            Ok(t) => t,
            Err(QueryError::NoFunction(_)) => {
                let mut f = base_filter.clone();
                f.focus = None;
                f.tiers = Some(Vec::new()); // nothing: the base never ran the focus
                b.index.tree(&f, &opts, None).map_err(bad)?
            }
            Err(e) => return Err(bad(e)),
        };
        let d = diff_tree(&a_tree, &b_tree);
        let mut changes = diff_functions(&p.index, &b.index, &filter, &base_filter).map_err(bad)?;
        changes.truncate(limit);
        let share = |w: &[u64], t: u64| -> Vec<f64> {
            w.iter()
                .map(|&x| if t == 0 { 0.0 } else { x as f64 / t as f64 })
                .collect()
        };
        let v = serde_json::json!({
            "total": d.total,
            "base_total": d.base_total,
            "tiers": tier_names(),
            "functions": Columns {
                name: d.functions.iter().map(|f| f.name.as_str()).collect(),
                module: d.functions.iter().map(|f| f.module.as_str()).collect(),
                file: d.functions.iter().map(|f| f.file.as_deref()).collect(),
                line: d.functions.iter().map(|f| f.line).collect(),
            },
            "nodes": {
                "parent": d.parent,
                "func": d.func,
                "self": d.self_,
                "total": d.total_weight,
                "base_self": d.base_self,
                "base_total": d.base_total_weight,
                "share": share(&d.total_weight, d.total),
                "base_share": share(&d.base_total_weight, d.base_total),
                "tiers": d.tiers,
            },
            "changes": changes.iter().map(|c| serde_json::json!({
                "name": c.name,
                "module": c.module,
                "self": c.self_,
                "base_self": c.base_self,
                "total": c.total,
                "base_total": c.base_total,
            })).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&v).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(out))
}

//! `/api/v1/symbols/{build_id}`: debug files (or unstripped binaries) stored by build id,
//! used to symbolize every profile whose modules carry that build id.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};

use super::{blocking, read_body, CanRead, CanWrite, State};
use crate::error::ApiError;
use crate::params::Params;

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
    _: CanRead,
    path: web::Path<String>,
    st: State,
) -> Result<HttpResponse, ApiError> {
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
    _: CanWrite,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    st: State,
) -> Result<HttpResponse, ApiError> {
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
        st2.storage
            .put_symbol(&id2, &bytes)
            .map_err(super::profiles::store_write_error)
    })
    .await?;
    st.metrics.symbol_uploads.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({ "build_id": id, "size": size });
    Ok(if replaced {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Created().json(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids() {
        assert_eq!(check_build_id("AB12").unwrap(), "ab12");
        assert!(check_build_id("abc").is_err());
        assert!(check_build_id("zz").is_err());
    }
}

//! Token authorization, in one place: the [`CanRead`] and [`CanWrite`] extractors (and
//! [`authorize`] for handlers that decide at run time). prof's clients send
//! `Authorization: Bearer TOKEN`; vmprof's client sends `Authorization: Token TOKEN`;
//! both are accepted everywhere.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Checks the token when the server has tokens and the access needs one (writes always;
/// reads with `--private`).
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
            "this server requires a token for {what}: send the header `Authorization: Bearer TOKEN` (vmprof: --web-auth TOKEN)"
        )));
    };
    let token = match h.to_str().unwrap_or("").split_once(' ') {
        Some((scheme, t))
            if (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
                && !t.trim().is_empty() =>
        {
            t.trim()
        }
        _ => return Err(ApiError::Unauthorized(
            "malformed Authorization header: expected `Bearer TOKEN` (or vmprof's `Token TOKEN`)"
                .into(),
        )),
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

fn check(req: &HttpRequest, access: Access) -> Result<(), ApiError> {
    let st = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("the server state is missing".into()))?;
    authorize(req, st, access)
}

/// The request may read (a handler argument: extraction fails with 401/403 otherwise).
#[derive(Debug, Clone, Copy)]
pub struct CanRead;

/// The request may write (upload, delete).
#[derive(Debug, Clone, Copy)]
pub struct CanWrite;

impl FromRequest for CanRead {
    type Error = ApiError;
    type Future = Ready<Result<CanRead, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, Access::Read).map(|()| CanRead))
    }
}

impl FromRequest for CanWrite {
    type Error = ApiError;
    type Future = Ready<Result<CanWrite, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, Access::Write).map(|()| CanWrite))
    }
}

//! Bearer-token checks for the report and admin routes (`Authorization: Bearer <token>`).
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, StatusCode};

use crate::api::ApiError;
use crate::config::Token;

/// Checks the request's bearer token against `expected`. No configured token means the route
/// is disabled (403); a missing or wrong token is 401.
pub fn require(expected: Option<&Token>, headers: &HeaderMap, route: &str) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{route} is disabled: the server has no token configured for it"),
        ));
    };
    let presented = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
        )
    })?;
    if expected.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid bearer token",
        ))
    }
}

/// The token of an `Authorization: Bearer …` header, if well-formed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

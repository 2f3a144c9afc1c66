//! API-key authentication: which routes need which key ([`required_access`]), and the
//! middleware that checks `Authorization: Bearer KEY` against the configured keys in
//! constant time. Owns no handler and never logs a key.
//!
//! With no key configured every route is open (local use). With a write key only,
//! read routes need the write key too; the write key always grants read.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::{Keys, Secret};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No key (health probes).
    Open,
    /// The read or the write key.
    Read,
    /// The write key.
    Write,
}

/// The access `method` on the route template `route` needs. The single place that
/// maps routes to permissions: anything not listed (a route added later, or no route
/// at all) needs the write key, so a new route is protected until someone decides
/// otherwise. `metrics_auth` makes `/metrics` need the read key.
///
/// Snapshot export and import (`GET`/`PUT /v1/models/{name}/snapshot`) are deliberately
/// not listed: an export holds the model's whole data summary (mean and scatter), which
/// is more than the read key's components and projections reveal, so both need write.
pub fn required_access(method: &Method, route: Option<&str>, metrics_auth: bool) -> Access {
    // HEAD is answered by the GET handler, so it needs what GET needs.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, route.unwrap_or("")) {
        ("GET", "/healthz" | "/readyz") => Access::Open,
        ("GET", "/metrics") if metrics_auth => Access::Read,
        ("GET", "/metrics") => Access::Open,
        (
            "GET",
            "/v1/models"
            | "/v1/models/{name}"
            | "/v1/models/{name}/components"
            | "/v1/models/{name}/limits",
        )
        | ("POST", "/v1/models/{name}/project") => Access::Read,
        _ => Access::Write,
    }
}

/// Compares two byte strings in time that depends only on their lengths' maximum, not
/// on where they differ. (Hand-written to avoid a dependency for ten lines: every byte
/// pair is visited and differences are OR-ed, with no early exit; `black_box` keeps the
/// optimiser from adding one.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// The keys and the `/metrics` policy, shared by the middleware.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The configured keys.
    pub keys: Keys,
    /// Whether `/metrics` needs the read key.
    pub metrics_auth: bool,
}

impl Auth {
    /// Whether any key is configured (otherwise everything is open).
    pub fn enabled(&self) -> bool {
        self.keys.write.is_some() || self.keys.read.is_some()
    }

    /// The access a presented token grants.
    fn granted(&self, token: &str) -> Option<Access> {
        let matches = |k: &Option<Secret>| {
            k.as_ref()
                .is_some_and(|k| constant_time_eq(k.expose().as_bytes(), token.as_bytes()))
        };
        // Both comparisons always run, so timing does not tell which key matched.
        let write = matches(&self.keys.write);
        let read = matches(&self.keys.read);
        if write {
            Some(Access::Write)
        } else if read {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// Checks a request's headers for `need`.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] without a valid key, [`ApiError::Forbidden`] with a
    /// key that lacks the right.
    pub fn check(&self, headers: &HeaderMap, need: Access) -> Result<(), ApiError> {
        if need == Access::Open || !self.enabled() {
            return Ok(());
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "send `Authorization: Bearer <key>`".into(),
            ));
        };
        match self.granted(token) {
            None => Err(ApiError::Unauthorized("the API key is not valid".into())),
            Some(have) if have >= need => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "this operation needs the write API key".into(),
            )),
        }
    }
}

/// Middleware: rejects a request whose key does not grant its route's access. Runs
/// before any body is read.
pub async fn require_key(
    State(auth): State<std::sync::Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let need = required_access(req.method(), route, auth.metrics_auth);
    match auth.check(req.headers(), need) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(write: Option<&str>, read: Option<&str>) -> Auth {
        Auth {
            keys: Keys {
                write: write.map(Secret::from),
                read: read.map(Secret::from),
            },
            metrics_auth: false,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn constant_time_eq_agrees_with_eq() {
        for (a, b) in [
            ("", ""),
            ("a", ""),
            ("abc", "abc"),
            ("abc", "abd"),
            ("ab", "abc"),
        ] {
            assert_eq!(
                constant_time_eq(a.as_bytes(), b.as_bytes()),
                a == b,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn unknown_routes_need_the_write_key() {
        let put = Method::PUT;
        assert_eq!(
            required_access(&put, Some("/v1/models/{name}/snapshot"), false),
            Access::Write
        );
        assert_eq!(
            required_access(&Method::GET, Some("/v1/models/{name}/snapshot"), false),
            Access::Write
        );
        assert_eq!(required_access(&Method::GET, None, false), Access::Write);
        assert_eq!(
            required_access(&Method::HEAD, Some("/healthz"), false),
            Access::Open
        );
    }

    #[test]
    fn keys_grant_what_they_should() {
        let a = auth(Some("w"), Some("r"));
        assert!(a.check(&HeaderMap::new(), Access::Open).is_ok());
        let code = |h: &HeaderMap, need| a.check(h, need).err().map(|e| e.code());
        assert_eq!(code(&HeaderMap::new(), Access::Read), Some("unauthorized"));
        assert_eq!(code(&bearer("nope"), Access::Read), Some("unauthorized"));
        assert_eq!(code(&bearer("r"), Access::Read), None);
        assert_eq!(code(&bearer("r"), Access::Write), Some("forbidden"));
        assert_eq!(code(&bearer("w"), Access::Read), None);
        assert_eq!(code(&bearer("w"), Access::Write), None);
        assert!(auth(None, None)
            .check(&HeaderMap::new(), Access::Write)
            .is_ok());
    }
}

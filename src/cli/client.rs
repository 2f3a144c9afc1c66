//! [`Client`]: the server's HTTP API as typed calls, with the API key, retries on 503
//! (honouring `Retry-After`, exponential back-off, capped) and one error type whose
//! variants map to the documented exit codes.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// How many times a request is sent at most when the server answers 503/429.
pub const MAX_TRIES: u32 = 5;
/// The longest single wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server refused the request (4xx) with its `{code, message}`.
    #[error("{code}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's stable error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// Bad input: a file, an argument, or data the command cannot use.
    #[error("{0}")]
    Input(String),
    /// The server could not be reached.
    #[error("cannot connect to {url}: is the server running at {url}? ({detail})")]
    Unreachable {
        /// The server URL.
        url: String,
        /// What the HTTP library said.
        detail: String,
    },
    /// The server failed, answered something unexpected, or stayed overloaded.
    #[error("{0}")]
    Server(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Rejected { .. } | Self::Input(_) => 1,
            Self::Unreachable { .. } => 2,
            Self::Server(_) => 3,
        }
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Bytes),
    /// Any other content type.
    Raw(&'static str, Bytes),
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
}

impl Client {
    /// A client for the server at `url`.
    ///
    /// # Errors
    /// [`CliError::Input`] for a URL that is not `http://…`, or a key that no header
    /// can carry (anything but visible ASCII: the server would answer 401 forever).
    pub fn new(url: &str, api_key: Option<String>) -> Result<Self, CliError> {
        if let Some(c) = api_key
            .as_deref()
            .and_then(|k| k.chars().find(|c| !c.is_ascii_graphic()))
        {
            return Err(CliError::Input(format!(
                "the API key contains U+{:04X}; keys are visible ASCII (0x21-0x7E) only",
                u32::from(c)
            )));
        }
        let base =
            Url::parse(url).map_err(|e| CliError::Input(format!("invalid --url {url:?}: {e}")))?;
        if base.scheme() != "http" {
            return Err(CliError::Input(format!(
                "invalid --url {url:?}: only http:// is supported (this build has no TLS)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Input(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// The server URL as given.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + the path segments (each percent-encoded as needed).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request, retrying on 503/429, and returns the JSON body of a success
    /// (`Value::Null` for an empty body).
    ///
    /// # Errors
    /// [`CliError`] by status: 4xx → `Rejected`, 5xx or exhausted retries → `Server`,
    /// no connection → `Unreachable`.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Body,
    ) -> Result<Value, CliError> {
        let url = self.url(segments);
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=MAX_TRIES {
            let mut req = self.http.request(method.clone(), url.clone()).query(query);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            req = match &body {
                Body::Empty => req,
                Body::Json(b) => req
                    .header("content-type", "application/json")
                    .body(b.clone()),
                Body::Raw(ct, b) => req.header("content-type", *ct).body(b.clone()),
            };
            let resp = req.send().await.map_err(|e| self.transport(&e))?;
            let status = resp.status();
            if (status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < MAX_TRIES
            {
                let wait = retry_after(&resp).unwrap_or(backoff).min(MAX_BACKOFF);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            let text = resp.text().await.map_err(|e| self.transport(&e))?;
            return interpret(status, &text, attempt);
        }
        // The loop always returns on its last attempt.
        Err(CliError::Server("no attempt was made".into()))
    }

    fn transport(&self, e: &reqwest::Error) -> CliError {
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable {
                url: self.base().to_owned(),
                detail: error_chain(e),
            }
        } else {
            CliError::Server(format!("talking to {}: {}", self.base(), error_chain(e)))
        }
    }

    /// `GET` a JSON resource.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.call(Method::GET, segments, query, Body::Empty).await
    }

    /// `POST` a JSON body.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn post_json(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CliError::Input(format!("encoding the request: {e}")))?;
        self.call(Method::POST, segments, &[], Body::Json(bytes.into()))
            .await
    }

    /// `DELETE` a resource.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        self.call(Method::DELETE, segments, &[], Body::Empty).await
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `Retry-After` in seconds (the HTTP-date form is not used by streampca).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: f64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn interpret(status: StatusCode, text: &str, attempts: u32) -> Result<Value, CliError> {
    let body: Option<Value> = serde_json::from_str(text).ok();
    if status.is_success() {
        return match body {
            Some(v) => Ok(v),
            None if text.trim().is_empty() => Ok(Value::Null),
            None => Err(CliError::Server(format!(
                "the server answered {status} with a body that is not JSON"
            ))),
        };
    }
    let (code, message) = match body.as_ref().map(|b| &b["error"]) {
        Some(e) if e["code"].is_string() => (
            e["code"].as_str().unwrap_or_default().to_owned(),
            e["message"].as_str().unwrap_or_default().to_owned(),
        ),
        _ => (
            status.as_str().to_owned(),
            text.trim().chars().take(200).collect(),
        ),
    };
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Err(CliError::Rejected {
            status: status.as_u16(),
            code,
            message,
        })
    } else if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        Err(CliError::Server(format!(
            "the server is overloaded ({status}) and still was after {attempts} tries: {code}: {message}"
        )))
    } else {
        Err(CliError::Server(format!(
            "the server failed ({status}): {code}: {message}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let r = interpret(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":{"code":"dimension_mismatch","message":"expected 3"}}"#,
            1,
        );
        let Err(e) = r else { panic!("not an error") };
        assert_eq!(e.to_string(), "dimension_mismatch: expected 3");
        assert_eq!(e.exit_code(), 1);
        let Err(e) = interpret(StatusCode::SERVICE_UNAVAILABLE, "", 5) else {
            panic!("not an error")
        };
        assert_eq!(e.exit_code(), 3);
        assert!(matches!(
            interpret(StatusCode::NO_CONTENT, "", 1),
            Ok(Value::Null)
        ));
    }

    #[test]
    fn model_names_are_escaped_into_one_path_segment() {
        let c = Client::new("http://h:1/", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.url(&["v1", "models", "a/b c"]).as_str(),
            "http://h:1/v1/models/a%2Fb%20c"
        );
    }

    #[test]
    fn a_key_no_header_can_carry_is_refused_before_any_request() {
        let e = Client::new("http://h:1", Some("clé".into())).err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("U+00E9") && !msg.contains("clé"), "{msg}");
        assert!(Client::new("http://h:1", Some("k1".into())).is_ok());
    }

    #[test]
    fn https_is_refused_with_a_reason() {
        let e = Client::new("https://h", None).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("no TLS")));
    }
}

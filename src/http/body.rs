//! Small request bodies: the JSON extractor that gives axum's own rejections our error
//! shape (model configurations), the whole-body extractor (snapshots), and the media
//! type. Batches and projection queries are parsed as they arrive instead
//! ([`super::body_stream`] feeding [`crate::format`]).

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The body as bytes, with the body-limit rejection mapped to [`ApiError::BodyTooLarge`].
#[derive(Debug)]
pub struct RawBody(pub Bytes);

/// The configured body limit, stored as request extension-free state: axum's
/// `DefaultBodyLimit` enforces it; this copy only fills in the error message.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Self(b)),
            Err(rej) if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge(limit))
            }
            Err(rej) => Err(ApiError::MalformedBody(rej.body_text())),
        }
    }
}

/// A JSON body (`Content-Type: application/json`) deserialised into `T`, with every
/// failure in our error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()).as_deref() {
            Some("application/json") => {}
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected application/json, got {}",
                    other.unwrap_or("no Content-Type")
                )))
            }
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::MalformedBody(e.to_string()))
    }
}

/// The media type of a request (`type/subtype`, lower case, parameters dropped).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

//! [`ApiError`]: every way a request can fail, and the one place that picks its HTTP
//! status and stable error code. Bodies are `{"error": {"code", "message"}}`; 5xx
//! messages stay generic and the detail goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::format::FormatError;
use crate::model::ModelError;
use crate::pca::{BatchError, PcaError};
use crate::telemetry::throttle::LogThrottle;

/// 5xx details are logged at most 5 times per code per 10 s, each line with the number
/// of similar ones left out since the previous (a full disk fails every request).
static ERROR_LOG: std::sync::LazyLock<LogThrottle> =
    std::sync::LazyLock::new(|| LogThrottle::new(std::time::Duration::from_secs(10), 5));

/// Every error code the API can return (used to bound metric labels).
pub const ERROR_CODES: &[&str] = &[
    "model_not_found",
    "model_exists",
    "not_fitted",
    "invalid_parameter",
    "dimension_mismatch",
    "ragged_rows",
    "non_finite",
    "value_out_of_range",
    "empty_batch",
    "malformed_body",
    "unsupported_media_type",
    "body_too_large",
    "route_not_found",
    "method_not_allowed",
    "unavailable",
    "invalid_snapshot",
    "storage_unavailable",
    "unauthorized",
    "forbidden",
    "too_many_rows",
    "too_many_models",
    "body_timeout",
    "overloaded",
    "timeout",
    "model_unavailable",
    "internal",
];

/// A failed request. Each variant's message names the problem with its numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// No model has this name.
    #[error("model `{0}` does not exist")]
    ModelNotFound(String),
    /// A model of this name exists with another configuration.
    #[error("model `{0}` already exists with a different configuration")]
    ModelExists(String),
    /// The model has not been fitted yet (too few samples so far).
    #[error("model `{0}` has no fitted components yet; ingest more samples and retry")]
    NotFitted(String),
    /// A parameter (path, query or body field) is out of range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter as users spell it.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Rows of the wrong length (all rows agree with each other).
    #[error("dimension mismatch: {0}")]
    DimensionMismatch(String),
    /// Rows of different lengths in one batch.
    #[error("ragged rows: {0}")]
    RaggedRows(String),
    /// NaN or an infinity in the data.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A value too large in magnitude to accumulate safely.
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// A batch with no rows.
    #[error("empty batch: at least one row is required")]
    EmptyBatch,
    /// The body cannot be parsed.
    #[error("malformed body: {0}")]
    MalformedBody(String),
    /// A `Content-Type` this route does not accept.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body exceeds the configured limit (bytes).
    #[error("request body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// No route has this path.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The path exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Unavailable,
    /// An uploaded snapshot does not decode or is inconsistent (the message says where).
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// The data directory could not record the change (disk full, I/O error, or the
    /// model's log is unusable after an earlier failure). Nothing was acknowledged; the
    /// detail is logged, not returned.
    #[error("storage unavailable: the change could not be made durable")]
    StorageUnavailable(String),
    /// No API key, or one that matches no configured key.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid API key that lacks the right for this operation.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// More rows than a configured limit allows in one request.
    #[error("too many rows: at least {got} rows in one {what}, the limit ({limit}) is {max}")]
    TooManyRows {
        /// `batch` or `query`.
        what: &'static str,
        /// The setting that sets the limit.
        limit: &'static str,
        /// The limit.
        max: usize,
        /// The rows sent.
        got: usize,
    },
    /// The configured number of models, or their memory budget, is used up.
    #[error("too many models: {0}; delete one first")]
    TooManyModels(String),
    /// Too much work in flight; retry after `Retry-After` seconds.
    #[error("overloaded: {0}; retry later")]
    Overloaded(String),
    /// The body arrived more slowly than the configured minimum rate (the message says
    /// how much arrived in how long).
    #[error("request body too slow: {0}")]
    BodyTimeout(String),
    /// The request took longer than the configured timeout (seconds).
    #[error("the request did not complete within {0} s")]
    Timeout(u64),
    /// A model recovery held back because acknowledged data is missing.
    #[error(
        "model `{name}` is not served: recovery found data missing ({reason}); restart \
             with --accept-data-loss to serve what is left, or delete the model"
    )]
    ModelUnavailable {
        /// The model.
        name: String,
        /// What recovery found.
        reason: String,
    },
    /// A bug or an environment failure; the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A shorthand for [`ApiError::InvalidParameter`].
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// The HTTP status and the stable error code. One match, no wildcard: a new variant
    /// must choose both here.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
            Self::ModelExists(_) => (StatusCode::CONFLICT, "model_exists"),
            Self::NotFitted(_) => (StatusCode::CONFLICT, "not_fitted"),
            Self::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::DimensionMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "dimension_mismatch"),
            Self::RaggedRows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "ragged_rows"),
            Self::NonFinite(_) => (StatusCode::UNPROCESSABLE_ENTITY, "non_finite"),
            Self::OutOfRange(_) => (StatusCode::UNPROCESSABLE_ENTITY, "value_out_of_range"),
            Self::EmptyBatch => (StatusCode::UNPROCESSABLE_ENTITY, "empty_batch"),
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::RouteNotFound(_) => (StatusCode::NOT_FOUND, "route_not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::InvalidSnapshot(_) => (StatusCode::BAD_REQUEST, "invalid_snapshot"),
            Self::StorageUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TooManyRows { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows"),
            Self::TooManyModels(_) => (StatusCode::CONFLICT, "too_many_models"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::ModelUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound(name) => Self::ModelNotFound(name),
            ModelError::Exists(name) => Self::ModelExists(name),
            ModelError::Config(c) => Self::invalid(c.field, c.reason),
            ModelError::TooManyModels(why) => Self::TooManyModels(why),
            ModelError::Batch(b) => b.into(),
            ModelError::NotFitted(name) => Self::NotFitted(name),
            ModelError::InvalidSnapshot(why) => Self::InvalidSnapshot(why),
            ModelError::Storage(e) => Self::StorageUnavailable(e.to_string()),
            ModelError::Quarantined { name, reason } => Self::ModelUnavailable { name, reason },
            ModelError::Numerics(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let message = e.to_string();
        match e {
            BatchError::Empty => Self::EmptyBatch,
            BatchError::Shape { .. } | BatchError::RowLength { .. } => {
                Self::DimensionMismatch(strip(&message, "dimension mismatch: "))
            }
            BatchError::TargetsMissing { .. } | BatchError::TargetsUnexpected => {
                Self::invalid("y", message)
            }
            BatchError::NonFinite { .. } => Self::NonFinite(strip(&message, "non-finite value: ")),
            BatchError::OutOfRange { .. } => {
                Self::OutOfRange(strip(&message, "value out of range: "))
            }
        }
    }
}

/// The message without the prefix our own variant's message adds again.
fn strip(message: &str, prefix: &str) -> String {
    message.strip_prefix(prefix).unwrap_or(message).to_owned()
}

impl From<PcaError> for ApiError {
    fn from(e: PcaError) -> Self {
        let message = e.to_string();
        match e {
            PcaError::DimensionMismatch { .. } => Self::DimensionMismatch(message),
            PcaError::NonFinite { what } => Self::NonFinite(what),
            PcaError::EmptyBatch => Self::EmptyBatch,
            PcaError::InvalidParam { name, reason } => Self::invalid(name, reason),
            PcaError::NotPositiveDefinite { .. } | PcaError::Incompatible { .. } => {
                Self::Internal(message)
            }
            PcaError::NotEnoughSamples { .. } => Self::Internal(message),
            // Only a stopping model's trainer cancels a fit.
            PcaError::Cancelled => Self::Unavailable,
        }
    }
}

impl From<FormatError> for ApiError {
    /// One API code per parser error; a batch's own checks map as their names say.
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Malformed(m) => Self::MalformedBody(m),
            FormatError::DimensionMismatch(m) => Self::DimensionMismatch(m),
            FormatError::RaggedRows(m) => Self::RaggedRows(m),
            FormatError::InvalidParameter { name, reason } => Self::invalid(name, reason),
            FormatError::TooManyRows { max, setting } => Self::TooManyRows {
                what: if setting == "max_query_rows" {
                    "query"
                } else {
                    "batch"
                },
                limit: setting,
                max,
                got: max.saturating_add(1),
            },
            FormatError::BodyTooLarge { limit } => Self::BodyTooLarge(limit),
            FormatError::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            FormatError::Batch(b) => b.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(detail) => {
                if let Some(suppressed) = ERROR_LOG.check(code) {
                    tracing::error!(detail = %detail, suppressed, "internal error");
                }
                self.to_string()
            }
            Self::StorageUnavailable(detail) => {
                if let Some(suppressed) = ERROR_LOG.check(code) {
                    tracing::error!(detail = %detail, suppressed, "storage error");
                }
                self.to_string()
            }
            _ => self.to_string(),
        };
        let mut response = (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        // Extra headers, by variant; no wildcard, so a new variant decides here too.
        let extra = match &self {
            Self::Unauthorized(_) => Some((header::WWW_AUTHENTICATE, "Bearer")),
            Self::Overloaded(_) | Self::Timeout(_) | Self::Unavailable => {
                Some((header::RETRY_AFTER, "1"))
            }
            // Disk trouble may pass (space freed) or last until a restart: retry slowly.
            Self::StorageUnavailable(_) => Some((header::RETRY_AFTER, "5")),
            Self::InvalidSnapshot(_)
            | Self::ModelNotFound(_)
            | Self::ModelExists(_)
            | Self::NotFitted(_)
            | Self::InvalidParameter { .. }
            | Self::DimensionMismatch(_)
            | Self::RaggedRows(_)
            | Self::NonFinite(_)
            | Self::OutOfRange(_)
            | Self::EmptyBatch
            | Self::MalformedBody(_)
            | Self::UnsupportedMediaType(_)
            | Self::BodyTooLarge(_)
            | Self::RouteNotFound(_)
            | Self::MethodNotAllowed
            | Self::Forbidden(_)
            | Self::TooManyRows { .. }
            | Self::TooManyModels(_)
            | Self::BodyTimeout(_)
            | Self::ModelUnavailable { .. }
            | Self::Internal(_) => None,
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_listed_code() {
        let all = [
            ApiError::ModelNotFound("m".into()),
            ApiError::ModelExists("m".into()),
            ApiError::NotFitted("m".into()),
            ApiError::invalid("k", "x"),
            ApiError::DimensionMismatch("x".into()),
            ApiError::RaggedRows("x".into()),
            ApiError::NonFinite("x".into()),
            ApiError::OutOfRange("x".into()),
            ApiError::EmptyBatch,
            ApiError::MalformedBody("x".into()),
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::BodyTooLarge(1),
            ApiError::RouteNotFound("/x".into()),
            ApiError::MethodNotAllowed,
            ApiError::Unavailable,
            ApiError::InvalidSnapshot("x".into()),
            ApiError::StorageUnavailable("x".into()),
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::TooManyRows {
                what: "batch",
                limit: "max_batch_rows",
                max: 1,
                got: 2,
            },
            ApiError::TooManyModels("x".into()),
            ApiError::BodyTimeout("x".into()),
            ApiError::Overloaded("x".into()),
            ApiError::Timeout(1),
            ApiError::ModelUnavailable {
                name: "m".into(),
                reason: "x".into(),
            },
            ApiError::Internal("x".into()),
        ];
        for e in all {
            assert!(
                ERROR_CODES.contains(&e.code()),
                "{} is not listed",
                e.code()
            );
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        assert_eq!(
            ApiError::Internal("secret path".into()).to_string(),
            "internal error"
        );
    }
}

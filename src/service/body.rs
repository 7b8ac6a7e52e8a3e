//! Reading requests: a JSON body (`application/json`, at most `service.maxBodyBytes`,
//! malformed JSON answered with its line and column, a wrong shape with its path) and
//! query strings, each refused with an [`ApiError`] of its own code.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::runtime::definition::parse::display_path;
use crate::service::error::{ApiError, ErrorCode};

/// A JSON request body of type `T`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "the body must be application/json (Content-Type was {})",
                    if content_type.is_empty() {
                        "absent".to_owned()
                    } else {
                        format!("`{content_type}`")
                    }
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the body is larger than this server takes (service.maxBodyBytes)",
                )
            } else {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("cannot read the body: {e}"),
                )
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// `application/json`, or a `+json` type, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `bytes` as a `T`: syntax errors are 400 `MALFORMED_JSON` with line and column,
/// shape errors 422 `INVALID_INPUT` with the path.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = display_path(e.path());
        json_error(e.into_inner(), Some(path))
    })?;
    de.end().map_err(|e| json_error(e, None))?;
    Ok(value)
}

fn json_error(inner: serde_json::Error, path: Option<String>) -> ApiError {
    match path {
        Some(path) if !(inner.is_syntax() || inner.is_eof()) => {
            ApiError::new(ErrorCode::InvalidInput, format!("{path}: {inner}"))
                .with_details(json!({ "path": path }))
        }
        _ => ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}"))
            .with_details(json!({ "line": inner.line(), "column": inner.column() })),
    }
}

/// A query string of type `T`.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query).map(Query).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid query string: {e}"),
            )
        })
    }
}

/// The two segments of a path such as `/v1/runs/{id}/signals/{name}`, decoded (as
/// [`PathId`]).
#[derive(Debug)]
pub(crate) struct PathIds(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path((first, second))) => Ok(PathIds(first, second)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the path's ids do not decode: {}", rejection.body_text()),
            )),
        }
    }
}

/// The `{id}` segment of a path, decoded; a segment that does not decode (invalid UTF-8
/// after percent-decoding) is a 400 `INVALID_REQUEST` in the service's JSON shape, not the
/// framework's plain-text rejection.
#[derive(Debug)]
pub(crate) struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the path's id does not decode: {}", rejection.body_text()),
            )),
        }
    }
}

//! Extractors that refuse bad input with a problem document, never axum's plain-text
//! rejections, and enforce the input limits of [`jobstream_core::limits`] where input enters.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use jobstream_core::limits::{self, MAX_BODY_BYTES, MAX_JSON_DEPTH};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::input::{self, BodyError};

/// A JSON request body (`Content-Type: application/json` or `…+json`), at most
/// [`MAX_BODY_BYTES`], nested at most [`MAX_JSON_DEPTH`] levels, without NUL characters.
#[derive(Debug)]
pub struct ApiJson(pub Value);

/// An optional JSON body: an empty body is `None` (any content type); anything else must
/// be JSON as for [`ApiJson`].
#[derive(Debug)]
pub struct OptionalJson(pub Option<Value>);

/// A JSON body parsed into the request body struct `T` (see [`crate::input`]): not an
/// object is a `400`; a field that does not fit a non-lenient type is a `422` naming it.
/// Lenient fields and unknown names are left for validation to report, all at once.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// An optional JSON body parsed into `T`: an empty body is `None`.
#[derive(Debug)]
pub struct OptionalBody<T>(pub Option<T>);

/// The `Idempotency-Key` header as sent (the service validates it).
#[derive(Debug)]
pub struct IdempotencyKey(pub Option<String>);

/// The HTTP header carrying an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

fn typed<T: input::Body>(value: Value) -> Result<T, ApiError> {
    input::parse_object(value).map_err(|e| match e {
        BodyError::NotObject => ApiError::BadRequest("the body must be a JSON object".into()),
        BodyError::Fields(errors) => ApiError::Unprocessable(errors),
    })
}

/// One path parameter that is UTF-8 and has no control characters; anything else names
/// no resource, so it is a `404`.
#[derive(Debug)]
pub struct PathParam(pub String);

/// A query string deserialized into `T`; a bad parameter is a `422` naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

fn is_json(parts: &Parts) -> bool {
    let Some(ct) = parts.headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("a JSON body may be at most {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::BadRequest(format!("the body could not be read: {}", e.body_text()))
        }
    })
}

/// Parses and checks a JSON body.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            ApiError::field(
                "body",
                format!("nested too deeply: a request may nest at most {MAX_JSON_DEPTH} levels"),
            )
        } else {
            ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
        }
    })?;
    limits::check_json(&value).map_err(|e| {
        let field = if e.path.is_empty() {
            "body".to_owned()
        } else {
            e.path
        };
        ApiError::field(field, e.message)
    })?;
    Ok(value)
}

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        if !is_json(&parts) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON: send Content-Type: application/json".into(),
            ));
        }
        let bytes = body_bytes(Request::from_parts(parts, body), state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        parse_json(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

impl<T: input::Body, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(value) = ApiJson::from_request(req, state).await?;
        typed(value).map(Body)
    }
}

impl<T: input::Body, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let OptionalJson(value) = OptionalJson::from_request(req, state).await?;
        value.map(typed).transpose().map(OptionalBody)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(IDEMPOTENCY_HEADER)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))
            })
            .transpose()
            .map(IdempotencyKey)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let shown: String = parts.uri.path().chars().take(200).collect();
        let not_found = || ApiError::NotFound(format!("no such resource: {shown}"));
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(p)) if !p.chars().any(char::is_control) => Ok(PathParam(p)),
            _ => Err(not_found()),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        // No store can hold NUL (nor is it a meaningful filter value).
        for pair in query.split('&') {
            if pair.contains("%00") {
                let name = pair.split('=').next().unwrap_or("query").replace("%00", "");
                return Err(ApiError::field(name, "must not contain the NUL character"));
            }
        }
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| {
                // serde names the parameter first: "limit: invalid digit found in string".
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_owned();
                let field = detail
                    .split_once(": ")
                    .map(|(f, _)| f)
                    .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or("query")
                    .to_owned();
                ApiError::field(field, detail)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_checked() {
        assert!(matches!(parse_json(b"{"), Err(ApiError::BadRequest(_))));
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        assert!(matches!(
            parse_json(deep.as_bytes()),
            Err(ApiError::Unprocessable(_))
        ));
        match parse_json(br#"{"payload": {"t": "\u0000"}}"#) {
            Err(ApiError::Unprocessable(e)) => assert_eq!(e[0].field, "payload.t"),
            other => panic!("{other:?}"),
        }
    }
}

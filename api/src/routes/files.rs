//! `/v1/files`: image uploads and downloads (thumbnails included), stored in a
//! JetStream object store bucket. The owner is kept in the object's metadata;
//! only the owner (or an admin) can download a file, anyone else gets a `404`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jobstream_core::files::{self, FileError, FileInfo, FileStore, NewFile};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::PathParam;
use crate::state::AppState;

/// The files bucket and the upload limit.
#[derive(Debug, Clone)]
pub struct FilesState {
    /// The bucket.
    pub store: FileStore,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
}

/// A stored file, as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    /// File id (use it as `file_id` of an `image.thumbnail` job).
    pub id: Uuid,
    /// Owner (`sub` of the uploader; a thumbnail belongs to its source's owner).
    pub owner: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// For a thumbnail: the file it was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_file: Option<Uuid>,
    /// Where to download it.
    pub url: String,
}

impl From<FileInfo> for FileView {
    fn from(f: FileInfo) -> Self {
        FileView {
            url: format!("/v1/files/{}", f.id),
            id: f.id,
            owner: f.owner,
            content_type: f.content_type,
            size: f.size,
            source_file: f.source_file,
        }
    }
}

/// `/v1/files` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/files", post(upload_file))
        .route("/v1/files/{id}", get(download_file))
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        tracing::error!(error = %e, "object store error");
        ApiError::Unavailable("the file store is unreachable; retry later".into())
    }
}

/// Upload an image (PNG, JPEG or WebP; the body is the file, `Content-Type` must match its bytes).
#[utoipa::path(
    post, path = "/v1/files", tag = "files",
    request_body(content = Vec<u8>, content_type = "image/png", description = "The image bytes (image/png, image/jpeg or image/webp)"),
    responses(
        (status = 201, description = "Stored", body = FileView, headers(("Location" = String, description = "URL of the file"))),
        (status = 413, description = "Larger than the upload limit", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not an accepted image type, or the bytes are not what Content-Type says", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(file_id = tracing::field::Empty), err(Debug, level = "info"))]
pub async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.files.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !files::IMAGE_TYPES.contains(&declared.as_str()) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be one of {} (got {declared:?})",
            files::IMAGE_TYPES.join(", ")
        )));
    }
    let too_large = || ApiError::PayloadTooLarge(format!("the upload limit is {limit} bytes"));
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| too_large())?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("the body is empty".into()));
    }
    match files::sniff_image_type(&bytes) {
        Some(actual) if actual == declared => {}
        actual => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the bytes are {}, not {declared}",
                actual.unwrap_or("not an accepted image")
            )));
        }
    }
    let id = Uuid::now_v7();
    tracing::Span::current().record("file_id", tracing::field::display(id));
    let info = state
        .files
        .store
        .put(
            &NewFile {
                id,
                owner: caller.sub.clone(),
                content_type: declared,
                source_file: None,
                job_id: None,
            },
            &bytes,
        )
        .await?;
    tracing::info!(size = info.size, "file stored");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/files/{id}"))],
        Json(FileView::from(info)),
    )
        .into_response())
}

/// Download a file: the owner's own files only (admins: all).
#[utoipa::path(
    get, path = "/v1/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The file's bytes, with its Content-Type"),
        (status = 404, description = "No such file (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(file_id = %id))]
pub async fn download_file(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    file_response(&state, &caller, &id).await
}

/// A stored file the caller may see, as a response (the REST route and the console's link).
pub(crate) async fn file_response(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no file {id}"));
    let file_id = Uuid::parse_str(id).map_err(|_| not_found())?;
    // Check ownership on the metadata before reading any content.
    let info: FileInfo = match state.files.store.info(file_id).await? {
        Some(info) if caller.may_see(&info.owner) => info,
        _ => return Err(not_found()),
    };
    let (_, bytes) = match state.files.store.get(file_id, info.size.max(1)).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let content_type = HeaderValue::from_str(&info.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
            (
                header::HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response())
}

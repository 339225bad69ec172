//! The console's static files, compiled into the binary and served under a path that
//! carries their content hash (`/ui/assets/<hash>/<name>`, computed by `build.rs`), so
//! they are cached for a year and an upgrade can never serve a stale copy.
//!
//! Third-party files are vendored under `api/assets/vendor/<name>-<version>/` with their
//! license: nothing is fetched at build or run time.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Hash of every asset: part of their URLs.
pub const HASH: &str = env!("UI_ASSETS_HASH");

/// Where the assets are served: `/ui/assets/<hash>`.
pub fn base() -> String {
    format!("/ui/assets/{HASH}")
}

/// Name, media type and bytes of each asset.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx-2.0.11/htmx.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx-ext-sse-2.2.4/sse.min.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    ),
];

/// `GET /ui/assets/{hash}/{name}`: a file of this build, cacheable for a year.
pub async fn serve(Path((hash, name)): Path<(String, String)>) -> Response {
    let found = FILES.iter().find(|(n, _, _)| *n == name);
    match found {
        Some((_, media_type, bytes)) if hash == HASH => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

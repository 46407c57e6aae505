//! The web app, embedded in the binary from `web/` so that `cargo install` works anywhere.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::reply::error_response;
use crate::protocol::ErrorCode;

#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "node_modules/*"]
#[exclude = "test/*"]
#[exclude = "*.test.*"]
#[exclude = "package-lock.json"]
struct Assets;

pub(crate) async fn index() -> Response {
    serve("index.html")
}

pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    let path = path.trim_end_matches('/');
    if Assets::get(path).is_some() {
        return serve(path);
    }
    let dir_index = format!("{path}/index.html");
    if Assets::get(&dir_index).is_some() {
        return serve(&dir_index);
    }
    error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such page")
}

fn serve(path: &str) -> Response {
    match Assets::get(path) {
        Some(file) => {
            // `.ts` would be guessed as an MPEG transport stream; `herald.d.ts` is text.
            let mime = if path.ends_with(".ts") {
                "text/plain; charset=utf-8".to_owned()
            } else {
                mime_guess::from_path(path)
                    .first_or_octet_stream()
                    .as_ref()
                    .to_owned()
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache".to_owned()),
                    // Public files: pages on other origins may `import` /herald.js from here.
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
                ],
                Body::from(file.data.into_owned()),
            )
                .into_response()
        }
        None => error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such page"),
    }
}

//! The web dashboard at `/dashboard`: static files built into the binary (no server to
//! run beside the registry, no front-end build step). The page holds no data: it signs
//! in (`POST /v1/sessions` with `session: true`, or a pasted key) and reads the JSON API
//! with that key, so it shows exactly what the key's account may see, and refreshes
//! every two seconds.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const CHARTS: &str = include_str!("dashboard/charts.js");
const PAGES: &str = include_str!("dashboard/pages.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Headers every dashboard file carries: no framing by other sites, no inline or
/// third-party scripts, no sniffing.
fn secured(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`.
pub(crate) async fn index() -> Response {
    secured("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{asset}`.
pub(crate) async fn asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "app.js" => secured("text/javascript; charset=utf-8", APP),
        "charts.js" => secured("text/javascript; charset=utf-8", CHARTS),
        "pages.js" => secured("text/javascript; charset=utf-8", PAGES),
        "style.css" => secured("text/css; charset=utf-8", STYLE),
        _ => (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}

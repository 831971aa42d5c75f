//! Mapping failures to HTTP answers: the JSON error responses for a request
//! that cannot be served (no response head from its component, a body over its
//! cap), each saying which limit was hit and which manifest key sets it.

use crate::app::LoadedComponent;
use crate::body::HostBody;
use crate::outcome::Outcome;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicBool, Ordering};

/// The error answer for a request whose component sent no response head.
pub(crate) fn failure_response(
    component: &LoadedComponent,
    outcome: Result<Outcome, tokio::task::JoinError>,
    body_too_large: &AtomicBool,
) -> Response<HostBody> {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": format!("component task failed: {e}") }),
            );
        }
    };
    if body_too_large.load(Ordering::Acquire) {
        return too_large(component, 0, component.limits.max_request_bytes());
    }
    let status = if outcome.timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else if !outcome.instantiated || outcome.budget_hit {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let message = outcome.describe(component);
    tracing::warn!(app = %component.app, component = %component.name, status = status.as_u16(), "{message}");
    let mut body = serde_json::json!({ "error": message, "component": &*component.name });
    if let Some(key) = outcome.limit_key() {
        body["limit"] = serde_json::json!(format!("[component.{}.limits] {key}", component.name));
    }
    let mut response = json_error(status, body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn too_large(c: &LoadedComponent, len: u64, max: u64) -> Response<HostBody> {
    let size = if len > 0 { format!("{len} bytes") } else { "more bytes".to_string() };
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        serde_json::json!({
            "error": format!(
                "request body of {size} is over the limit of {max} bytes for component '{}'; raise limits.max_request_bytes in [component.{}.limits]",
                c.name, c.name
            ),
            "limit": format!("[component.{}.limits] max_request_bytes", c.name),
        }),
    )
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<HostBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON of plain values"));
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes).map_err(|never| match never {}).boxed_unsync())
        .expect("static response parts")
}

pub(crate) fn json_error(status: StatusCode, body: serde_json::Value) -> Response<HostBody> {
    json_response(status, &body)
}

//! `unknown-model`: on any request, loads the model `not-granted-model` by name (which its
//! manifest does not grant) and answers with the `wasi:nn` error:
//! `{"error": data, "code": "security"}` with 403 (or 404 for not-found, 400 for
//! invalid-argument, 500 for anything else). Tests check that the message names the manifest key.
//! Should the load ever succeed, it answers 200 `{"loaded": "not-granted-model"}`.

use serde_json::json;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};
use wasmesh_guest_common::{load, respond_json};

const MODEL: &str = "not-granted-model";

struct UnknownModel;

impl Guest for UnknownModel {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        match load(MODEL) {
            Ok(()) => respond_json(out, 200, &json!({ "loaded": MODEL })),
            Err(e) => respond_json(out, e.http_status(), &e.to_json()),
        }
    }
}

wasi::http::proxy::export!(UnknownModel);

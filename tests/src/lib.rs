//! Support for wasmesh's end-to-end tests: locating the built binary, the test
//! model and the guest components; starting `wasmesh` processes on free ports;
//! a minimal HTTP/1.1 client (so tests see exactly what goes over the wire).
//!
//! A test whose prerequisites are missing is skipped locally but fails under `CI`
//! (`prerequisites()` decides), so nothing is skipped unnoticed there.

mod fixtures;
mod http;
mod postgres;
mod process;
mod proxy;
mod registry;
mod s3;
mod weights;

pub use fixtures::{
    CONCURRENT_PROMPTS, cache_dir, components_dir, lora_path, model_path, prerequisites, scratch, second_model_path,
    skip_or_fail, wasmesh_bin,
};
pub use http::{HttpResponse, Payload, call_with_key, post_json, request};
pub use postgres::Postgres;
pub use process::{Process, cpu_time_of, free_addr, runtime, wait_for};
pub use proxy::MeteredProxy;
pub use registry::{
    account_key, cli_json, registry_args, router_args, spawn_host, spawn_host_with_env, spawn_router, spawn_router_at,
    start_registry,
};
pub use s3::{S3_BUCKET, S3_KEY, S3_SECRET, S3Server};
pub use weights::{WeightsFabric, blake3_of};

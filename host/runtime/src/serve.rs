//! Serving HTTP: the accept loop, the per-request entry point ([`Host::handle`]),
//! the host's own `/health` and `/metrics` answers, and the count of requests in
//! flight.

use crate::body::{BoxError, HostBody, WithGuard};
use crate::failure::{json_error, json_response};
use crate::host::Host;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Host {
    /// Accepts connections on `listener` until `shutdown` resolves.
    pub async fn serve_with_shutdown(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let connections = Arc::new(tokio::sync::Semaphore::new(wasmesh_api::limit::MAX_CONNECTIONS));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            // Over the connection cap: close at once rather than hold a file open.
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections; closing a new one");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let host = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let host = host.clone();
                    async move { Ok::<_, std::convert::Infallible>(host.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(wasmesh_api::limit::HEADER_READ_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    /// Accepts connections on `listener` until the process ends.
    pub async fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending()).await
    }

    /// Handles one HTTP request (routing, limits, the guest, error mapping).
    pub async fn handle<B>(self: &Arc<Self>, req: http::Request<B>) -> Response<HostBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_string();
        if path == "/health" {
            return self.health();
        }
        if path == "/metrics" {
            return self.metrics();
        }
        let Some((component, inner)) = self.lookup(&path) else {
            let routes: Vec<String> = self.routes().into_iter().map(|(_, p, _)| p).collect();
            let mut response = json_error(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": format!("no route for {path}"), "routes": routes }),
            );
            // Tells a router that no component ran, so another host may serve it (a
            // deploy can reach this host after the router saw it elsewhere).
            response.headers_mut().insert(wasmesh_api::NO_ROUTE_HEADER, http::HeaderValue::from_static("1"));
            return response;
        };
        if self.paused.load(Ordering::Acquire) {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "this node is paused by its provider (`wasmesh host resume` brings it back); retry on another node" }),
            );
            // Tells a router that no component ran, so another node may serve it.
            response.headers_mut().insert(wasmesh_api::PAUSED_HEADER, http::HeaderValue::from_static("1"));
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
            return response;
        }
        let mut req = req;
        if let Some(inner) = inner {
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            if let Ok(uri) = format!("{inner}{query}").parse::<http::Uri>() {
                *req.uri_mut() = uri;
            }
        }
        let started = Instant::now();
        // In flight until the response body is done or dropped (a streamed answer
        // counts for as long as it streams), or this future is dropped. One app may
        // hold at most `caps.instances_per_app` of them.
        {
            let mut per_app = self.app_in_flight.lock().expect("per-app counts");
            let n = per_app.entry(component.app.clone()).or_default();
            if *n >= self.caps.instances_per_app {
                let cap = self.caps.instances_per_app;
                drop(per_app);
                let mut response = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "error": format!(
                        "app '{}' already runs {cap} requests on this node, the most one app may (--cap-instances-per-app); retry shortly",
                        component.app
                    ) }),
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                self.host_metrics.requests.with_label_values(&[&*component.app, "503"]).inc();
                return response;
            }
            *n += 1;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone(), component.app.clone());
        let response = self.invoke(&component, req).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        self.host_metrics.requests.with_label_values(&[&*component.app, response.status().as_str()]).inc();
        let response = response.map(|body| WithGuard { inner: body, _guard: guard }.boxed_unsync());
        tracing::debug!(
            app = %component.app,
            component = %component.name,
            %path,
            status = response.status().as_u16(),
            us = started.elapsed().as_micros() as u64,
            "request"
        );
        response
    }

    fn metrics(&self) -> Response<HostBody> {
        self.host_metrics.refresh(self);
        let mut text = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.metrics.gather(), &mut text) {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": e.to_string() }));
        }
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync())
            .expect("static response parts")
    }

    fn health(&self) -> Response<HostBody> {
        let ready = self.ready.load(Ordering::Acquire);
        let body = serde_json::json!({
            "status": if !ready { "starting" } else if self.is_paused() { "paused" } else { "ready" },
            "engine": self.inference.summary(),
            "models": self.inference.models(),
            "loaded": self.inference.loaded_models(),
            // Models and adapters (`MODEL:ADAPTER`) a request runs on at once.
            "warm": self.inference.catalog().into_iter().filter(|e| e.residency == wasmesh_engine::Residency::Warm).map(|e| e.name).collect::<Vec<_>>(),
            "served": self.served(),
            "in_flight": self.in_flight(),
            // Guest memory (linear memories and wasi:nn tensors) held now, and the budget.
            "instance_memory": { "used_bytes": self.budget.used(), "limit_bytes": self.budget.limit() },
            "routes": self.routes().into_iter().map(|(app, path, component)| serde_json::json!({"app": app, "path": path, "component": component})).collect::<Vec<_>>(),
        });
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &body)
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Host>, Arc<str>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut per_app = self.0.app_in_flight.lock().expect("per-app counts");
        if let Some(n) = per_app.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per_app.remove(&self.1);
            }
        }
    }
}

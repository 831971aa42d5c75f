//! The registry client: its connection and key, and the request plumbing every
//! call goes through (URLs, authentication, error answers, JSON).

use crate::error::{ClientError, Result, error_chain};
use serde::de::DeserializeOwned;
use std::time::Duration;
use wasmesh_api::wire::ErrorBody;

/// A registry client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub(crate) base: String,
    key: Option<String>,
}

impl Client {
    /// A client of the registry at `base` (e.g. `http://127.0.0.1:7070`), authenticating with `key`.
    pub fn new(base: &str, key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Every call ends: a stalled registry cannot hang a heartbeat loop or a
            // caller. Long polls and downloads set their own.
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("wasmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot create an HTTP client: {e}")))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), key })
    }

    /// The same client (sharing its connections) with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), key: Some(key.to_string()) }
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The registry's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub(crate) async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api { status, code: body.code, message: body.error },
            Err(_) => ClientError::Api {
                status,
                code: "http".into(),
                message: if text.is_empty() { format!("HTTP {status}") } else { text },
            },
        })
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, builder: reqwest::RequestBuilder) -> Result<T> {
        let response = self.send(builder).await?;
        response.json().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: format!("unexpected answer: {}", error_chain(&e)),
        })
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(reqwest::Method::POST, path).json(body)).await
    }

    pub(crate) async fn put<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.get("/health").await
    }
}

//! A whole node's start-up, as a library: fetch the models it starts with, build its
//! engine (serverless with a registry: [`OnDemand`]), make the Wasmtime host, load local
//! apps, pre-load, listen, join the fabric (register, heartbeats, deployments, router
//! links) and report ready. `wasmesh host` maps its flags onto [`NodeConfig`].

use crate::{Agent, AgentConfig, AgentError, FetchConfig, FetchedModels, OnDemand, fetch_models};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_client::Progress;
use wasmesh_engine::InferenceEngine;
use wasmesh_runtime::{Host, HostConfig};

/// How a node starts.
pub struct NodeConfig {
    /// With a registry: how weights are fetched (then any model or adapter the registry
    /// holds is fetched when first asked for: [`OnDemand`]). `None`: the engine serves
    /// what it was given.
    pub fetch: Option<FetchConfig>,
    /// With a registry: how the node joins the fabric (registration, heartbeats,
    /// deployments, router links).
    pub agent: Option<AgentConfig>,
    /// Models fetched from the registry before the node reports ready.
    pub models: Vec<String>,
    /// How long a request waits for a model or adapter the node must fetch first.
    pub fetch_wait: Duration,
    /// The Wasmtime host's settings (its metrics registry is the node's).
    pub host: HostConfig,
    /// App manifests served at their own paths.
    pub apps: Vec<PathBuf>,
    /// Load every model the engine knows before reporting ready.
    pub preload: bool,
    /// Where to serve HTTP.
    pub listen: SocketAddr,
    /// The control socket (`wasmesh host pause|resume|status|set`); `None`: none.
    pub control: Option<crate::ControlConfig>,
}

/// A started node: ready, listening, joined. Dropping it leaves the fabric.
pub struct Node {
    /// The Wasmtime host.
    pub host: Arc<Host>,
    /// The address it serves on.
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    _agent: Option<Agent>,
    _fetched: Option<FetchedModels>,
    control: Option<Control>,
}

/// The control socket's task; dropping it closes the socket and removes its file.
struct Control {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Node {
    /// Starts a node. `engine` builds the inference engine from the fetched model files
    /// (name → file); `progress` makes a progress reporter per fetched model.
    ///
    /// # Errors
    /// [`AgentError`], each naming the next step: a registry that refused, a model that
    /// cannot be fetched, an engine or app that cannot load, an address in use.
    pub async fn start(
        config: NodeConfig,
        engine: impl FnOnce(Vec<(String, PathBuf)>) -> Result<Arc<dyn InferenceEngine>, String>,
        progress: impl Fn(&str) -> Arc<dyn Progress>,
    ) -> Result<Self, AgentError> {
        // The HTTP address first: the BitTorrent session below takes any free port, and
        // must not take this one.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AgentError::Listen { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| AgentError::Listen { addr: config.listen, source })?;
        let mut fetched = None;
        if let Some(fetch) = &config.fetch {
            fetched = Some(fetch_models(fetch, &config.models, &config.host.metrics, progress).await?);
        }
        let files = fetched.as_ref().map(|f| f.files.clone()).unwrap_or_default();
        let mut inference = engine(files).map_err(AgentError::Engine)?;
        if let Some(fetched) = &fetched {
            // Serverless: any model or adapter the registry holds is fetched when first asked for.
            inference = Arc::new(OnDemand::new(inference, fetched.fetcher.clone(), config.fetch_wait));
        }
        let host = Host::new(config.host, inference)
            .map_err(|e| AgentError::Engine(format!("cannot create the Wasmtime engine: {e:#}")))?;
        for app in &config.apps {
            host.load_app_file(app)
                .await
                .map_err(|e| AgentError::App { path: app.clone(), reason: format!("{e:#}") })?;
        }
        if config.preload {
            for model in host.inference().models() {
                host.inference()
                    .preload(&model)
                    .await
                    .map_err(|e| AgentError::Engine(format!("cannot load model '{model}': {e}")))?;
            }
        }
        let agent = match config.agent {
            Some(agent) => Some(Agent::start(host.clone(), agent, Duration::from_secs(60)).await?),
            None => None,
        };
        let control = match config.control {
            Some(control) => {
                let path = control.socket.clone();
                let controlled = crate::control::Controlled {
                    host: host.clone(),
                    agent: agent.as_ref().map(crate::control::AgentHandle::of),
                    fetcher: fetched.as_ref().map(|f| f.fetcher.clone()),
                    config: control,
                };
                match crate::control::listen(controlled) {
                    Ok(task) => Some(Control { task, path }),
                    // A node of the fabric owns its data directory (its identity is there).
                    Err(e) if agent.is_some() => {
                        return Err(AgentError::Engine(format!(
                            "cannot open the control socket {}: {e}",
                            path.display()
                        )));
                    }
                    // Local hosts (no registry) may share the default one: the first keeps it.
                    Err(e) => {
                        tracing::warn!(socket = %path.display(), "this host has no control socket (pause, status): {e}");
                        None
                    }
                }
            }
            None => None,
        };
        host.set_ready(true);
        tracing::info!(%addr, engine = %host.inference().summary(), "host ready");
        Ok(Self { host, addr, listener, _agent: agent, _fetched: fetched, control })
    }

    /// The node's id in the fabric (`None` without a registry).
    pub fn node_id(&self) -> Option<&str> {
        self._agent.as_ref().map(|a| a.node_id.as_str())
    }

    /// Serves until `shutdown` resolves, then stops cleanly: the node pauses (routers
    /// stop sending it requests at its next report, within 100 ms), requests running
    /// finish (for at most `drain`), and only then does it leave the fabric.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> std::io::Result<()> {
        let Self { host, listener, _agent, _fetched, control, .. } = self;
        let draining = host.clone();
        let beat = _agent.as_ref().map(|a| a.beat_now.clone());
        let stop = async move {
            shutdown.await;
            draining.set_paused(true);
            if let Some(beat) = beat {
                beat.notify_one();
            }
            let running = draining.in_flight();
            tracing::info!(running, "stopping: paused, letting running requests finish");
            let deadline = tokio::time::Instant::now() + drain;
            while draining.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The routers' last report of this node said "not ready": none is mid-route.
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        let served = host.serve_with_shutdown(listener, stop).await;
        drop(control);
        served
    }
}

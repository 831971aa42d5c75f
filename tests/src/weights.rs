//! The weights fabric: a registry storing in s3s-fs behind a metered origin, with
//! the test model pushed, and hosts fetching it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::{model_path, wasmesh_bin};
use crate::process::{Process, free_addr, runtime};
use crate::proxy::MeteredProxy;
use crate::registry::registry_args;
use crate::s3::S3Server;

/// A registry storing in s3s-fs behind a metered proxy, with the test model pushed.
pub struct WeightsFabric {
    /// The registry.
    pub registry: Process,
    /// Its admin key.
    pub admin: String,
    /// A provider key for hosts.
    pub provider: String,
    /// The model as pushed.
    pub model: wasmesh_api::wire::ModelInfo,
    /// The proxy in front of the store: the origin's egress.
    pub origin: MeteredProxy,
    _s3: S3Server,
    dir: PathBuf,
}

impl WeightsFabric {
    /// Starts it under `dir`, the origin capped at `origin_bytes_per_s`; `None` when
    /// s3s-fs is missing (after [`skip_or_fail`]).
    ///
    /// [`skip_or_fail`]: crate::skip_or_fail
    pub fn start(dir: &Path, origin_bytes_per_s: Option<u64>) -> Option<Self> {
        let s3 = S3Server::start(dir)?;
        let origin = MeteredProxy::start(s3.addr(), origin_bytes_per_s);
        let store = S3Server::store_url(origin.addr);
        let addr = free_addr();
        let args = registry_args(addr, dir, &["--store", &store]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut registry =
            Process::spawn_program(&wasmesh_bin(), &args, &S3Server::credentials(), addr, dir.join("registry.log"));
        registry.wait_ready(Duration::from_secs(60));
        let admin = std::fs::read_to_string(dir.join("admin.key")).unwrap().trim().to_string();
        let client = wasmesh_client::Client::new(&format!("http://{addr}"), Some(admin.clone())).unwrap();
        let rt = runtime();
        let deployer = rt.block_on(client.create_key("deploy", &[wasmesh_api::wire::Scope::Deploy])).unwrap().key;
        let provider = rt.block_on(client.create_key("provider", &[wasmesh_api::wire::Scope::Provider])).unwrap().key;
        let model = rt
            .block_on(client.with_key(&deployer).push_model(&model_path(), "smollm2", &wasmesh_client::NoProgress))
            .unwrap();
        assert!(model.pieces.info_hash.is_some(), "the registry records the torrent's info hash");
        assert_eq!(model.pieces.sha1.len(), model.pieces.hashes.len());
        origin.reset();
        Some(Self { registry, admin, provider, model, origin, _s3: s3, dir: dir.to_path_buf() })
    }

    /// The registry's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.registry.addr)
    }

    /// A host fetching the model into its own data directory.
    /// Starts `wasmesh host` NAME fetching the model, with `extra` arguments.
    pub fn host(&self, name: &str, extra: &[&str]) -> Process {
        let addr = free_addr();
        let data = self.dir.join(name);
        let url = self.url();
        let mut args = vec![
            "host",
            "--registry",
            &url,
            "--key",
            &self.provider,
            "--name",
            name,
            "--model",
            "smollm2",
            "--p2p-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ];
        let (listen, data_s) = (addr.to_string(), data.display().to_string());
        args.extend(["--listen", &listen, "--data", &data_s]);
        args.extend(extra);
        Process::spawn(&args, addr, self.dir.join(format!("{name}.log")))
    }

    /// Where host `name` keeps the verified model.
    pub fn cached(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("models").join(format!("{}.gguf", self.model.blake3))
    }

    /// The registry's node list.
    pub fn nodes(&self) -> serde_json::Value {
        let client = wasmesh_client::Client::new(&self.url(), Some(self.admin.clone())).unwrap();
        serde_json::to_value(runtime().block_on(client.nodes()).unwrap()).unwrap()
    }
}

/// The blake3 of a file, hex.
pub fn blake3_of(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path).expect("open")).expect("read");
    hasher.finalize().to_hex().to_string()
}

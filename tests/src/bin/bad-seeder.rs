//! A malicious provider for the weights tests: a registered node that joins a
//! model's swarm as a seeder and serves every piece with one byte flipped.
//!
//! `bad-seeder REGISTRY PROVIDER_KEY MODEL_NAME MODEL_FILE DATA_DIR` prints
//! `seeding on ADDR as NODE` once peers can reach it, then serves until killed.

use librqbit::storage::{StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, Session, SessionOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, registry, key, model, file, data] = args.as_slice() else {
        anyhow::bail!("usage: bad-seeder REGISTRY PROVIDER_KEY MODEL_NAME MODEL_FILE DATA_DIR");
    };
    let data = PathBuf::from(data);
    std::fs::create_dir_all(&data)?;
    let client = wasmesh_client::Client::new(registry, Some(key.clone()))?;
    let identity = wasmesh_client::NodeIdentity::load_or_create(&data.join("node.key"))?;
    client.register_node(&identity, "bad-seeder").await?;
    let info = client.model(model).await?;
    let grant = client.join_swarm(&identity, &info.blake3, false).await?;
    let dict = wasmesh_api::torrent::info_dict(&info.blake3, info.size, &info.pieces).map_err(anyhow::Error::msg)?;
    std::fs::copy(file, data.join(wasmesh_api::torrent::file_name(&info.blake3)))?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let session = Session::new_with_opts(
        data.clone(),
        SessionOptions {
            dht: None,
            disable_local_service_discovery: true,
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: ([127, 0, 0, 1], port).into(),
                announce_port: Some(port),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let corrupt = Arc::new(AtomicBool::new(false));
    let handle = session
        .add_torrent(
            AddTorrent::from_bytes(wasmesh_api::torrent::metainfo(&dict, None)),
            Some(AddTorrentOptions {
                output_folder: Some(data.to_string_lossy().into_owned()),
                overwrite: true,
                trackers: Some(vec![grant.announce]),
                storage_factory: Some(Corrupting { corrupt: corrupt.clone() }.boxed()),
                ..Default::default()
            }),
        )
        .await?
        .into_handle()
        .ok_or_else(|| anyhow::anyhow!("torrent not added"))?;
    handle.wait_until_initialized().await?;
    anyhow::ensure!(handle.stats().finished, "the seeder's own copy did not check out");
    // From here on every read is an upload: flip a byte in each.
    corrupt.store(true, Ordering::Relaxed);
    eprintln!("seeding on 127.0.0.1:{port} as {}", identity.node_id());
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Clone)]
struct Corrupting {
    corrupt: Arc<AtomicBool>,
}

impl StorageFactory for Corrupting {
    type Storage = CorruptingStorage;

    fn create(
        &self,
        shared: &librqbit::ManagedTorrentShared,
        metadata: &librqbit::TorrentMetadata,
    ) -> anyhow::Result<CorruptingStorage> {
        let inner = librqbit::storage::filesystem::FilesystemStorageFactory::default().create(shared, metadata)?;
        Ok(CorruptingStorage { inner: Box::new(inner), corrupt: self.corrupt.clone() })
    }

    fn clone_box(&self) -> librqbit::storage::BoxStorageFactory {
        self.clone().boxed()
    }
}

struct CorruptingStorage {
    inner: Box<dyn TorrentStorage>,
    corrupt: Arc<AtomicBool>,
}

impl TorrentStorage for CorruptingStorage {
    fn init(
        &mut self,
        shared: &librqbit::ManagedTorrentShared,
        metadata: &librqbit::TorrentMetadata,
    ) -> anyhow::Result<()> {
        self.inner.init(shared, metadata)
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        self.inner.pread_exact(file_id, offset, buf)?;
        if self.corrupt.load(Ordering::Relaxed) && !buf.is_empty() {
            buf[0] ^= 0xff;
        }
        Ok(())
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        self.inner.pwrite_all(file_id, offset, buf)
    }

    fn remove_file(&self, file_id: usize, filename: &Path) -> anyhow::Result<()> {
        self.inner.remove_file(file_id, filename)
    }

    fn remove_directory_if_empty(&self, path: &Path) -> anyhow::Result<()> {
        self.inner.remove_directory_if_empty(path)
    }

    fn ensure_file_length(&self, file_id: usize, length: u64) -> anyhow::Result<()> {
        self.inner.ensure_file_length(file_id, length)
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(CorruptingStorage { inner: self.inner.take()?, corrupt: self.corrupt.clone() }))
    }
}

//! An S3-compatible object store (s3s-fs) of the test's own, and how the registry
//! reaches it.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixtures::{cache_dir, skip_or_fail};
use crate::process::{Process, free_addr};

/// The access key of [`S3Server`].
pub const S3_KEY: &str = "wasmesh-test-access";
/// The secret key of [`S3Server`].
pub const S3_SECRET: &str = "wasmesh-test-secret-key";
/// The bucket [`S3Server`] creates.
pub const S3_BUCKET: &str = "artifacts";

/// An s3s-fs server (an S3-compatible server that checks request signatures,
/// installed by `deploy/setup.sh`) on a free port, storing under a scratch folder.
pub struct S3Server {
    process: Process,
}

impl S3Server {
    /// Starts one under `dir/s3`; `None` (after [`skip_or_fail`]) when s3s-fs is missing.
    pub fn start(dir: &Path) -> Option<Self> {
        let bin = cache_dir().join("tools/bin/s3s-fs");
        if !bin.is_file() {
            skip_or_fail(&format!("{} is missing (run `bash deploy/setup.sh`)", bin.display()));
            return None;
        }
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let addr = free_addr();
        let port = addr.port().to_string();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--access-key",
            S3_KEY,
            "--secret-key",
            S3_SECRET,
            root.to_str().unwrap(),
        ];
        let process = Process::spawn_program(&bin, &args, &[], addr, dir.join("s3.log"));
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "s3s-fs did not start:\n{}", process.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { process })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// The registry's `--store` URL for this server reached at `endpoint` (itself, or
    /// a [`MeteredProxy`] in front of it).
    ///
    /// [`MeteredProxy`]: crate::MeteredProxy
    pub fn store_url(endpoint: SocketAddr) -> String {
        format!("s3://{S3_BUCKET}?endpoint=http://{endpoint}&region=us-east-1&allow_http=true")
    }

    /// The environment the registry needs to sign its requests.
    pub fn credentials() -> [(&'static str, &'static str); 2] {
        [("AWS_ACCESS_KEY_ID", S3_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET)]
    }
}

//! Support for wasmesh's end-to-end tests: locating the built binary, the test
//! model and the guest components; starting `wasmesh` processes on free ports;
//! a minimal HTTP/1.1 client (so tests see exactly what goes over the wire).
//!
//! A test whose prerequisites are missing is skipped locally but fails under `CI`
//! (`prerequisites()` decides), so nothing is skipped unnoticed there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Eight short prompts of different lengths, for concurrency tests.
pub const CONCURRENT_PROMPTS: [&str; 8] = [
    "Name a fruit.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Count from one to five.",
    "What colour is the sky?",
    "Give me a synonym for happy.",
    "Explain gravity in one sentence.",
    "What is two plus two?",
];

/// wasmesh's cache folder: `$WASMESH_CACHE`, or `~/.cache/wasmesh`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMESH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wasmesh"))
}

/// The test model (SmolLM2-135M-Instruct Q4_1), fetched by `deploy/setup.sh`.
pub fn model_path() -> PathBuf {
    cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A test LoRA adapter for the test model (`seed` 1 or 2), written by
/// `deploy/make-test-lora.py` through `deploy/setup.sh`.
pub fn lora_path(seed: u32) -> PathBuf {
    cache_dir().join(format!("models/smollm2-test-lora-{seed}.gguf"))
}

/// Where `guest-components/build.sh` put the components.
pub fn components_dir() -> PathBuf {
    std::env::var_os("WASMESH_COMPONENTS").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("components"))
}

/// The `wasmesh` binary: `$WASMESH_BIN`, or the one next to this test executable
/// (`target/<profile>/wasmesh`).
pub fn wasmesh_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WASMESH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    profile_dir.join("wasmesh")
}

/// Whether everything the end-to-end tests need is present. Under `CI` a missing
/// piece is a failure; locally the test is skipped with a note.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !wasmesh_bin().is_file() {
        missing.push(format!("{} (run `cargo build -p wasmesh`)", wasmesh_bin().display()));
    }
    for p in [model_path(), lora_path(1), lora_path(2)] {
        if !p.is_file() {
            missing.push(format!("{} (run `bash deploy/setup.sh`)", p.display()));
        }
    }
    for c in ["chat", "hello", "loop_forever", "memory_bomb", "unknown_model", "embeddings", "unknown_import", "openai"]
    {
        let p = components_dir().join(format!("{c}.wasm"));
        if !p.is_file() {
            missing.push(format!("{} (run `bash guest-components/build.sh`)", p.display()));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing test prerequisites:\n  {}", missing.join("\n  "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// A fresh, empty scratch folder for one test (`$TMP/wasmesh-test-NAME-PID`).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// A single-threaded Tokio runtime for a test's async client calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime")
}

/// Polls `check` every 100 ms until it holds, or panics after `timeout` naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free port on 127.0.0.1, never one this process was given before.
///
/// The port is free when picked but nothing holds it until the process it is for
/// binds it, and the kernel may hand the same port to the next `bind(:0)` in that
/// window: a test that picks a registry's address and then starts PostgreSQL on
/// another picked port once got the same one for both.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.port()) {
            return addr;
        }
    }
}

/// A `wasmesh` process, killed on drop. Its stderr is kept for failure messages.
pub struct Process {
    child: Child,
    log: PathBuf,
    /// The HTTP address it serves.
    pub addr: SocketAddr,
}

impl Process {
    /// Runs `wasmesh ARGS` and returns at once.
    pub fn spawn(args: &[&str], addr: SocketAddr, log: PathBuf) -> Self {
        Self::spawn_program(&wasmesh_bin(), args, &[], addr, log)
    }

    /// Runs `program ARGS` with extra environment variables and returns at once.
    pub fn spawn_program(program: &Path, args: &[&str], envs: &[(&str, &str)], addr: SocketAddr, log: PathBuf) -> Self {
        let file = std::fs::File::options().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info,llama_cpp_2=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self { child, log, addr }
    }

    /// Runs a prepared command (its stderr goes to `log`) and returns at once.
    pub fn from_command(mut command: Command, addr: SocketAddr, log: PathBuf) -> Self {
        let file = std::fs::File::options().create(true).append(true).open(&log).expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
        Self { child, log, addr }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until `GET /health` answers 200, or panics with the process's log.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wasmesh exited ({status}) before it was ready:\n{}", self.log());
            }
            if let Ok(r) = request(self.addr, "GET", "/health", &[], None)
                && r.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("wasmesh not ready after {timeout:?}:\n{}", self.log());
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON, or a panic that shows it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Body framing for [`request`].
pub enum Payload<'a> {
    /// With `Content-Length`.
    Sized(&'a [u8]),
    /// `Transfer-Encoding: chunked`, in one chunk (no length announced up front).
    Chunked(&'a [u8]),
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Payload<'_>>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &body {
        Some(Payload::Sized(b)) => head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
        Some(Payload::Chunked(_)) => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        None => head.push_str("\r\n"),
    }
    stream.write_all(head.as_bytes())?;
    match body {
        Some(Payload::Sized(b)) => {
            // The server may answer (413) and close before reading it all.
            let _ = stream.write_all(b);
        }
        Some(Payload::Chunked(b)) => {
            let _ = stream.write_all(format!("{:x}\r\n", b.len()).as_bytes());
            let _ = stream.write_all(b);
            let _ = stream.write_all(b"\r\n0\r\n\r\n");
        }
        None => {}
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

/// POSTs JSON and returns the response.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("json");
    request(addr, "POST", path, &[("Content-Type", "application/json")], Some(Payload::Sized(&bytes)))
        .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
}

/// The arguments of `wasmesh registry` listening on `addr` with its state in
/// `dir/registry` and its first admin key written to `dir/admin.key`, plus `extra`.
pub fn registry_args(addr: SocketAddr, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "registry".into(),
        "--listen".into(),
        addr.to_string(),
        "--data".into(),
        dir.join("registry").display().to_string(),
        "--admin-key-file".into(),
        dir.join("admin.key").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts `wasmesh registry` (see [`registry_args`]), waits until it answers, and
/// returns it with its admin key.
pub fn start_registry(dir: &Path, extra: &[&str]) -> (Process, String) {
    let addr = free_addr();
    let args = registry_args(addr, dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut registry = Process::spawn(&args, addr, dir.join("registry.log"));
    registry.wait_ready(Duration::from_secs(60));
    let admin = std::fs::read_to_string(dir.join("admin.key")).expect("the registry wrote its admin key");
    (registry, admin.trim().to_string())
}

/// A PostgreSQL server of the test's own: `initdb` into a scratch folder and
/// `postgres` on a free loopback port (as the `postgres` user when the tests run as
/// root, which PostgreSQL requires), stopped when dropped. The server binaries come
/// from the distribution's `postgresql` package, which `deploy/setup.sh` installs.
pub struct Postgres {
    _server: Process,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").is_file() && d.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    dirs.pop()
}

#[cfg(unix)]
fn postgres_user() -> Option<(u32, u32)> {
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

impl Postgres {
    /// Starts one under `dir`; `Err` says what is missing.
    #[cfg(unix)]
    pub fn start(dir: &Path) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let bin =
            postgres_bin_dir().ok_or("no PostgreSQL server under /usr/lib/postgresql (run `bash deploy/setup.sh`)")?;
        let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let user = if is_root { Some(postgres_user().ok_or("no `postgres` user to run the server as")?) } else { None };
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = user {
            for d in [dir, data.as_path()] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", d.display()))?;
            }
        }
        let as_user = |command: &mut Command| {
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args([
            "-D",
            data.to_str().unwrap_or_default(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        as_user(&mut initdb);
        let out = initdb.output().map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let addr = free_addr();
        let port = addr.port().to_string();
        let mut server = Command::new(bin.join("postgres"));
        server.args([
            "-D",
            data.to_str().unwrap_or_default(),
            "-p",
            &port,
            "-k",
            data.to_str().unwrap_or_default(),
            "-c",
            "listen_addresses=127.0.0.1",
        ]);
        as_user(&mut server);
        let log = dir.join("postgres.log");
        let _ = std::fs::File::create(&log);
        if let Some((uid, gid)) = user {
            let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
        }
        let mut server = Process::from_command(server, addr, log);
        let started = Instant::now();
        loop {
            if !server.is_running() {
                return Err(format!("postgres exited at start:\n{}", server.log()));
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("postgres not ready after 30 s:\n{}", server.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { _server: server, url: format!("postgres://postgres@127.0.0.1:{port}/postgres") })
    }
}

/// Under `CI` a missing prerequisite fails the test; locally it is skipped with a
/// note. Returns false (skip).
pub fn skip_or_fail(msg: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

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
    pub fn store_url(endpoint: SocketAddr) -> String {
        format!("s3://{S3_BUCKET}?endpoint=http://{endpoint}&region=us-east-1&allow_http=true")
    }

    /// The environment the registry needs to sign its requests.
    pub fn credentials() -> [(&'static str, &'static str); 2] {
        [("AWS_ACCESS_KEY_ID", S3_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET)]
    }
}

/// A TCP proxy in front of a server (the object store) that counts the bytes the
/// server sends (its egress) and can cap them to a rate shared by all connections,
/// like an origin's uplink. Runs on its own threads until dropped.
pub struct MeteredProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    egress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl MeteredProxy {
    /// A proxy to `upstream`, its egress capped at `bytes_per_s` (`None`: uncapped).
    pub fn start(upstream: SocketAddr, bytes_per_s: Option<u64>) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let egress = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // A token bucket shared by every connection: (tokens, last refill).
        let bucket = Arc::new(Mutex::new((0f64, Instant::now())));
        let (egress2, stop2) = (egress.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let _ = client.set_nonblocking(false);
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let (egress, bucket, stop) = (egress2.clone(), bucket.clone(), stop2.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(rate) = bytes_per_s {
                            take_tokens(&bucket, rate as f64, n as f64);
                        }
                        egress.fetch_add(n as u64, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) || c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { addr, egress, stop }
    }

    /// Bytes the server has sent through the proxy so far.
    pub fn egress(&self) -> u64 {
        self.egress.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.egress.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for MeteredProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits until `n` bytes may pass a bucket refilled at `rate` bytes/s (at most a
/// tenth of a second's worth banked, so bursts stay short).
fn take_tokens(bucket: &std::sync::Mutex<(f64, Instant)>, rate: f64, n: f64) {
    loop {
        let wait = {
            let mut b = bucket.lock().expect("bucket lock");
            let now = Instant::now();
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate / 10.0 + n);
            b.1 = now;
            if b.0 >= n {
                b.0 -= n;
                return;
            }
            (n - b.0) / rate
        };
        std::thread::sleep(Duration::from_secs_f64(wait.min(0.05)));
    }
}

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

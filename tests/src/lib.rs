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

/// The `wasmesh` binary next to this test executable (`target/<profile>/wasmesh`).
pub fn wasmesh_bin() -> PathBuf {
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

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
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

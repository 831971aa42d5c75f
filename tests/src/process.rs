//! Running things: `wasmesh` (or any) processes killed on drop, free loopback
//! ports, polling until a condition holds, and a Tokio runtime for async calls.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::wasmesh_bin;
use crate::http::request;

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

    /// Sends SIGTERM (what a service manager sends to stop a service) and waits up to
    /// `timeout` for the process to exit; its exit status, or `None` if it did not.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") << 10
    }

    /// The most resident memory it has had since it started, in bytes (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") << 10
    }

    /// The CPU time it has used so far, user and system (see [`cpu_time_of`]).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.child.id())
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with(field))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU time process `pid` has used so far, user and system (`/proc/PID/stat`, in
/// the kernel's 100 Hz clock ticks); zero for a process that is gone.
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are the 14th and 15th fields; `fields` starts at the 3rd.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

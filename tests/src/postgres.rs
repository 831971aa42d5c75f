//! A PostgreSQL server of the test's own, for the registry's PostgreSQL backend.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Process, free_addr};

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

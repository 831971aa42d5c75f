//! Running a probe command without letting it hang the host.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a probe command may run before it is killed (a wedged GPU driver can hang `nvidia-smi`).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Where `program` is on `PATH`, if it is.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Runs `program` (looked up on `PATH`) and returns its stdout when it exits successfully within
/// [`TIMEOUT`]; `None` when it is missing, fails, prints non-UTF-8 or runs too long (it is then killed).
pub(crate) fn run(program: &str, args: &[&str]) -> Option<String> {
    run_with_timeout(program, args, TIMEOUT)
}

fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let path = find_on_path(program)?;
    let deadline = Instant::now() + timeout;
    let mut child =
        Command::new(path).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    // Read stdout on a thread so a chatty child cannot block on a full pipe while we wait.
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let result = stdout.read_to_end(&mut buf).map(|_| buf);
        let _ = tx.send(result);
    });
    let output = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok().and_then(Result::ok);
    // Stdout closed (or the deadline passed): wait for the exit until the deadline, then kill.
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return if status.success() { String::from_utf8(output?).ok() } else { None },
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn runs_and_times_out() {
        assert_eq!(run("sh", &["-c", "echo hi"]).as_deref(), Some("hi\n"));
        assert_eq!(run("sh", &["-c", "echo hi; exit 3"]), None);
        assert_eq!(run("wasmesh-no-such-program", &[]), None);
        let start = Instant::now();
        assert_eq!(run_with_timeout("sleep", &["30"], Duration::from_millis(200)), None);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

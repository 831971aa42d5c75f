//! A metering, rate-capping TCP proxy: an object store's egress as an origin's
//! uplink.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

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

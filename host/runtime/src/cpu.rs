//! Each app's share of the node's cores for guest code.
//!
//! Guests yield at every epoch tick (10 ms). At each tick a guest is charged the time it
//! ran since it last resumed, at most two ticks (time spent waiting on the host, such as
//! a `wasi:nn` generation, is not guest code), to its app's account. The account refills
//! at `cores` seconds per second and holds at most [`BURST`] of them per core; a guest
//! whose app has spent more sleeps until the debt is paid, as a cgroup's `cpu.max` quota
//! would throttle it. So one tenant's busy loops take at most its share of the cores,
//! and the rest stay free for other tenants' guests, the HTTP and QUIC tasks and the
//! inference threads. Guests that finish within a tick (most handlers) are never charged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an app may run beyond its share in one burst, per core of it.
pub(crate) const BURST: Duration = Duration::from_millis(100);

/// One app's account of guest time.
#[derive(Debug)]
pub(crate) struct AppCpu {
    cores: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Seconds of guest time the app may still run (negative: its debt).
    balance: f64,
    refilled: Instant,
}

impl AppCpu {
    pub(crate) fn new(cores: f64) -> Self {
        let cores = if cores.is_finite() && cores > 0.0 { cores } else { 1.0 };
        Self { cores, bucket: Mutex::new(Bucket { balance: BURST.as_secs_f64() * cores, refilled: Instant::now() }) }
    }

    /// Charges `ran` of guest time at `now`; returns how long the guest must wait
    /// before it runs again (zero while the app is within its share).
    pub(crate) fn charge(&self, ran: Duration, now: Instant) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let refill = now.saturating_duration_since(bucket.refilled).as_secs_f64() * self.cores;
        bucket.refilled = bucket.refilled.max(now);
        bucket.balance = (bucket.balance + refill).min(BURST.as_secs_f64() * self.cores);
        bucket.balance -= ran.as_secs_f64();
        if bucket.balance >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.balance / self.cores) }
    }
}

/// The cores an app may use by default: all but one, at least one, so that one tenant
/// never holds every core of a node.
pub fn default_app_cores() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_within_its_share_never_waits_and_one_past_it_waits_for_its_debt() {
        let cpu = AppCpu::new(1.0);
        let start = Instant::now();
        // 10 ms of guest time every 10 ms of wall time is exactly one core: no wait.
        for i in 1..=50 {
            assert_eq!(cpu.charge(Duration::from_millis(10), start + Duration::from_millis(10 * i)), Duration::ZERO);
        }
        // Fifteen guests each charging 10 ms in the same instant spend the 100 ms burst,
        // then wait for their debt to be paid.
        let now = start + Duration::from_millis(510);
        let waits: Vec<Duration> = (0..15).map(|_| cpu.charge(Duration::from_millis(10), now)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero), "{waits:?}");
        assert!(waits[14].abs_diff(Duration::from_millis(50)) < Duration::from_millis(1), "{waits:?}");
        // Two cores pay the same debt twice as fast.
        let two = AppCpu::new(2.0);
        let wait = (0..30).map(|_| two.charge(Duration::from_millis(10), now)).last().unwrap();
        assert!(wait.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1), "{wait:?}");
    }
}

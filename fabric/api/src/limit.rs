//! A token bucket per caller: the rate limits of the registry and the routers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket per name.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` tokens a second, bursts of `2 × rate`.
    pub fn new(rate: f64) -> Self {
        Self { rate, burst: (rate * 2.0).max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `name`; `Err(seconds to wait)` when there is none.
    pub fn take(&self, name: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 100_000 {
            // Forget callers idle long enough to have refilled: bounded memory
            // however many addresses show up.
            let full = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, (_, t)| now.duration_since(*t) < full);
        }
        // Looked up by `&str` first: a known caller costs no allocation.
        if !buckets.contains_key(name) {
            buckets.insert(name.to_string(), (self.burst, now));
        }
        let (tokens, last) = buckets.get_mut(name).expect("inserted above");
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil() as u64)
        }
    }
}

/// Connections an HTTP server (router, host) holds open at once; past it new ones are
/// closed at once, so a flood of idle connections cannot exhaust the process's files.
pub const MAX_CONNECTIONS: usize = 16_384;

/// How long a client may take to send a request's headers (slowloris).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_bursts_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(1.0);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        assert_eq!(limiter.take("a"), Err(1));
        assert!(limiter.take("b").is_ok(), "buckets are per name");
    }
}

//! Shared helpers for wasmesh's benchmarks (see `benches/*.rs`).

use std::time::Duration;

/// The p-th percentile (0..=100) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Median of `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

/// Runs `wrk` against `url` and returns requests/s, or why it could not.
pub fn wrk_rps(url: &str, connections: u32, seconds: u32) -> Result<f64, String> {
    let out = std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), url])
        .output()
        .map_err(|e| format!("wrk not runnable ({e}); run `bash deploy/setup.sh`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    if let Some(line) = non2xx {
        return Err(format!("wrk saw errors: {line}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").map(|v| v.trim().parse::<f64>()))
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?
        .map_err(|e| e.to_string())
}

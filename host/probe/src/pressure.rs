//! Memory pressure from the kernel's paging counters (Linux `/proc/vmstat`).
//!
//! Free memory says little (the page cache fills it); what hurts a node serving models is paging:
//! pages going to and from swap, and major faults (a page that had to be read from disk, e.g. a
//! model's mmap'd weights evicted and faulted back in). [`PressureMonitor`] turns those counters
//! into per-second rates between two samples (normally one heartbeat interval apart).

use std::time::{Duration, Instant};
use wasmesh_api::wire::MemoryPressure;

/// Rates above which a node counts as under memory pressure (and stops taking requests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureThresholds {
    /// Swap pages (in plus out) per second.
    pub swap_pages_per_s: f64,
    /// Major page faults per second.
    pub major_faults_per_s: f64,
}

impl Default for PressureThresholds {
    /// 100 swap pages/s and 500 major faults/s.
    ///
    /// A healthy node swaps essentially nothing; 100 pages/s (about 400 KiB/s with 4 KiB pages)
    /// sustained over a whole heartbeat interval means the working set no longer fits in RAM,
    /// and inference latency will follow. Major faults are also normal in bursts (process start,
    /// a model's weights mmap'd and read in for the first time, where readahead keeps the count
    /// low), so their bar is higher: hundreds per second sustained over the interval is the page
    /// cache thrashing, i.e. weights evicted and read back again and again.
    fn default() -> Self {
        PressureThresholds { swap_pages_per_s: 100.0, major_faults_per_s: 500.0 }
    }
}

/// The `/proc/vmstat` counters the monitor uses (cumulative since boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmCounters {
    /// `pswpin`: pages swapped in.
    pub pswpin: u64,
    /// `pswpout`: pages swapped out.
    pub pswpout: u64,
    /// `pgmajfault`: major page faults.
    pub pgmajfault: u64,
}

/// Parses the counters out of `/proc/vmstat` (`name value` lines). Missing or unparsable
/// counters are 0 (a kernel without swap support has no `pswp*` lines).
pub fn parse_vmstat(text: &str) -> VmCounters {
    let mut counters = VmCounters::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else { continue };
        let Ok(value) = value.parse::<u64>() else { continue };
        match name {
            "pswpin" => counters.pswpin = value,
            "pswpout" => counters.pswpout = value,
            "pgmajfault" => counters.pgmajfault = value,
            _ => {}
        }
    }
    counters
}

/// The pressure between two samples `elapsed` apart. A counter that went backwards (reset or
/// wrapped) counts as no activity, and a zero interval gives zero rates.
pub fn rates(
    prev: &VmCounters,
    now: &VmCounters,
    elapsed: Duration,
    thresholds: &PressureThresholds,
) -> MemoryPressure {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return MemoryPressure::default();
    }
    let swapped = now.pswpin.saturating_sub(prev.pswpin).saturating_add(now.pswpout.saturating_sub(prev.pswpout));
    let swap_pages_per_s = swapped as f64 / secs;
    let major_faults_per_s = now.pgmajfault.saturating_sub(prev.pgmajfault) as f64 / secs;
    MemoryPressure {
        swap_pages_per_s,
        major_faults_per_s,
        under_pressure: swap_pages_per_s > thresholds.swap_pages_per_s
            || major_faults_per_s > thresholds.major_faults_per_s,
    }
}

/// Samples memory pressure: each [`sample`](Self::sample) gives the rates since the previous one.
#[derive(Debug, Clone)]
pub struct PressureMonitor {
    thresholds: PressureThresholds,
    last: Option<(VmCounters, Instant)>,
}

impl PressureMonitor {
    /// A monitor with no sample yet.
    pub fn new(thresholds: PressureThresholds) -> Self {
        PressureMonitor { thresholds, last: None }
    }

    /// The thresholds it judges by.
    pub fn thresholds(&self) -> PressureThresholds {
        self.thresholds
    }

    /// Reads `/proc/vmstat` and returns the pressure since the previous sample. The first sample,
    /// a failed read, and every sample on systems other than Linux give zero rates (not under pressure).
    pub fn sample(&mut self) -> MemoryPressure {
        match read_vmstat() {
            Some(counters) => self.observe(counters, Instant::now()),
            None => MemoryPressure::default(),
        }
    }

    /// Records counters read at `at` and returns the pressure since the previous observation
    /// (zero rates for the first). [`sample`](Self::sample) calls this; tests and other counter
    /// sources may call it directly.
    pub fn observe(&mut self, counters: VmCounters, at: Instant) -> MemoryPressure {
        let pressure = match &self.last {
            Some((prev, then)) => rates(prev, &counters, at.saturating_duration_since(*then), &self.thresholds),
            None => MemoryPressure::default(),
        };
        self.last = Some((counters, at));
        pressure
    }
}

#[cfg(target_os = "linux")]
fn read_vmstat() -> Option<VmCounters> {
    std::fs::read_to_string("/proc/vmstat").ok().map(|text| parse_vmstat(&text))
}

#[cfg(not(target_os = "linux"))]
fn read_vmstat() -> Option<VmCounters> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMSTAT: &str = "nr_free_pages 5373049\nnr_zone_inactive_anon 12\npgpgin 1883716\npgpgout 6279348\n\
        pswpin 120\npswpout 4520\npgfault 85203125\npgmajfault 10342\npgrefill 0\n";

    fn counters(pswpin: u64, pswpout: u64, pgmajfault: u64) -> VmCounters {
        VmCounters { pswpin, pswpout, pgmajfault }
    }

    #[test]
    fn parses_vmstat() {
        assert_eq!(parse_vmstat(VMSTAT), counters(120, 4520, 10342));
        assert_eq!(parse_vmstat("pgmajfault\npswpin x\nnr_free_pages 1\n"), VmCounters::default());
    }

    #[test]
    fn no_activity_is_calm() {
        let c = counters(120, 4520, 10342);
        let p = rates(&c, &c, Duration::from_secs(10), &PressureThresholds::default());
        assert_eq!(p, MemoryPressure { swap_pages_per_s: 0.0, major_faults_per_s: 0.0, under_pressure: false });
        // Some paging below the bar is still fine.
        let later = counters(120 + 300, 4520 + 300, 10342 + 2000);
        let p = rates(&c, &later, Duration::from_secs(10), &PressureThresholds::default());
        assert_eq!((p.swap_pages_per_s, p.major_faults_per_s, p.under_pressure), (60.0, 200.0, false));
    }

    #[test]
    fn swap_storm_is_pressure() {
        let prev = counters(0, 0, 0);
        let now = counters(20_000, 30_000, 100);
        let p = rates(&prev, &now, Duration::from_secs(10), &PressureThresholds::default());
        assert_eq!(p.swap_pages_per_s, 5000.0);
        assert!(p.under_pressure);
        let thrash = counters(0, 0, 60_000);
        assert!(rates(&prev, &thrash, Duration::from_secs(10), &PressureThresholds::default()).under_pressure);
    }

    #[test]
    fn reset_counters_are_not_huge() {
        let prev = counters(1_000_000, 2_000_000, u64::MAX - 5);
        let now = counters(10, 0, 3);
        let p = rates(&prev, &now, Duration::from_secs(1), &PressureThresholds::default());
        assert_eq!((p.swap_pages_per_s, p.major_faults_per_s, p.under_pressure), (0.0, 0.0, false));
    }

    #[test]
    fn zero_elapsed_does_not_divide() {
        let p = rates(&counters(0, 0, 0), &counters(500, 500, 500), Duration::ZERO, &PressureThresholds::default());
        assert_eq!(p, MemoryPressure::default());
    }

    #[test]
    fn monitor_rates_between_observations() {
        let mut monitor = PressureMonitor::new(PressureThresholds::default());
        let t0 = Instant::now();
        assert_eq!(monitor.observe(counters(0, 0, 0), t0), MemoryPressure::default());
        let p = monitor.observe(counters(1000, 1000, 0), t0 + Duration::from_secs(2));
        assert_eq!(p.swap_pages_per_s, 1000.0);
        assert!(p.under_pressure);
        let p = monitor.observe(counters(1000, 1000, 0), t0 + Duration::from_secs(4));
        assert!(!p.under_pressure);
    }

    #[test]
    fn real_sample_never_panics() {
        let mut monitor = PressureMonitor::new(PressureThresholds::default());
        assert_eq!(monitor.sample(), MemoryPressure::default());
        let p = monitor.sample();
        assert!(p.swap_pages_per_s >= 0.0 && p.major_faults_per_s >= 0.0);
    }
}

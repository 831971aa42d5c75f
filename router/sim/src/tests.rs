//! The simulator's own checks: it replays exactly from its seed, every policy sees the same
//! workload, and a bad configuration is an error.

use wasmesh_policy::PolicyConfig;

use crate::{Policy, SimConfig, SimReport, run};

fn small() -> SimConfig {
    SimConfig {
        nodes: 300,
        models: 40,
        ticks: 60,
        warmup: 30,
        churn: 0.002,
        latency_samples: 0,
        ..SimConfig::default()
    }
}

#[test]
fn simulation_replays_exactly_from_its_seed() {
    let strip = |mut r: SimReport| {
        for p in &mut r.policies {
            p.run_s = 0.0;
        }
        r
    };
    let mut serial = small();
    serial.parallel = false;
    let a = strip(run(&small()).unwrap());
    let b = strip(run(&serial).unwrap());
    assert_eq!(a.policies, b.policies, "threads or not, the same seed gives the same figures");
    let mut other = small();
    other.seed = 2;
    assert_ne!(strip(run(&other).unwrap()).policies, a.policies);
}

#[test]
fn every_policy_sees_the_same_workload() {
    let r = run(&small()).unwrap();
    let requests: Vec<u64> = r.policies.iter().map(|p| p.requests).collect();
    assert!(requests.iter().all(|&n| n == requests[0] && n == 30 * r.arrivals_per_tick), "{requests:?}");
    let ours = r.policy(Policy::Ours).unwrap();
    for p in &r.policies[1..] {
        assert!(ours.warm_hit_rate() > p.warm_hit_rate(), "{} beats ours", p.policy.name());
    }
    assert!(r.json().starts_with("{\"bench\":\"routing\"") && r.json().ends_with('}'));
}

#[test]
fn a_bad_config_is_an_error_not_a_panic() {
    for cfg in [
        SimConfig { models: 0, ..small() },
        SimConfig { warmup: 60, ..small() },
        SimConfig { concurrency: vec![], ..small() },
        SimConfig { policy: PolicyConfig::default().with_load_factor(0.9), ..small() },
    ] {
        assert!(run(&cfg).is_err());
    }
}

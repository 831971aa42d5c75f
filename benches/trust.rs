//! `cargo bench --bench trust`: what audits catch and what they cost.
//!
//! 1. A simulation of a fabric of 10,000 nodes, 1% of them cheaters of six kinds, each
//!    node serving 10,000 requests, through the router's and the registry's real decision
//!    code (`wasmesh_trust`: the audit share of a node's standing, the draw, the judgement
//!    of a replay and its confirmation, the standing that follows). An honest node's replay
//!    commits to what it served (the engine's exactness, which `tests/tests/trust.rs`
//!    checks on 1,000 real audited requests); a cheated request's does not. Then, for each
//!    kind, 20,000 more cheaters alone, for the probability of being caught within 250
//!    requests (for a node that starts cheating late, 250 from its first cheat).
//! 2. The cost, on this machine with the real llama.cpp engine, of checking a request's
//!    tokens teacher-forced (`GenerateRequest::checking`: one pass over the prompt and the
//!    returned tokens, what an audit's first replay does) against regenerating it (what a
//!    confirmation does), checking that both give the same tokens. Audit compute is
//!    counted with that measured ratio.
//! 3. Scored audits across engine builds (`trust/scored.rs`): the false-positive rate
//!    of the scoring tolerance on honest answers of another build, and the share of
//!    cheated answers it fails. `TRUST_BENCH_ONLY=scored` runs this part alone;
//!    `TRUST_BENCH_ONLY=fabric` runs parts 1 and 2 without it.
//!
//! Ends with one line of JSON.

use std::sync::Arc;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine};
use wasmesh_trust::{Standing, TrustConfig, Verdict, judge, needs_confirmation, should_audit};

const NODES: usize = 10_000;
const CHEATERS: usize = NODES / 100;
const REQUESTS: u64 = 10_000;
const WITHIN: u64 = 250;
/// Requests a node serves in the settlement window (an hour at one request a second):
/// earnings older than that have left escrow.
const SETTLEMENT: u64 = 3_600;
/// Share of requests that ask for an adapter (what an adapter-skipper cheats on).
const ADAPTER_SHARE: f64 = 0.3;
/// How often a part-time cheater cheats.
const PART_TIME: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Honest,
    /// Serves a smaller model for every request.
    Substitute,
    /// Cuts every generation short.
    Truncate,
    /// Skips the adapter of requests that ask for one.
    SkipAdapter,
    /// Substitutes on 10% of requests.
    PartTime,
    /// Honest for its first 1,000 requests (past probation), then substitutes on every one.
    Late,
    /// Honest for its first 1,000 requests, then substitutes on 10% of them.
    LatePartTime,
}

/// When a late cheater starts.
const LATE_START: u64 = 1_000;

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Honest => "honest",
            Kind::Substitute => "substitute",
            Kind::Truncate => "truncate",
            Kind::SkipAdapter => "skip_adapter",
            Kind::PartTime => "part_time",
            Kind::Late => "late",
            Kind::LatePartTime => "late_part_time",
        }
    }
    const CHEATS: [Kind; 6] =
        [Kind::Substitute, Kind::Truncate, Kind::SkipAdapter, Kind::PartTime, Kind::Late, Kind::LatePartTime];
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        should_audit(p, self.next())
    }
}

/// One node's life: requests served, replays run, when it was caught, what it cheated.
#[derive(Default)]
struct Life {
    served: u64,
    /// First replays (checked, teacher-forced, in the fabric).
    replays: u64,
    /// Second replays, confirming a difference (generated).
    confirmations: u64,
    caught_at: Option<u64>,
    cheated: u64,
    /// Cheated requests whose earnings left escrow before the node was caught.
    cheated_settled: u64,
    slashed: bool,
}

fn live(kind: Kind, config: &TrustConfig, rng: &mut Rng, requests: u64) -> Life {
    let mut standing = Standing::default();
    let mut life = Life::default();
    let mut cheated_at = Vec::new();
    for i in 0..requests {
        life.served += 1;
        let cheats = match kind {
            Kind::Honest => false,
            Kind::Substitute | Kind::Truncate => true,
            Kind::SkipAdapter => rng.chance(ADAPTER_SHARE),
            Kind::PartTime => rng.chance(PART_TIME),
            Kind::Late => i >= LATE_START,
            Kind::LatePartTime => i >= LATE_START && rng.chance(PART_TIME),
        };
        if cheats {
            life.cheated += 1;
            cheated_at.push(i);
        }
        if !should_audit(standing.audit_share(config, None), rng.next()) {
            continue;
        }
        // Commitments: an honest answer and every auditor's replay agree.
        let original = if cheats { "cheated" } else { "served" };
        let mut replays = vec!["served"];
        if needs_confirmation(original, &replays) {
            replays.push("served");
        }
        life.replays += 1;
        life.confirmations += replays.len() as u64 - 1;
        match judge(original, &replays) {
            Verdict::Passed => standing.passed += 1,
            Verdict::Inconclusive => standing.inconclusive += 1,
            Verdict::Failed => {
                life.caught_at = Some(i);
                life.slashed = kind == Kind::Honest;
                life.cheated_settled = cheated_at.iter().filter(|&&at| at + SETTLEMENT < i).count() as u64;
                return life;
            }
        }
    }
    life.cheated_settled = cheated_at.iter().filter(|&&at| at + SETTLEMENT < requests).count() as u64;
    life
}

/// The cost of checking a request's tokens (teacher-forced, as an audit's first replay
/// does) against regenerating them, measured: (regenerate ms, check ms, ratio) for
/// `tokens` generated tokens, medians of 5. Panics if a check does not give exactly the
/// generated tokens (the audit would then accuse an honest node's answer wrongly).
fn teacher_forced_cost(runtime: &tokio::runtime::Runtime, engine: &Arc<LlamaEngine>, tokens: u32) -> (f64, f64, f64) {
    let prompt = "Write a short story about a lighthouse keeper who finds a message in a bottle. Begin:";
    let (mut regen, mut forced) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let params = GenerateParams { n_predict: tokens, temp: 0.0, ..Default::default() };
        let ask = GenerateRequest::new("smollm2", prompt, params);
        let g = runtime.block_on(engine.generate(ask.clone())).expect("generate");
        let f = runtime.block_on(engine.generate(ask.checking(g.tokens.clone().into()))).expect("check");
        assert_eq!((&f.tokens, f.finish), (&g.tokens, g.finish), "checking the tokens gave others");
        if round > 0 {
            regen.push(g.compute_time.as_secs_f64() * 1000.0);
            forced.push(f.compute_time.as_secs_f64() * 1000.0);
        }
    }
    let (r, f) = (wasmesh_benches::median(&mut regen), wasmesh_benches::median(&mut forced));
    (r, f, f / r)
}

#[path = "trust/scored.rs"]
mod scored;

fn main() {
    if std::env::var_os("TRUST_BENCH_CLAIMS").is_some() {
        scored::claims_child();
        return;
    }
    let config = TrustConfig::default();
    if std::env::var("TRUST_BENCH_ONLY").is_ok_and(|v| v == "scored") {
        println!("{}", serde_json::Value::Object(scored::run(&config)));
        return;
    }
    let mut rng = Rng(0x5eed);
    println!(
        "trust: {NODES} nodes ({CHEATERS} cheaters of {} kinds), {REQUESTS} requests each; audit share {}% ({}% on probation, until {} audits pass); settlement window {SETTLEMENT} requests",
        Kind::CHEATS.len(),
        config.base_share * 100.0,
        config.probation_share * 100.0,
        config.probation_audits
    );

    // 1. The fabric.
    let (mut served, mut replays, mut confirmations, mut slashed) = (0u64, 0u64, 0u64, 0u64);
    let (mut cheated, mut settled) = (0u64, 0u64);
    let mut caught_in_fabric = 0;
    let started = std::time::Instant::now();
    for n in 0..NODES {
        let kind = if n < CHEATERS { Kind::CHEATS[n % Kind::CHEATS.len()] } else { Kind::Honest };
        let life = live(kind, &config, &mut rng, REQUESTS);
        served += life.served;
        replays += life.replays;
        confirmations += life.confirmations;
        slashed += u64::from(life.slashed);
        cheated += life.cheated;
        settled += life.cheated_settled;
        caught_in_fabric += usize::from(kind != Kind::Honest && life.caught_at.is_some());
    }
    let audit_share = (replays + confirmations) as f64 / served as f64;
    println!(
        "fabric: {served} requests, {replays} audits and {confirmations} confirmations ({:.2}% of the compute if every replay regenerated), {caught_in_fabric} of {CHEATERS} cheaters caught, {slashed} honest nodes slashed, {cheated} cheated requests of which {settled} settled before their node was caught ({:.1} s)",
        audit_share * 100.0,
        started.elapsed().as_secs_f64()
    );

    // Per kind: 20,000 cheaters each.
    let mut per_kind = serde_json::Map::new();
    for kind in Kind::CHEATS {
        let trials = 20_000;
        let (mut within, mut before_catch, mut caught) = (0u64, 0u64, 0u64);
        for _ in 0..trials {
            let life = live(kind, &config, &mut rng, REQUESTS);
            // Counted from its first cheated request for one that starts late.
            let start = if matches!(kind, Kind::Late | Kind::LatePartTime) { LATE_START } else { 0 };
            if let Some(at) = life.caught_at {
                caught += 1;
                before_catch += at + 1 - start;
                within += u64::from(at < start + WITHIN);
            }
        }
        let p = within as f64 / trials as f64;
        let mean = before_catch as f64 / caught.max(1) as f64;
        println!(
            "{:<13} caught within {WITHIN} requests: {:.2}%, caught at all: {:.2}%, mean requests before caught: {mean:.0}",
            kind.name(),
            p * 100.0,
            caught as f64 / trials as f64 * 100.0
        );
        per_kind.insert(
            format!("caught_within_{WITHIN}_{}", kind.name()),
            serde_json::json!((p * 10_000.0).round() / 10_000.0),
        );
        per_kind.insert(format!("mean_requests_to_catch_{}", kind.name()), serde_json::json!(mean.round()));
    }

    // 2. Teacher-forced against regenerating, on this machine.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let engine = Arc::new(
        LlamaEngine::new(LlamaConfig {
            models: [("smollm2".to_string(), wasmesh_tests::model_path())].into(),
            threads: Some(2),
            ..Default::default()
        })
        .expect("engine"),
    );
    runtime.block_on(engine.preload("smollm2")).expect("load");
    let mut ratios = Vec::new();
    let mut figures = serde_json::Map::new();
    for tokens in [64u32, 128] {
        let (regen, forced, ratio) = teacher_forced_cost(&runtime, &engine, tokens);
        println!(
            "a {tokens}-token request: regenerate {regen:.1} ms, check (teacher-forced) {forced:.1} ms, the same tokens: {:.3}× the cost",
            ratio
        );
        figures.insert(format!("regenerate_{tokens}_ms"), serde_json::json!((regen * 10.0).round() / 10.0));
        figures.insert(format!("teacher_forced_{tokens}_ms"), serde_json::json!((forced * 10.0).round() / 10.0));
        ratios.push(ratio);
    }
    let ratio = ratios.iter().copied().fold(0.0, f64::max);
    // What the fabric runs: each audit's first replay checks, a confirmation generates.
    let checked_share = (replays as f64 * ratio + confirmations as f64) / served as f64;
    println!(
        "audit compute: {:.2}% of all compute (first replays checked at the worse ratio, {ratio:.3}; confirmations generated); {:.2}% if every replay regenerated",
        checked_share * 100.0,
        audit_share * 100.0
    );
    // The bound a node meets that cheats on a fraction of its requests only once past
    // probation (`late_part_time`): each request of it is caught with odds share x
    // PART_TIME, so being caught within WITHIN with 99% odds takes a share of at least
    // (1 - 0.01^(1/WITHIN)) / PART_TIME, which the fabric pays on every honest node past
    // probation at the check's cost. No draw escapes it: a node's requests look alike to
    // the router and its cheats are independent of them.
    let share_needed = (1.0 - 0.01f64.powf(1.0 / WITHIN as f64)) / PART_TIME;
    let compute_needed = share_needed * ratio;
    let ratio_for_both = 0.02 / share_needed;
    println!(
        "late_part_time: caught within {WITHIN} with 99% odds needs an audit share of {:.1}% past probation, {:.1}% of all compute at this machine's check ratio ({ratio:.3}); with audit compute <= 2% too, a check must cost at most {ratio_for_both:.3}x a generation",
        share_needed * 100.0,
        compute_needed * 100.0
    );
    let mut line = serde_json::Map::new();
    line.insert("late_part_time_share_needed".into(), serde_json::json!((share_needed * 10_000.0).round() / 10_000.0));
    line.insert(
        "late_part_time_compute_needed".into(),
        serde_json::json!((compute_needed * 10_000.0).round() / 10_000.0),
    );
    line.insert("check_ratio_for_both_goals".into(), serde_json::json!((ratio_for_both * 1000.0).round() / 1000.0));
    line.insert("nodes".into(), NODES.into());
    line.insert("cheaters".into(), CHEATERS.into());
    line.insert("cheaters_caught".into(), caught_in_fabric.into());
    line.insert("honest_slashed".into(), slashed.into());
    line.insert(
        "audit_compute_share_regenerate".into(),
        serde_json::json!((audit_share * 10_000.0).round() / 10_000.0),
    );
    line.insert("audit_compute_share".into(), serde_json::json!((checked_share * 10_000.0).round() / 10_000.0));
    line.insert("check_vs_regenerate".into(), serde_json::json!((ratio * 1000.0).round() / 1000.0));
    line.insert("cheated_requests".into(), cheated.into());
    line.insert("cheated_requests_settled_before_caught".into(), settled.into());
    line.extend(per_kind);
    line.extend(figures);
    if !std::env::var("TRUST_BENCH_ONLY").is_ok_and(|v| v == "fabric") {
        line.extend(scored::run(&config));
    }
    println!("{}", serde_json::Value::Object(line));
}

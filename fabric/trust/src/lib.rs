//! The audit decisions of the fabric, as pure functions over plain numbers: which
//! requests a router replays on an auditor ([`Standing::audit_share`],
//! [`should_audit`]), how the replays are judged ([`judge`]), and a node's reputation
//! ([`Standing::score`]) and whether routing may send it traffic
//! ([`Standing::routable`]).
//!
//! A replay is compared by commitment (a hash of what each generation asked for and
//! the token ids it produced, `wasmesh_world::commit`): the engine gives each request
//! exactly the tokens it gets alone, and sampled requests carry a seed the router chose,
//! so an honest node and an auditor of the same engine build and CPU class commit to the
//! same hash. A difference is confirmed by a second replay before it counts: two
//! auditors that agree with each other and not with the node convict it; two that
//! disagree with each other say the request is not reproducible (a component that reads
//! the clock, say), and nobody is blamed.
//!
//! Where no auditor of the node's build and class is connected, an auditor of another
//! scores the node's tokens instead (`wasmesh_api::wire::ClaimScore`): its replay takes
//! the claimed tokens as they are, so it commits to what the node committed to when the
//! request's ending matches, and [`scored_commitment`] turns a score beyond the
//! tolerance ([`score_passes`]) into a difference, judged as any other.

/// How much is audited, and when a node stops getting traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Share of an established node's requests replayed (default 2%).
    pub base_share: f64,
    /// Share replayed while a node is on probation, or flagged (another node of its
    /// provider was caught). Default 20%.
    pub probation_share: f64,
    /// Audits a node must pass to leave probation. Default 50: at the probation share,
    /// about a new node's first 250 requests, so that one cheating on a tenth of them
    /// from the start is caught within those with 99% odds (`cargo bench --bench trust`).
    /// Each honest node pays it once: 50 checked replays.
    pub probation_audits: u64,
    /// Nodes scoring below this get no traffic (see [`Standing::score`]). Default 100.
    pub min_score: u32,
    /// A scored replay fails when a claimed token falls more than this many logits
    /// below what the request's sampler could pick (`ClaimScore::worst_gap`). Default 2:
    /// across llama.cpp's fast and reference CPU kernels honest nodes fell short by at
    /// most 0.77 (`cargo bench --bench trust`); a substituted model, a skipped adapter or
    /// a cut-short answer by 8 to 12 at the median.
    pub score_max_gap: f32,
    /// A scored replay fails when more than this share of its seeded draws, plus one,
    /// missed their claimed tokens (`ClaimScore::draw_misses`). Default 0.75: across
    /// llama.cpp's fast and reference CPU kernels honest nodes missed up to 56% of their
    /// draws (`cargo bench --bench trust`), their rounding apart moving shares' edges.
    pub score_max_draw_misses: f64,
    /// A scored replay fails when its sampled tokens' surprisal lies more than this
    /// many standard deviations above its expectation (`ClaimScore::z`).
    pub score_max_z: f64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            base_share: 0.02,
            probation_share: 0.2,
            probation_audits: 50,
            min_score: 100,
            score_max_gap: SCORE_MAX_GAP,
            score_max_draw_misses: SCORE_MAX_DRAW_MISSES,
            score_max_z: SCORE_MAX_Z,
        }
    }
}

/// What the registry knows of a node's audits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Audits its answer passed.
    pub passed: u64,
    /// Audits that convicted it (a replay differed and a second replay confirmed it).
    pub failed: u64,
    /// Audits that could not decide (the auditors disagreed, or a replay failed).
    pub inconclusive: u64,
    /// An auditor: serves audits only.
    pub trusted: bool,
    /// Caught: never routed to again.
    pub evicted: bool,
    /// Another node of its provider was caught: audited as on probation.
    pub flagged: bool,
}

impl Standing {
    /// Whether it is still on probation (too few audits passed to be trusted with the
    /// base share).
    pub fn on_probation(&self, config: &TrustConfig) -> bool {
        self.passed < config.probation_audits
    }

    /// Its reputation, 0 to 1000: 0 once caught; 100 on probation, rising with each audit
    /// passed to 200 when probation ends, then by one per audit passed up to 1000. A node
    /// whose audits are inconclusive more often than they pass loses half.
    pub fn score(&self, config: &TrustConfig) -> u32 {
        if self.evicted || self.failed > 0 {
            return 0;
        }
        let probation = config.probation_audits.max(1);
        let score = if self.passed < probation {
            100 + self.passed * 100 / probation
        } else {
            (200 + (self.passed - probation)).min(1000)
        };
        let score = if self.inconclusive > self.passed.max(4) { score / 2 } else { score };
        score as u32
    }

    /// Whether routing may send it callers' requests: not an auditor (they serve audits
    /// only), not caught, and scoring at least [`TrustConfig::min_score`]. A new node
    /// scores 100 and is routable from its start.
    pub fn routable(&self, config: &TrustConfig) -> bool {
        !self.trusted && !self.evicted && self.score(config) >= config.min_score
    }

    /// The share of its requests to replay: `model_share` (a per-model setting) or the
    /// base share, raised to the probation share while on probation or flagged.
    pub fn audit_share(&self, config: &TrustConfig, model_share: Option<f64>) -> f64 {
        let base = model_share.unwrap_or(config.base_share);
        let share = if self.on_probation(config) || self.flagged { base.max(config.probation_share) } else { base };
        share.clamp(0.0, 1.0)
    }
}

/// Whether a request is audited, given a uniformly random `draw`: true for a share
/// `share` of the draws. The router draws after the answer ended, so nothing the
/// serving node saw depended on it.
pub fn should_audit(share: f64, draw: u64) -> bool {
    if share >= 1.0 {
        return true;
    }
    // The top 53 bits as a fraction in [0, 1).
    ((draw >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < share
}

/// What an audit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The replay committed to what the node did.
    Passed,
    /// Two replays agreed with each other and not with the node.
    Failed,
    /// Not decided: no replay yet, a first replay that differed and no second one, or
    /// replays that disagree with each other (the request is not reproducible).
    Inconclusive,
}

impl Verdict {
    /// Its name as stored and shown: `passed`, `failed`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Judges a node's `original` commitment against the auditors' `replays`, in the order
/// they ran: the first replay decides a pass; a difference needs a second replay that
/// agrees with the first.
pub fn judge(original: &str, replays: &[&str]) -> Verdict {
    match replays {
        [first, ..] if *first == original => Verdict::Passed,
        [first, second, ..] if first == second => Verdict::Failed,
        _ => Verdict::Inconclusive,
    }
}

/// The default [`TrustConfig::score_max_gap`].
pub const SCORE_MAX_GAP: f32 = 2.0;
/// The default [`TrustConfig::score_max_draw_misses`].
pub const SCORE_MAX_DRAW_MISSES: f64 = 0.75;
/// The default [`TrustConfig::score_max_z`].
pub const SCORE_MAX_Z: f64 = 6.0;

/// A scored replay's figures (what `wasmesh_api::wire::ClaimScore` carries).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreFigures {
    /// The largest shortfall of a claimed token below what the sampler could pick, in logits.
    pub worst_gap: f32,
    /// Seeded draws replayed, and those that missed their claimed token.
    pub draws: u64,
    /// See `draws`.
    pub draw_misses: u64,
    /// The sampled tokens' surprisal above its expectation, in standard deviations.
    pub z: f64,
}

/// Whether a scored replay's claims are within the tolerance.
pub fn score_passes(score: &ScoreFigures, config: &TrustConfig) -> bool {
    score.worst_gap <= config.score_max_gap
        && score.draw_misses as f64 <= config.score_max_draw_misses * score.draws as f64 + 1.0
        && score.z <= config.score_max_z
}

/// What a replay commits to, for [`judge`] against the node's: its `commitment`, or for
/// a scored replay whose score did not pass (`passes` false) the same with a mark, so it
/// differs from the node's and two such replays agree.
pub fn scored_commitment(commitment: Option<&str>, passes: Option<bool>) -> String {
    let commitment = commitment.unwrap_or_default();
    if passes == Some(false) { format!("{commitment}/beyond-tolerance") } else { commitment.to_string() }
}

/// Whether a replay that differs from the original needs a second one to decide.
pub fn needs_confirmation(original: &str, replays: &[&str]) -> bool {
    matches!(replays, [first] if *first != original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_needs_one_replay_and_a_conviction_two_that_agree() {
        assert_eq!(judge("a", &["a"]), Verdict::Passed);
        assert_eq!(judge("a", &["b"]), Verdict::Inconclusive);
        assert!(needs_confirmation("a", &["b"]));
        assert!(!needs_confirmation("a", &["a"]));
        assert_eq!(judge("a", &["b", "b"]), Verdict::Failed);
        // The auditors disagree: not reproducible, nobody is blamed.
        assert_eq!(judge("a", &["b", "c"]), Verdict::Inconclusive);
        assert_eq!(judge("a", &["b", "a"]), Verdict::Inconclusive);
        assert_eq!(judge("a", &[]), Verdict::Inconclusive);
    }

    #[test]
    fn a_scored_replay_beyond_the_tolerance_differs_and_two_such_convict() {
        let config = TrustConfig::default();
        let honest = ScoreFigures { worst_gap: 0.8, draws: 20, draw_misses: 11, z: 2.0 };
        assert!(score_passes(&honest, &config));
        for bad in [
            ScoreFigures { worst_gap: 2.5, ..honest },
            ScoreFigures { draw_misses: 17, ..honest },
            ScoreFigures { z: 6.5, ..honest },
        ] {
            assert!(!score_passes(&bad, &config), "{bad:?}");
        }
        let pass = scored_commitment(Some("c"), Some(true));
        let fail = scored_commitment(Some("c"), Some(false));
        assert_eq!((pass.as_str(), scored_commitment(Some("c"), None).as_str()), ("c", "c"));
        assert_eq!(judge("c", &[&pass]), Verdict::Passed);
        assert!(needs_confirmation("c", &[&fail]));
        assert_eq!(judge("c", &[&fail, &fail]), Verdict::Failed);
    }

    #[test]
    fn probation_and_flags_raise_the_share_and_caught_nodes_get_nothing() {
        let config = TrustConfig::default();
        let new = Standing::default();
        assert!(new.on_probation(&config) && new.routable(&config));
        assert_eq!(new.audit_share(&config, None), 0.2);
        let established = Standing { passed: config.probation_audits, ..Default::default() };
        assert_eq!(established.audit_share(&config, None), 0.02);
        assert_eq!(established.audit_share(&config, Some(0.5)), 0.5);
        assert_eq!(Standing { flagged: true, ..established }.audit_share(&config, None), 0.2);
        assert!(established.score(&config) > new.score(&config));
        let caught = Standing { failed: 1, ..established };
        assert_eq!(caught.score(&config), 0);
        assert!(!caught.routable(&config));
        assert!(!Standing { trusted: true, ..established }.routable(&config));
        assert!(!Standing { evicted: true, ..established }.routable(&config));
    }

    #[test]
    fn the_draw_selects_its_share() {
        let n = 100_000u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut hits = 0;
        for _ in 0..n {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            hits += u64::from(should_audit(0.02, z ^ (z >> 31)));
        }
        assert!((1_700..2_300).contains(&hits), "{hits} of {n}");
        assert!(should_audit(1.0, u64::MAX) && !should_audit(0.0, 0));
    }
}

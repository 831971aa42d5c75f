//! Audits: a share of the requests a router served is replayed on an auditor (a node
//! an admin trusts) and the two answers' commitments compared.
//!
//! The router keeps each metered request's head (with the seed it chose for it) and body
//! until its answer ends. Only then does it draw whether to audit, so the serving node
//! cannot tell an audited request from any other. The replay goes to a trusted node of the
//! same engine build and CPU class, under the id `REQUEST/audit-1`. Its signed receipt
//! commits to what the replay generated. The first replay is given the token ids the node
//! returned and checks them (teacher-forced: one pass over prompt and tokens, generating
//! only from where the model picks otherwise), which commits to what generating would,
//! at a fraction of the cost. A replay that differs is confirmed by a second one, on
//! another auditor where there is one, which generates from scratch: a conviction never
//! rests on the check alone. Where no auditor of the node's build and class is
//! connected, auditors of another score the node's tokens instead (`RequestHead::score_claims`,
//! both replays): a score beyond the tolerance counts as a difference
//! (`wasmesh_trust::scored_commitment`). Every audit goes to the registry with the
//! signed receipts (`POST /v1/audits`); the registry judges it itself and deals with a
//! node that was caught.

use crate::Inner;
use crate::link::{Attempt, HostConn, try_node};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_api::wire::{AuditReport, NodeTrust, Receipt, SignedReceipt, replay_id};
use wasmesh_trust::{ScoreFigures, Standing, needs_confirmation, score_passes, scored_commitment, should_audit};
use wasmesh_tunnel::{Frame, GenerationIds, Open, RequestHead};

/// Audits waiting for a replay; past this, new ones are dropped (and counted).
const QUEUE: usize = 1024;
/// Replays running at once.
const CONCURRENT: usize = 4;
/// How long a replay may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request's audit needs: what was asked and what the node signed.
pub(crate) struct Job {
    pub(crate) head: RequestHead,
    pub(crate) body: Bytes,
    pub(crate) model: Option<String>,
    pub(crate) signed: SignedReceipt,
    pub(crate) receipt: Receipt,
    /// The token ids the node returned (`Frame::Tokens`), for a checked replay.
    pub(crate) tokens: Option<Bytes>,
}

/// The router's side of audits: where finished requests go to be considered.
pub(crate) struct Audits {
    queue: tokio::sync::mpsc::Sender<Job>,
    /// The nodes' standing (shared with the router's view of the registry's list).
    standing: Standings,
    trust: wasmesh_trust::TrustConfig,
    share_by_model: std::collections::HashMap<String, f64>,
    pub(crate) counts: prometheus::IntCounterVec,
    /// Replays run, by way: `checked` (teacher-forced) or `generated`.
    pub(crate) replays: prometheus::IntCounterVec,
}

impl Audits {
    /// The queue and its receiving end (for [`run`]); draws by `standing`, `trust` and
    /// the per-model shares.
    pub(crate) fn new(
        standing: Standings,
        trust: wasmesh_trust::TrustConfig,
        share_by_model: std::collections::HashMap<String, f64>,
    ) -> anyhow::Result<(Self, tokio::sync::mpsc::Receiver<Job>)> {
        let (queue, jobs) = tokio::sync::mpsc::channel(QUEUE);
        let counts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_audits_total",
                "Requests considered for audit, by what became of them: skipped (not drawn), no_auditor, dropped (queue full), error, passed, failed, inconclusive",
            ),
            &["outcome"],
        )?;
        let replays = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_audit_replays_total",
                "Audit replays run, by way: checked (teacher-forced over the node's token ids), scored (the same ids scored by an auditor of another engine build or CPU class) or generated",
            ),
            &["way"],
        )?;
        Ok((Self { queue, standing, trust, share_by_model, counts, replays }, jobs))
    }

    /// Offers a finished request: drawn here, against its node's share (the answer has
    /// ended, so nothing the node saw depended on the draw); only a drawn one is queued
    /// for the audit task (no task wakes for the rest, and no request is held for them).
    pub(crate) fn offer(&self, job: Job) {
        let standing = standing_of(self.standing.load().get(&job.receipt.node));
        let model_share = job.model.as_deref().and_then(|m| self.share_by_model.get(m).copied());
        if !should_audit(standing.audit_share(&self.trust, model_share), draw()) {
            self.counts.with_label_values(&["skipped"]).inc();
            return;
        }
        if self.queue.try_send(job).is_err() {
            self.counts.with_label_values(&["dropped"]).inc();
        }
    }
}

/// The nodes' standing as the router follows it from the registry.
pub(crate) type Standings = Arc<arc_swap::ArcSwap<std::collections::HashMap<String, NodeTrust>>>;

/// A request's seed: random, never 0 (0 is "none").
pub(crate) fn seed() -> u64 {
    draw().max(1)
}

fn draw() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn standing_of(trust: Option<&NodeTrust>) -> Standing {
    trust.map_or_else(Standing::default, |t| Standing {
        passed: t.passed,
        failed: t.failed,
        inconclusive: t.inconclusive,
        trusted: t.trusted,
        evicted: t.evicted,
        flagged: t.flagged,
    })
}

/// Whether routing may send callers' requests to `node`, and its reputation band (0–10).
pub(crate) fn routing_standing(inner: &Inner, node: &str) -> (bool, u32) {
    let standings = inner.standing.load();
    let trust = standings.get(node);
    let standing = standing_of(trust);
    (standing.routable(&inner.config.trust), standing.score(&inner.config.trust) / 100)
}

/// Audits the drawn requests, a few at once.
pub(crate) async fn run(inner: Arc<Inner>, mut jobs: tokio::sync::mpsc::Receiver<Job>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let inner = inner.clone();
        tokio::spawn(async move {
            let outcome = audit(&inner, job).await;
            inner.audits.counts.with_label_values(&[outcome]).inc();
            drop(slot);
        });
    }
}

/// Auditors connected now that can replay `receipt`: trusted, ready, not the node
/// itself, in a random order. Those of its engine build and CPU class when there are
/// any (exact replays); else, with `scored` true, those of any other (scored replays).
fn auditors_for(inner: &Inner, receipt: &Receipt) -> (Vec<(String, Arc<HostConn>)>, bool) {
    let standings = inner.standing.load();
    let auditors: Vec<_> = inner
        .links
        .connections()
        .into_iter()
        .filter(|(id, report, _)| id != &receipt.node && standings.get(id).is_some_and(|t| t.trusted) && report.ready)
        .collect();
    let exact =
        |report: &wasmesh_tunnel::HostReport| report.engine == receipt.engine && report.cpu_class == receipt.cpu_class;
    let scored = !auditors.iter().any(|(_, report, _)| exact(report));
    let mut found: Vec<(String, Arc<HostConn>)> = auditors
        .into_iter()
        .filter(|(_, report, _)| scored || exact(report))
        .map(|(id, _, connection)| (id, connection))
        .collect();
    if found.len() > 1 {
        let at = (draw() % found.len() as u64) as usize;
        found.rotate_left(at);
    }
    (found, scored)
}

/// Replays the request on `connection` as replay `n`, checking `claims` when given
/// (else generating), or scoring them with `scored`; the auditor's signed receipt.
async fn replay(
    inner: &Inner,
    connection: &Arc<HostConn>,
    job: &Job,
    n: usize,
    claims: Option<GenerationIds>,
    scored: bool,
) -> Option<SignedReceipt> {
    let mut head = job.head.clone();
    head.request_id = replay_id(&job.receipt.request_id, n);
    head.tokens = false;
    let way = match (&claims, scored) {
        (Some(_), true) => "scored",
        (Some(_), false) => "checked",
        (None, _) => "generated",
    };
    inner.audits.replays.with_label_values(&[way]).inc();
    head.score_claims = scored && claims.is_some();
    head.claims = claims.unwrap_or_default();
    let open = Open::Request(head);
    let run = async {
        let Attempt::Answered(_, exchange) =
            try_node(connection, &open, &job.body, inner.config.first_byte_timeout, false).await
        else {
            return None;
        };
        let mut recv = exchange.recv;
        let mut receipt = None;
        loop {
            match recv.frame().await {
                Ok(Some(Frame::Receipt(bytes))) => receipt = Some(bytes),
                Ok(Some(Frame::Data(_) | Frame::Tokens(_))) => {}
                Ok(Some(Frame::End)) => break,
                _ => return None,
            }
        }
        serde_json::from_slice::<SignedReceipt>(&receipt?).ok()
    };
    tokio::time::timeout(REPLAY_TIMEOUT, run).await.ok().flatten()
}

fn commitment_of(signed: &SignedReceipt, trust: &wasmesh_trust::TrustConfig) -> String {
    let Ok(r) = serde_json::from_str::<Receipt>(&signed.receipt) else { return String::new() };
    let passes = r.score.map(|s| {
        let figures = ScoreFigures { worst_gap: s.worst_gap, draws: s.draws, draw_misses: s.draw_misses, z: s.z() };
        score_passes(&figures, trust)
    });
    scored_commitment(r.commitment.as_deref(), passes)
}

/// One audit: replays, then the report to the registry. What became of it (a metric label).
async fn audit(inner: &Inner, job: Job) -> &'static str {
    let Some(original) = job.receipt.commitment.clone() else { return "skipped" };
    let (auditors, scored) = auditors_for(inner, &job.receipt);
    let mut claims =
        job.tokens.as_deref().and_then(|bytes| GenerationIds::decode(bytes).ok()).filter(|c| !c.is_empty());
    if auditors.is_empty() || (scored && claims.is_none()) {
        tracing::debug!(node = %job.receipt.node, "no auditor of this node's engine build and CPU class is connected, nor tokens to score on another");
        return "no_auditor";
    }
    // The first replay checks the node's token ids and a confirmation generates; on
    // auditors of another build or class, both score them.
    let mut replays = Vec::new();
    for n in 1..=2 {
        let (auditor, connection) = &auditors[(n - 1) % auditors.len()];
        let claims = if scored { claims.clone() } else { claims.take() };
        match replay(inner, connection, &job, n, claims, scored).await {
            Some(signed) => replays.push(signed),
            None => {
                tracing::warn!(auditor = %auditor, request = %job.receipt.request_id, "an audit replay failed");
                return "error";
            }
        }
        let commitments: Vec<String> = replays.iter().map(|r| commitment_of(r, &inner.config.trust)).collect();
        let commitments: Vec<&str> = commitments.iter().map(String::as_str).collect();
        if !needs_confirmation(&original, &commitments) {
            break;
        }
    }
    let report = AuditReport { original: job.signed, replays };
    for attempt in 0..5u32 {
        match inner.client.post_audit(&report).await {
            Ok(outcome) => {
                if outcome.evicted {
                    tracing::warn!(node = %job.receipt.node, refunded = outcome.refunded, "an audit caught a node; it is evicted");
                }
                return match outcome.verdict.as_str() {
                    "passed" => "passed",
                    "failed" => "failed",
                    _ => "inconclusive",
                };
            }
            Err(e) => {
                tracing::warn!(request = %job.receipt.request_id, "cannot report an audit (try {attempt}): {e}");
                tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
            }
        }
    }
    "error"
}

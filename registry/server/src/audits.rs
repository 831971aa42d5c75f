//! Trust: auditors (nodes an admin trusts), the audits routers report, each node's
//! standing, and what a caught node loses.
//!
//! A router replays a share of requests on auditors and reports each audit with the
//! signed receipts of the node and of every replay ([`record`]). The registry checks
//! every signature and that the replays come from trusted nodes, and judges the
//! commitments itself (`wasmesh_trust::judge`). A conviction (two replays that agree with
//! each other and not with the node) evicts the node from routing, flags the other nodes
//! of its provider for heavier auditing, and forfeits its earnings still in escrow to the
//! callers it served ([`forfeit`]): refunds, through the ledger.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{ESCROW, NO_OVERDRAFT, Outcome, SqlLedger, Transfer};
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use wasmesh_api::wire::{
    AuditOutcome, AuditRecord, AuditReport, NodeAudits, NodeTrust, Receipt, SignedReceipt, from_hex, replay_id,
};
use wasmesh_trust::{ScoreFigures, Standing, TrustConfig, Verdict, judge, score_passes, scored_commitment};

/// A scored replay's figures, for `wasmesh_trust`.
fn figures(s: &wasmesh_api::wire::ClaimScore) -> ScoreFigures {
    ScoreFigures { worst_gap: s.worst_gap, draws: s.draws, draw_misses: s.draw_misses, z: s.z() }
}

/// The schema of trust (a registry migration).
pub const SCHEMA: &str = r#"
ALTER TABLE nodes ADD COLUMN trusted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN evicted_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN flagged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE receipts ADD COLUMN earnings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE receipts ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0;
CREATE TABLE audits (
    request_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    auditors TEXT NOT NULL,
    verdict TEXT NOT NULL,
    commitment TEXT NOT NULL,
    replays TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX audits_node ON audits (node, at_ms)
"#;

/// A host's key, account and whether it is an auditor.
struct HostKey {
    key: VerifyingKey,
    account: String,
    trusted: bool,
}

async fn host_key(db: &Db, node: &str) -> ApiResult<Option<HostKey>> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT n.public_key, k.account, n.trusted FROM nodes n JOIN keys k ON k.id = n.key_id \
         WHERE n.id = $1 AND n.role = 'host'",
    )
    .bind(node)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.and_then(|(hex, account, trusted)| {
        let bytes: [u8; 32] = from_hex(&hex)?.try_into().ok()?;
        Some(HostKey { key: VerifyingKey::from_bytes(&bytes).ok()?, account, trusted: trusted != 0 })
    }))
}

/// The receipt inside `signed`, if node `node` (of `key`) made it.
fn verified(signed: &SignedReceipt, node: &str, key: &VerifyingKey, master: &[u8; 32]) -> Option<Receipt> {
    if !crate::receipts::authentic(signed, node, key, master) {
        return None;
    }
    serde_json::from_str(&signed.receipt).ok()
}

/// The receipt inside `signed` as its node `node` signed it, or a 400 naming what is wrong.
async fn checked(db: &Db, master: &[u8; 32], signed: &SignedReceipt, what: &str) -> ApiResult<(Receipt, HostKey)> {
    let bad = |m: String| ApiError::bad_request("invalid_audit", m);
    let claimed: Receipt =
        serde_json::from_str(&signed.receipt).map_err(|e| bad(format!("the {what} receipt is not valid JSON: {e}")))?;
    let node = host_key(db, &claimed.node)
        .await?
        .ok_or_else(|| bad(format!("the {what} receipt names node '{}', which is not registered", claimed.node)))?;
    let receipt = verified(signed, &claimed.node, &node.key, master)
        .ok_or_else(|| bad(format!("the {what} receipt is not signed by node '{}'", claimed.node)))?;
    Ok((receipt, node))
}

/// Records an audit a router reports, judges it, and on a conviction evicts the node,
/// flags its provider's other nodes and forfeits its escrowed earnings.
pub async fn record(db: &Db, ledger: &SqlLedger, master: &[u8; 32], report: &AuditReport) -> ApiResult<AuditOutcome> {
    let bad = |m: String| ApiError::bad_request("invalid_audit", m);
    if report.replays.is_empty() || report.replays.len() > 4 {
        return Err(bad("an audit has one to four replays".into()));
    }
    let (original, node) = checked(db, master, &report.original, "audited").await?;
    let Some(commitment) = original.commitment.clone() else {
        return Err(bad("the audited receipt commits to nothing (no generation): there is nothing to compare".into()));
    };
    let mut replays = Vec::new();
    let mut auditors = Vec::new();
    for (i, signed) in report.replays.iter().enumerate() {
        let (replay, auditor) = checked(db, master, signed, "replay").await?;
        if !auditor.trusted || replay.node == original.node {
            return Err(bad(format!("replay {} comes from node '{}', which is not an auditor", i + 1, replay.node)));
        }
        if replay.request_id != replay_id(&original.request_id, i + 1) {
            return Err(bad(format!(
                "replay {} names request '{}', not '{}'",
                i + 1,
                replay.request_id,
                replay_id(&original.request_id, i + 1)
            )));
        }
        auditors.push(replay.node.clone());
        replays.push(replay);
    }
    // A replay of another app version proves nothing either way, nor does one on another
    // engine build or CPU class unless it scored the node's tokens (an exact replay
    // compares only within one build and class).
    let comparable = replays.iter().all(|r| {
        (r.score.is_some() || (r.engine == original.engine && r.cpu_class == original.cpu_class))
            && r.app == original.app
            && r.app_version == original.app_version
    });
    let config = TrustConfig::default();
    let commitments: Vec<String> = replays
        .iter()
        .map(|r| {
            let passes = r.score.map(|s| score_passes(&figures(&s), &config));
            scored_commitment(r.commitment.as_deref(), passes)
        })
        .collect();
    let commitments: Vec<&str> = commitments.iter().map(String::as_str).collect();
    let verdict = if comparable { judge(&commitment, &commitments) } else { Verdict::Inconclusive };
    let inserted = sqlx::query(
        "INSERT INTO audits (request_id, node, auditors, verdict, commitment, replays, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&original.request_id)
    .bind(&original.node)
    .bind(serde_json::to_string(&auditors).expect("JSON of strings"))
    .bind(verdict.as_str())
    .bind(&commitment)
    .bind(serde_json::to_string(&commitments).expect("JSON of strings"))
    .bind(now_ms())
    .execute(&db.pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(AuditOutcome { verdict: verdict.as_str().into(), duplicate: true, ..Default::default() });
    }
    let mut outcome = AuditOutcome { verdict: verdict.as_str().into(), ..Default::default() };
    if verdict == Verdict::Failed {
        sqlx::query("UPDATE nodes SET evicted_at = $1 WHERE id = $2 AND evicted_at = 0")
            .bind(now_ms())
            .bind(&original.node)
            .execute(&db.pool)
            .await?;
        sqlx::query(
            "UPDATE nodes SET flagged = 1 WHERE id <> $1 AND key_id IN (SELECT id FROM keys WHERE account = $2)",
        )
        .bind(&original.node)
        .bind(&node.account)
        .execute(&db.pool)
        .await?;
        outcome.evicted = true;
        outcome.refunded = forfeit(db, ledger, &original.node).await?;
        tracing::warn!(
            node = %original.node,
            provider = %node.account,
            request = %original.request_id,
            refunded = outcome.refunded,
            "a node was caught: its answer differs from two auditors' replays; evicted"
        );
    }
    Ok(outcome)
}

/// Refunds to its callers what node `node` earned that is still in escrow; how much
/// (micros). Idempotent: each transfer's id names the node and the earning, a receipt is
/// marked once refunded, and a run cut short is finished by the next (the settlement job
/// runs this for every evicted node before it settles anything).
pub async fn forfeit(db: &Db, ledger: &SqlLedger, node: &str) -> ApiResult<i64> {
    // The node's receipts not yet dealt with, and their shares of each pending earning.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT request_id, account, earnings FROM receipts WHERE node = $1 AND refunded = 0 AND earnings <> '{}'",
    )
    .bind(node)
    .fetch_all(&db.pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // earning id -> [(request id, caller, share)]
    let mut by_earning: BTreeMap<String, Vec<(String, String, u64)>> = BTreeMap::new();
    for (rid, account, earnings) in &rows {
        let shares: BTreeMap<String, u64> = serde_json::from_str(earnings).unwrap_or_default();
        for (earning, share) in shares {
            by_earning.entry(earning).or_default().push((rid.clone(), account.clone(), share));
        }
    }
    // The pending earnings and the voids of an earlier run, read in a few statements.
    let earnings: Vec<&str> = by_earning.keys().map(String::as_str).collect();
    let void_ids: Vec<String> = earnings.iter().map(|e| format!("forfeit:{node}:{e}")).collect();
    let mut pendings: HashMap<String, (i64, i64, String)> = HashMap::new();
    let mut voided: HashSet<String> = HashSet::new();
    let per = crate::ledger::params_per_statement(db.backend);
    for chunk in earnings.chunks(per) {
        let sql = format!(
            "SELECT p.id, p.remaining, p.open, t.credit FROM ledger_pending p JOIN ledger_transfers t ON t.id = p.id \
             WHERE p.id IN ({})",
            crate::ledger::placeholders(db.backend, 1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String, i64, i64, String)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        pendings.extend(q.fetch_all(&db.pool).await?.into_iter().map(|(id, r, o, c)| (id, (r, o, c))));
    }
    for chunk in void_ids.chunks(per) {
        let sql = format!(
            "SELECT id FROM ledger_transfers WHERE id IN ({})",
            crate::ledger::placeholders(db.backend, 1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String,)>(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        voided.extend(q.fetch_all(&db.pool).await?.into_iter().map(|(id,)| id));
    }
    let mut transfers = Vec::new();
    let mut refunded_by_receipt: HashMap<String, i64> = HashMap::new();
    let mut rewritten: Vec<(String, String)> = Vec::new();
    for (earning, shares) in &by_earning {
        let void_id = format!("forfeit:{node}:{earning}");
        let done_before = voided.contains(&void_id);
        let Some((remaining, open, provider)) = pendings.remove(earning) else { continue };
        if open == 0 && !done_before {
            // Settled (or voided) before the node was caught: nothing left to take back.
            for (rid, _, _) in shares {
                refunded_by_receipt.entry(rid.clone()).or_insert(-1);
            }
            continue;
        }
        let owed: i64 = shares.iter().map(|(_, _, s)| *s as i64).sum();
        // A run cut short after its transfers: they moved what was owed then.
        let cheat = if done_before { owed } else { owed.min(remaining.max(0)) };
        if !done_before {
            transfers.push(Transfer::void(void_id, earning, "forfeit"));
            if remaining > cheat {
                let rest = format!("rearn:{node}:{earning}");
                transfers.push(
                    Transfer::pending(&rest, ESCROW, &provider, remaining - cheat, 0, "earning")
                        .with_reference(format!("the rest of {earning}")),
                );
                rewritten.push((earning.clone(), rest));
            }
        } else if remaining > 0 || cheat > 0 {
            rewritten.push((earning.clone(), format!("rearn:{node}:{earning}")));
        }
        // One refund per caller of this earning, the cheater's part of it.
        let mut per_caller: BTreeMap<&str, i64> = BTreeMap::new();
        let mut left = cheat;
        for (rid, account, share) in shares {
            let part = (*share as i64).min(left);
            left -= part;
            *per_caller.entry(account.as_str()).or_default() += part;
            *refunded_by_receipt.entry(rid.clone()).or_insert(0) += part;
        }
        for (account, amount) in per_caller.into_iter().filter(|(_, a)| *a > 0) {
            ledger.ensure_account(account, NO_OVERDRAFT).await?;
            transfers.push(
                Transfer::posted(format!("refund:{node}:{earning}:{account}"), ESCROW, account, amount, "refund")
                    .with_reference(format!("node {node} was caught cheating")),
            );
        }
    }
    let done = ledger.transfer(&transfers).await?;
    if let Some((t, o)) = transfers.iter().zip(&done).find(|(_, o)| matches!(o, Outcome::Refused(_))) {
        return Err(ApiError::internal("forfeiting a caught node's earnings failed", format!("{}: {o:?}", t.id)));
    }
    let refunded: i64 = transfers
        .iter()
        .zip(&done)
        .filter(|(t, o)| t.code == "refund" && **o == Outcome::Created)
        .map(|(t, _)| t.amount)
        .sum();
    // The receipts: the node's are dealt with; other nodes' that shared a voided earning
    // now point at its rest.
    let mut tx = db.pool.begin().await?;
    for (rid, amount) in &refunded_by_receipt {
        sqlx::query("UPDATE receipts SET refunded = $1 WHERE request_id = $2")
            .bind(if *amount == 0 { -1 } else { *amount })
            .bind(rid)
            .execute(&mut *tx)
            .await?;
    }
    for (earning, rest) in &rewritten {
        let like = format!("%\"{earning}\"%");
        let others: Vec<(String, String)> =
            sqlx::query_as("SELECT request_id, earnings FROM receipts WHERE node <> $1 AND earnings LIKE $2")
                .bind(node)
                .bind(&like)
                .fetch_all(&mut *tx)
                .await?;
        for (rid, earnings) in others {
            let mut shares: BTreeMap<String, u64> = serde_json::from_str(&earnings).unwrap_or_default();
            if let Some(share) = shares.remove(earning) {
                shares.insert(rest.clone(), share);
            }
            sqlx::query("UPDATE receipts SET earnings = $1 WHERE request_id = $2")
                .bind(serde_json::to_string(&shares).expect("JSON of plain values"))
                .bind(rid)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(refunded)
}

/// Forfeits what evicted nodes still hold in escrow (receipts that arrived after the
/// conviction); the settlement job runs it before settling.
pub async fn forfeit_evicted(db: &Db, ledger: &SqlLedger) -> ApiResult<i64> {
    let nodes: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT n.id FROM nodes n JOIN receipts r ON r.node = n.id \
         WHERE n.evicted_at > 0 AND r.refunded = 0 AND r.earnings <> '{}'",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut total = 0;
    for (node,) in nodes {
        total += forfeit(db, ledger, &node).await?;
    }
    Ok(total)
}

/// Every node's standing (nodes never audited and neither trusted, evicted nor flagged
/// are left out: they stand at the default).
pub async fn standings(db: &Db) -> ApiResult<HashMap<String, NodeTrust>> {
    standings_of(db, None).await
}

/// Standings of every node, or of `only` (the others left out, so a look at one node
/// reads only its rows).
async fn standings_of(db: &Db, only: Option<&str>) -> ApiResult<HashMap<String, NodeTrust>> {
    let config = TrustConfig::default();
    let mut out: HashMap<String, Standing> = HashMap::new();
    let flags: Vec<(String, i64, i64, i64)> = match only {
        None => sqlx::query_as(
            "SELECT id, trusted, evicted_at, flagged FROM nodes WHERE trusted <> 0 OR evicted_at <> 0 OR flagged <> 0",
        )
        .fetch_all(&db.pool)
        .await?,
        Some(node) => {
            sqlx::query_as("SELECT id, trusted, evicted_at, flagged FROM nodes WHERE id = $1")
                .bind(node)
                .fetch_all(&db.pool)
                .await?
        }
    };
    for (id, trusted, evicted, flagged) in flags {
        let s = out.entry(id).or_default();
        (s.trusted, s.evicted, s.flagged) = (trusted != 0, evicted != 0, flagged != 0);
    }
    let counts: Vec<(String, String, i64)> = match only {
        None => {
            sqlx::query_as("SELECT node, verdict, COUNT(*) FROM audits GROUP BY node, verdict")
                .fetch_all(&db.pool)
                .await?
        }
        Some(node) => {
            sqlx::query_as("SELECT node, verdict, COUNT(*) FROM audits WHERE node = $1 GROUP BY node, verdict")
                .bind(node)
                .fetch_all(&db.pool)
                .await?
        }
    };
    for (node, verdict, n) in counts {
        let s = out.entry(node).or_default();
        match verdict.as_str() {
            "passed" => s.passed = n as u64,
            "failed" => s.failed = n as u64,
            _ => s.inconclusive += n as u64,
        }
    }
    Ok(out.into_iter().map(|(id, s)| (id, trust_of(&s, &config))).collect())
}

fn trust_of(s: &Standing, config: &TrustConfig) -> NodeTrust {
    NodeTrust {
        passed: s.passed,
        failed: s.failed,
        inconclusive: s.inconclusive,
        trusted: s.trusted,
        evicted: s.evicted,
        flagged: s.flagged,
        score: s.score(config),
    }
}

/// The standing of a node that was never audited.
pub fn new_node_trust() -> NodeTrust {
    trust_of(&Standing::default(), &TrustConfig::default())
}

/// Makes host `node` an auditor, or not (admin).
pub async fn set_trusted(db: &Db, node: &str, trusted: bool) -> ApiResult<()> {
    let changed = sqlx::query("UPDATE nodes SET trusted = $1 WHERE id = $2 AND role = 'host'")
        .bind(i64::from(trusted))
        .bind(node)
        .execute(&db.pool)
        .await?
        .rows_affected();
    if changed == 0 {
        return Err(ApiError::not_found(format!("no host node '{node}' (`wasmesh nodes list` shows them)")));
    }
    Ok(())
}

/// Node `node`'s audits, if `account` may read them (`None`: any node).
pub async fn node_audits(db: &Db, node: &str, account: Option<&str>) -> ApiResult<NodeAudits> {
    let owner: Option<(String,)> = sqlx::query_as(
        "SELECT k.account FROM nodes n JOIN keys k ON k.id = n.key_id WHERE n.id = $1 AND n.role = 'host'",
    )
    .bind(node)
    .fetch_optional(&db.pool)
    .await?;
    match (owner, account) {
        (Some((owner,)), Some(account)) if owner != account => {}
        (Some(_), _) => {
            let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
                "SELECT request_id, auditors, verdict, commitment, replays, at_ms FROM audits WHERE node = $1 \
                 ORDER BY at_ms DESC, request_id LIMIT 200",
            )
            .bind(node)
            .fetch_all(&db.pool)
            .await?;
            let (refunded,): (i64,) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(CASE WHEN refunded > 0 THEN refunded ELSE 0 END), 0) AS BIGINT) \
                 FROM receipts WHERE node = $1",
            )
            .bind(node)
            .fetch_one(&db.pool)
            .await?;
            let trust = standings_of(db, Some(node)).await?.remove(node).unwrap_or_else(new_node_trust);
            return Ok(NodeAudits {
                node: node.to_string(),
                trust,
                refunded,
                audits: rows
                    .into_iter()
                    .map(|(request_id, auditors, verdict, commitment, replays, at)| AuditRecord {
                        request_id,
                        node: node.to_string(),
                        auditors: serde_json::from_str(&auditors).unwrap_or_default(),
                        verdict,
                        commitment,
                        replays: serde_json::from_str(&replays).unwrap_or_default(),
                        at_ms: at as u64,
                    })
                    .collect(),
            });
        }
        (None, _) => {}
    }
    Err(ApiError::not_found(format!("no host node '{node}' of your account")))
}

//! Metering: routers' leases (credits held for the requests they serve), the hosts'
//! signed receipts that spend them, settlement of providers' earnings, and the usage
//! the receipts add up to.
//!
//! A receipt's cost is split as it posts: the caller pays the escrow (from the lease
//! that held it: up to what the router reserved; any excess straight from the caller's
//! available credits), the escrow pays the platform its fee and holds the rest for the
//! serving node's account as a pending transfer, which the settlement job posts once
//! the settlement window has passed (the trust issue withholds it for cheaters).
//! Every transfer's id derives from the request id, and the receipt row is written
//! last: a batch sent again (a router's resend, a registry crash mid-way) charges
//! nothing twice.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{ESCROW, FEES, NO_OVERDRAFT, Outcome, Refusal, SqlLedger, Transfer};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use wasmesh_api::wire::{
    Generation, Lease, LeaseRequest, MeteredReceipt, Receipt, ReceiptOutcome, SignedReceipt, UsageRow, from_hex,
    receipt_key,
};

/// A lease's receipts in a batch: the lease, (receipt index, amount held) pairs, and
/// the hash that names them in transfer ids.
type Group<'a> = (&'a str, &'a Vec<(usize, u64)>, String);

/// Longest lease a router may ask for.
const MAX_LEASE_TTL_S: u64 = 24 * 3600;
/// Receipts per batch.
pub const MAX_BATCH: usize = 1000;

/// The schema of receipts (a registry migration).
pub const SCHEMA: &str = r#"
CREATE TABLE receipts (
    request_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    key_id TEXT NOT NULL,
    node TEXT NOT NULL,
    provider TEXT NOT NULL,
    app TEXT NOT NULL,
    app_version BIGINT NOT NULL,
    model TEXT NOT NULL,
    models TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    embeddings BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    unpaid BIGINT NOT NULL,
    wall_ms BIGINT NOT NULL,
    router_ms BIGINT NOT NULL,
    status BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    day TEXT NOT NULL
);
CREATE INDEX receipts_account ON receipts (account, at_ms)
"#;

/// Holds up to `req.amount` of `req.account`'s available credits (at least
/// `req.min_amount`) for a router: 402 when the account has less.
pub async fn lease(ledger: &SqlLedger, req: &LeaseRequest) -> ApiResult<Lease> {
    if req.min_amount == 0 || req.amount < req.min_amount || req.amount > i64::MAX as u64 {
        return Err(ApiError::bad_request("invalid_amount", "a lease needs 0 < min_amount <= amount"));
    }
    let ttl = req.ttl_s.clamp(1, MAX_LEASE_TTL_S);
    // Balances move between the read and the hold: a refused hold is tried again with
    // what is available then.
    for _ in 0..3 {
        let available = ledger.balance(&req.account).await?.map(|c| c.available()).unwrap_or(0).max(0) as u64;
        if available < req.min_amount {
            return Err(payment_required(&req.account, available, req.min_amount));
        }
        let amount = req.amount.min(available);
        let id = format!("lease:{}", crate::auth::random_id());
        let expires_at = now_ms() + (ttl * 1000) as i64;
        let hold = Transfer::pending(&id, &req.account, ESCROW, amount as i64, expires_at, "reserve");
        match ledger.transfer(&[hold]).await?.as_slice() {
            [Outcome::Created] => {
                return Ok(Lease { id, account: req.account.clone(), amount, expires_at_ms: expires_at as u64 });
            }
            [Outcome::Refused(Refusal::InsufficientFunds { .. })] => continue,
            other => return Err(ApiError::internal("the lease was refused", format!("{other:?}"))),
        }
    }
    Err(ApiError::conflict("the account's balance changed while holding credits; retry"))
}

/// 402: the account cannot pay for the request.
pub fn payment_required(account: &str, available: u64, needed: u64) -> ApiError {
    use wasmesh_api::wire::format_micros;
    ApiError::new(
        axum::http::StatusCode::PAYMENT_REQUIRED,
        "payment_required",
        format!(
            "account '{account}' has {} credits available and this request may cost up to {}; add credits (an admin runs `wasmesh credits grant {account} AMOUNT`), or ask for fewer tokens",
            format_micros(available as i64),
            format_micros(needed as i64)
        ),
    )
}

/// Releases what is left of lease `id`.
pub async fn close_lease(ledger: &SqlLedger, id: &str) -> ApiResult<bool> {
    if !id.starts_with("lease:") {
        return Err(ApiError::not_found(format!("no lease '{id}'")));
    }
    match ledger.transfer(&[Transfer::void(format!("close:{id}"), id, "release")]).await?.as_slice() {
        [Outcome::Created] => Ok(true),
        [Outcome::Exists] | [Outcome::Refused(Refusal::PendingClosed(_))] => Ok(false),
        [Outcome::Refused(Refusal::NoPending(_))] => Err(ApiError::not_found(format!("no lease '{id}'"))),
        other => Err(ApiError::internal("closing the lease failed", format!("{other:?}"))),
    }
}

struct Checked {
    metered: MeteredReceipt,
    receipt: Receipt,
    provider: String,
}

/// Records and charges a batch of receipts; one outcome per receipt, in order.
pub async fn post(
    db: &Db,
    ledger: &SqlLedger,
    master: &[u8; 32],
    fee_bps: u32,
    batch: Vec<MeteredReceipt>,
) -> ApiResult<Vec<ReceiptOutcome>> {
    if batch.len() > MAX_BATCH {
        return Err(ApiError::bad_request("too_many", format!("at most {MAX_BATCH} receipts per batch")));
    }
    let mut outcomes: Vec<Option<ReceiptOutcome>> = vec![None; batch.len()];
    let mut nodes: HashMap<String, Option<(VerifyingKey, String)>> = HashMap::new();
    let mut checked: Vec<(usize, Checked)> = Vec::new();
    let mut ids = HashSet::new();
    for (i, metered) in batch.into_iter().enumerate() {
        let refuse = |reason: String| Some(ReceiptOutcome::Refused { reason });
        let receipt: Receipt = match serde_json::from_str(&metered.signed.receipt) {
            Ok(r) => r,
            Err(e) => {
                outcomes[i] = refuse(format!("the receipt is not valid JSON: {e}"));
                continue;
            }
        };
        if receipt.request_id.is_empty() || receipt.request_id.len() > 128 {
            outcomes[i] = refuse("the receipt has no valid request id".into());
            continue;
        }
        if !ids.insert(receipt.request_id.clone()) {
            outcomes[i] = Some(ReceiptOutcome::Duplicate);
            continue;
        }
        if !nodes.contains_key(&receipt.node) {
            nodes.insert(receipt.node.clone(), node_key(db, &receipt.node).await?);
        }
        let Some((key, provider)) = nodes[&receipt.node].clone() else {
            outcomes[i] = refuse(format!("node '{}' is not registered", receipt.node));
            continue;
        };
        if !authentic(&metered.signed, &receipt.node, &key, master) {
            outcomes[i] = refuse(format!("the receipt is not signed by node '{}'", receipt.node));
            continue;
        }
        checked.push((i, Checked { metered, receipt, provider }));
    }
    // Replays: request ids recorded before.
    let rids: Vec<&str> = checked.iter().map(|(_, c)| c.receipt.request_id.as_str()).collect();
    let mut seen = HashSet::new();
    for chunk in rids.chunks(crate::ledger::params_per_statement(db.backend)) {
        let sql = format!(
            "SELECT request_id FROM receipts WHERE request_id IN ({})",
            crate::ledger::placeholders(db.backend, 1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (String,)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        seen.extend(q.fetch_all(&db.pool).await?.into_iter().map(|(id,)| id));
    }
    let mut fresh = Vec::new();
    for (i, c) in checked {
        if seen.contains(&c.receipt.request_id) {
            outcomes[i] = Some(ReceiptOutcome::Duplicate);
        } else {
            fresh.push((i, c));
        }
    }

    // 1. The caller pays the escrow from its lease what each request held, in one
    //    post per lease for the whole batch. The post's id names exactly which receipts
    //    and amounts it pays, so a resent batch makes the same id and moves nothing. A
    //    refusal is for good (a closed lease stays closed, what it holds only shrinks):
    //    those receipts pay directly, one by one, below.
    let mut groups: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
    for (k, (_, c)) in fresh.iter().enumerate() {
        let held = c.metered.cost.min(c.metered.reserved);
        if let (Some(lease), true) = (c.metered.lease.as_deref(), held > 0) {
            groups.entry(lease).or_default().push((k, held));
        }
    }
    let digest = |items: &[(usize, u64)]| {
        let mut h = blake3::Hasher::new();
        for (k, amount) in items {
            h.update(fresh[*k].1.receipt.request_id.as_bytes());
            h.update(&amount.to_le_bytes());
        }
        h.finalize().to_hex()[..32].to_string()
    };
    let grouped: Vec<Group> = groups.iter().map(|(lease, items)| (*lease, items, digest(items))).collect();
    let spends: Vec<Transfer> = grouped
        .iter()
        .map(|(lease, items, d)| {
            let total: u64 = items.iter().map(|(_, a)| a).sum();
            Transfer::post(format!("spend:{lease}:{d}"), lease, total as i64, "spend")
                .with_reference(format!("{} requests", items.len()))
        })
        .collect();
    let done = ledger.transfer(&spends).await?;
    let mut from_lease: HashMap<usize, u64> = HashMap::new();
    let mut paid_groups = Vec::new();
    for (group, outcome) in grouped.iter().zip(&done) {
        if matches!(outcome, Outcome::Created | Outcome::Exists) {
            from_lease.extend(group.1.iter().copied());
            paid_groups.push(group);
        }
    }
    // 2. What the lease did not cover (more than was held, or a closed lease) comes
    //    from the caller's available credits, if it has them: one transfer per receipt.
    let mut direct = Vec::new();
    for (k, (_, c)) in fresh.iter().enumerate() {
        let rid = &c.receipt.request_id;
        let rest = c.metered.cost.saturating_sub(from_lease.get(&k).copied().unwrap_or(0));
        if rest > 0 {
            direct.push(
                Transfer::posted(format!("extra:{rid}"), &c.metered.account, ESCROW, rest as i64, "spend")
                    .with_reference(rid),
            );
        }
    }
    let done = ledger.transfer(&direct).await?;
    let mut paid_directly: HashMap<&str, u64> = HashMap::new();
    for (t, o) in direct.iter().zip(&done) {
        if matches!(o, Outcome::Created | Outcome::Exists) {
            paid_directly.insert(t.reference.as_str(), t.amount as u64);
        }
    }
    // 3. The escrow pays the platform's fee (of each request, rounded down) and holds
    //    the rest for the serving node's account: per lease group and provider, and per
    //    receipt for what was paid directly.
    let providers: HashSet<&str> = fresh.iter().map(|(_, c)| c.provider.as_str()).collect();
    for provider in providers {
        ledger.ensure_account(provider, NO_OVERDRAFT).await?;
    }
    let fee_of = |amount: u64| (u128::from(amount) * u128::from(fee_bps) / 10_000) as u64;
    let mut splits = Vec::new();
    // Each receipt's share of the pending earnings that hold its provider's part (what a
    // caught node forfeits: `crate::audits::forfeit`), by receipt index.
    let mut earnings: HashMap<usize, BTreeMap<String, u64>> = HashMap::new();
    for (lease, items, d) in paid_groups {
        let mut fee = 0;
        let mut earned: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, amount) in items.iter() {
            fee += fee_of(*amount);
            let provider = fresh[*k].1.provider.as_str();
            let share = amount - fee_of(*amount);
            *earned.entry(provider).or_default() += share;
            if share > 0 {
                earnings.entry(*k).or_default().insert(format!("earn:{lease}:{provider}:{d}"), share);
            }
        }
        let reference = format!("{} requests", items.len());
        if fee > 0 {
            splits.push(
                Transfer::posted(format!("fee:{lease}:{d}"), ESCROW, FEES, fee as i64, "fee")
                    .with_reference(&reference),
            );
        }
        for (provider, amount) in earned.into_iter().filter(|(_, a)| *a > 0) {
            splits.push(
                Transfer::pending(
                    format!("earn:{lease}:{provider}:{d}"),
                    ESCROW,
                    provider,
                    amount as i64,
                    0,
                    "earning",
                )
                .with_reference(&reference),
            );
        }
    }
    for (k, (_, c)) in fresh.iter().enumerate() {
        let rid = c.receipt.request_id.as_str();
        let Some(&amount) = paid_directly.get(rid) else { continue };
        if amount > fee_of(amount) {
            earnings.entry(k).or_default().insert(format!("earn:{rid}"), amount - fee_of(amount));
        }
        let fee = fee_of(amount);
        if fee > 0 {
            splits.push(Transfer::posted(format!("fee:{rid}"), ESCROW, FEES, fee as i64, "fee").with_reference(rid));
        }
        if amount > fee {
            splits.push(
                Transfer::pending(format!("earn:{rid}"), ESCROW, &c.provider, (amount - fee) as i64, 0, "earning")
                    .with_reference(rid),
            );
        }
    }
    let done = ledger.transfer(&splits).await?;
    if let Some((t, o)) = splits.iter().zip(&done).find(|(_, o)| matches!(o, Outcome::Refused(_))) {
        // Cannot happen while the books hold: the escrow just received what it pays.
        return Err(ApiError::internal("splitting a receipt's cost failed", format!("{}: {o:?}", t.id)));
    }
    let paid: HashMap<String, u64> = fresh
        .iter()
        .enumerate()
        .map(|(k, (_, c))| {
            let rid = c.receipt.request_id.clone();
            let total =
                from_lease.get(&k).copied().unwrap_or(0) + paid_directly.get(rid.as_str()).copied().unwrap_or(0);
            (rid, total)
        })
        .collect();
    // 4. The receipts, last and all at once (a crash before this is answered by a resend).
    let mut tx = db.pool.begin().await?;
    let columns = 24;
    for (n, chunk) in fresh.chunks(crate::ledger::params_per_statement(db.backend) / columns).enumerate() {
        let first = n * (crate::ledger::params_per_statement(db.backend) / columns);
        let mut sql = String::from(
            "INSERT INTO receipts (request_id, account, key_id, node, provider, app, app_version, model, models, \
             input_tokens, output_tokens, embeddings, cost, unpaid, wall_ms, router_ms, status, at_ms, day, finish_reason, \
             commitment, engine, cpu_class, earnings) VALUES ",
        );
        sql.push_str(
            &(0..chunk.len())
                .map(|r| format!("({})", crate::ledger::placeholders(db.backend, r * columns + 1, columns)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for (j, (_, c)) in chunk.iter().enumerate() {
            let r = &c.receipt;
            let earned = serde_json::to_string(&earnings.get(&(first + j)).cloned().unwrap_or_default())
                .expect("JSON of plain values");
            let charged = paid.get(&r.request_id).copied().unwrap_or(0);
            q = q
                .bind(&r.request_id)
                .bind(&c.metered.account)
                .bind(&c.metered.key_id)
                .bind(&r.node)
                .bind(&c.provider)
                .bind(&r.app)
                .bind(r.app_version as i64)
                .bind(r.models.first().cloned().unwrap_or_else(|| "-".into()))
                .bind(serde_json::to_string(&r.models).unwrap_or_default())
                .bind(r.input_tokens as i64)
                .bind(r.output_tokens as i64)
                .bind(r.embeddings as i64)
                .bind(charged as i64)
                .bind(c.metered.cost.saturating_sub(charged) as i64)
                .bind(r.wall_ms as i64)
                .bind(c.metered.router_ms as i64)
                .bind(i64::from(r.status))
                .bind(r.at_ms as i64)
                .bind(day_of(r.at_ms))
                .bind(r.finish_reason.clone().unwrap_or_default())
                .bind(r.commitment.clone().unwrap_or_default())
                .bind(&r.engine)
                .bind(&r.cpu_class)
                .bind(earned);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    for (i, c) in &fresh {
        let unpaid = c.metered.cost.saturating_sub(paid.get(&c.receipt.request_id).copied().unwrap_or(0));
        if unpaid > 0 {
            tracing::warn!(request = %c.receipt.request_id, account = %c.metered.account, unpaid, "a receipt was not fully paid");
        }
        outcomes[*i] = Some(ReceiptOutcome::Posted);
    }
    Ok(outcomes.into_iter().map(|o| o.unwrap_or(ReceiptOutcome::Refused { reason: "not processed".into() })).collect())
}

/// Whether node `node` (of Ed25519 `key`) made `signed`: its MAC under the node's
/// receipt key (derived from `master`), or else its signature.
pub(crate) fn authentic(signed: &SignedReceipt, node: &str, key: &VerifyingKey, master: &[u8; 32]) -> bool {
    if !signed.mac.is_empty() {
        return wasmesh_api::wire::receipt_mac_valid(&receipt_key(master, node), &signed.receipt, &signed.mac);
    }
    from_hex(&signed.signature)
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .is_some_and(|b| key.verify(signed.receipt.as_bytes(), &Signature::from_bytes(&b)).is_ok())
}

async fn node_key(db: &Db, node: &str) -> ApiResult<Option<(VerifyingKey, String)>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT n.public_key, k.account FROM nodes n JOIN keys k ON k.id = n.key_id WHERE n.id = $1 AND n.role = 'host'",
    )
    .bind(node)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.and_then(|(hex, account)| {
        let bytes: [u8; 32] = from_hex(&hex)?.try_into().ok()?;
        Some((VerifyingKey::from_bytes(&bytes).ok()?, account))
    }))
}

/// `YYYY-MM-DD` (UTC) of a Unix-ms time.
fn day_of(at_ms: u64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp((at_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// Posts every provider earning older than `settle_after_ms`; how many.
pub async fn settle(db: &Db, ledger: &SqlLedger, settle_after_ms: i64) -> ApiResult<usize> {
    let due: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.id, p.remaining FROM ledger_pending p JOIN ledger_transfers t ON t.id = p.id \
         WHERE p.open = 1 AND t.code = 'earning' AND t.created_at <= $1 ORDER BY p.id LIMIT 1000",
    )
    .bind(now_ms() - settle_after_ms)
    .fetch_all(&db.pool)
    .await?;
    let batch: Vec<Transfer> =
        due.iter().map(|(id, left)| Transfer::post(format!("settle:{id}"), id, *left, "settle")).collect();
    let done = ledger.transfer(&batch).await?;
    Ok(done.iter().filter(|o| **o == Outcome::Created).count())
}

/// One request's record, if it belongs to `account` (`None` for an admin: any).
pub async fn generation(db: &Db, id: &str, account: Option<&str>) -> ApiResult<Generation> {
    type Row = (String, String, String, i64, String, String, i64, i64, i64, i64, i64, i64, i64, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT account, app, models, app_version, node, request_id, input_tokens, output_tokens, embeddings, cost, \
         wall_ms, router_ms, status, at_ms FROM receipts WHERE request_id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let not_found =
        || ApiError::not_found(format!("no request '{id}' of your account (receipts arrive within seconds)"));
    let Some((acct, app, models, version, node, rid, input, output, embeddings, cost, wall, router, status, at)) = row
    else {
        return Err(not_found());
    };
    if account.is_some_and(|a| a != acct) {
        return Err(not_found());
    }
    // What it generated and on what (sqlx's row tuples stop at 16 columns).
    let (finish, commitment, engine, cpu_class): (String, String, String, String) =
        sqlx::query_as("SELECT finish_reason, commitment, engine, cpu_class FROM receipts WHERE request_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await?;
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(Generation {
        id: rid,
        account: acct,
        app,
        app_version: version as u64,
        models: serde_json::from_str(&models).unwrap_or_default(),
        node,
        input_tokens: input as u64,
        output_tokens: output as u64,
        embeddings: embeddings as u64,
        cost: cost as u64,
        wall_ms: wall as u64,
        router_ms: router as u64,
        status: status as u16,
        at_ms: at as u64,
        finish_reason: some(finish),
        commitment: some(commitment),
        engine,
        cpu_class,
    })
}

/// `account`'s requests, tokens and cost grouped `by` `app`, `model` or `day`.
pub async fn usage(db: &Db, account: &str, by: &str) -> ApiResult<Vec<UsageRow>> {
    let column = match by {
        "app" => "app",
        "model" => "model",
        "day" => "day",
        other => {
            return Err(ApiError::bad_request("invalid_request", format!("`by` is app, model or day, not '{other}'")));
        }
    };
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {column}, COUNT(*), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM receipts WHERE account = $1 GROUP BY {column} ORDER BY {column}"
    ))
    .bind(account)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, requests, input, output, cost)| UsageRow {
            key,
            requests: requests as u64,
            input_tokens: input as u64,
            output_tokens: output as u64,
            cost: cost as u64,
        })
        .collect())
}

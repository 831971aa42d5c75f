//! Credits on top of the ledger: grants, balances, history and prices.
//!
//! Each tenant account has a ledger account of the same name (made at its first
//! grant or earning) that may not be overdrawn. Grants move credits from the mint.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ledger::{self, Columns, MINT, NO_OVERDRAFT, Outcome, SqlLedger, Transfer};
use wasmesh_api::wire::{Balance, Grant, LedgerEntry, Price};

/// The largest single grant: a billion credits.
const MAX_GRANT: u64 = 1_000_000_000 * wasmesh_api::wire::MICROS_PER_CREDIT;

impl From<ledger::LedgerError> for ApiError {
    fn from(e: ledger::LedgerError) -> Self {
        ApiError::internal("the ledger failed", e)
    }
}

/// `account`'s balance from its ledger columns (all zero before its first credit).
pub fn balance_of(account: &str, c: Option<Columns>) -> Balance {
    let c = c.unwrap_or_default();
    Balance {
        account: account.to_string(),
        available: c.available(),
        credits_posted: c.credits_posted,
        debits_posted: c.debits_posted,
        reserved: c.debits_pending,
        pending_earnings: c.credits_pending,
    }
}

/// `account`'s balance.
pub async fn balance(ledger: &SqlLedger, account: &str) -> ApiResult<Balance> {
    Ok(balance_of(account, ledger.balance(account).await?))
}

/// Credits `grant.amount` micros to `grant.account` from the mint; `by` is the admin
/// key's id. A grant sent again with the same id moves nothing.
pub async fn grant(db: &Db, ledger: &SqlLedger, grant: &Grant, by: &str) -> ApiResult<(Balance, bool)> {
    crate::accounts::require_exists(db, &grant.account).await?;
    if grant.amount == 0 || grant.amount > MAX_GRANT {
        return Err(ApiError::bad_request(
            "invalid_amount",
            format!("a grant is 1 to {MAX_GRANT} micros (1 credit = 1,000,000 micros); {} asked", grant.amount),
        ));
    }
    let id = match &grant.id {
        Some(id) if id.is_empty() || id.len() > 128 => {
            return Err(ApiError::bad_request("invalid_request", "a grant id is 1 to 128 characters"));
        }
        Some(id) => format!("grant:{id}"),
        None => format!("grant:{}", crate::auth::random_id()),
    };
    ledger.ensure_account(&grant.account, NO_OVERDRAFT).await?;
    let memo = if grant.memo.is_empty() { format!("by key {by}") } else { format!("{} (by key {by})", grant.memo) };
    let transfer =
        Transfer::posted(id, MINT, &grant.account, grant.amount as i64, "grant").with_reference(truncate(&memo, 256));
    let outcome = ledger.transfer(std::slice::from_ref(&transfer)).await?;
    let created = match outcome.first() {
        Some(Outcome::Created) => true,
        Some(Outcome::Exists) => false,
        Some(Outcome::Refused(r)) => return Err(ApiError::internal("the grant was refused", r)),
        None => return Err(ApiError::internal("the grant was refused", "no outcome")),
    };
    Ok((balance(ledger, &grant.account).await?, created))
}

/// `account`'s transfers, newest first.
pub async fn history(
    ledger: &SqlLedger,
    account: &str,
    limit: u32,
    before_ms: Option<u64>,
) -> ApiResult<Vec<LedgerEntry>> {
    let before = before_ms.map(|b| b.min(i64::MAX as u64) as i64).unwrap_or(i64::MAX);
    Ok(ledger.history(account, i64::from(limit.clamp(1, 1000)), before).await?)
}

/// Sets the price of `price.model` (`-`: requests that use no model).
pub async fn set_price(db: &Db, price: &Price) -> ApiResult<()> {
    if price.model != "-" {
        wasmesh_api::check_name("model name", &price.model)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    }
    let as_i64 = |v: u64, what: &str| {
        i64::try_from(v).map_err(|_| ApiError::bad_request("invalid_amount", format!("{what} {v} is too large")))
    };
    sqlx::query(
        "INSERT INTO prices (model, input_per_mtok, output_per_mtok, per_call, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (model) DO UPDATE SET input_per_mtok = $2, output_per_mtok = $3, per_call = $4, updated_at = $5",
    )
    .bind(&price.model)
    .bind(as_i64(price.input_per_mtok, "input_per_mtok")?)
    .bind(as_i64(price.output_per_mtok, "output_per_mtok")?)
    .bind(as_i64(price.per_call, "per_call")?)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The prices `account` may see: the per-call price and those of models it owns or
/// that are public; every price for `all` (admins and routers).
pub async fn prices(db: &Db, account: &str, all: bool) -> ApiResult<Vec<Price>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.model, p.input_per_mtok, p.output_per_mtok, p.per_call FROM prices p \
         LEFT JOIN models m ON m.name = p.model \
         WHERE $1 = 1 OR p.model = '-' OR m.public = 1 OR m.account = $2 ORDER BY p.model",
    )
    .bind(i64::from(all))
    .bind(account)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(model, input, output, per_call)| Price {
            model,
            input_per_mtok: input.max(0) as u64,
            output_per_mtok: output.max(0) as u64,
            per_call: per_call.max(0) as u64,
        })
        .collect())
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

//! The ledger in the registry's database: one transaction per batch of transfers.

use super::{Columns, LedgerError, Outcome, Phase, Refusal, Transfer};
use crate::db::{Backend, Db, now_ms};
use sqlx::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use wasmesh_api::wire::LedgerEntry;

/// Parameters per statement. On SQLite they are anonymous (`?`, see [`placeholders`]),
/// and a statement is a call, not a round trip: a few hundred is plenty. PostgreSQL's
/// statements are round trips: larger is better there.
pub(crate) fn params_per_statement(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 500,
        Backend::Postgres => 2000,
    }
}

/// `n` parameters, the first being number `from`: `$from, $from+1, ...` on PostgreSQL;
/// anonymous `?, ?, ...` on SQLite (bound in order). sqlx binds a numbered SQLite
/// parameter by looking its name up among all of the statement's (SQLite walks a list
/// for each), so numbered parameters cost the square of their count per statement:
/// `sqlite3_bind_parameter_name` was 3% of a metered fabric's profile with 200 per
/// statement. An anonymous one has no name to look up.
pub(crate) fn placeholders(backend: Backend, from: usize, n: usize) -> String {
    match backend {
        Backend::Sqlite => vec!["?"; n].join(", "),
        Backend::Postgres => (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "),
    }
}

/// The ledger over the registry's [`Db`].
pub struct SqlLedger {
    db: Db,
    /// SQLite has one writer: batches of this process take turns here rather than
    /// in the database's busy loop.
    writer: tokio::sync::Mutex<()>,
}

struct PendingRow {
    debit: String,
    credit: String,
    remaining: i64,
    open: bool,
    timeout_at: i64,
    /// Made in this batch (inserted rather than updated).
    new: bool,
    changed: bool,
}

/// One transfer row to insert.
struct Row<'a> {
    id: &'a str,
    debit: String,
    credit: String,
    amount: i64,
    phase: &'static str,
    pending_id: Option<&'a str>,
    code: &'static str,
    reference: &'a str,
}

impl SqlLedger {
    /// The ledger in `db` (its tables come with the registry's migrations).
    pub fn new(db: Db) -> Self {
        Self { db, writer: tokio::sync::Mutex::new(()) }
    }

    /// Makes account `id` with `flags` unless it exists.
    pub async fn ensure_account(&self, id: &str, flags: i64) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO ledger_accounts (id, flags, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(flags)
        .bind(now_ms())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Account `id`'s balance columns, if it exists.
    pub async fn balance(&self, id: &str) -> Result<Option<Columns>, LedgerError> {
        let row: Option<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT flags, debits_posted, credits_posted, debits_pending, credits_pending FROM ledger_accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.map(|(flags, debits_posted, credits_posted, debits_pending, credits_pending)| Columns {
            flags,
            debits_posted,
            credits_posted,
            debits_pending,
            credits_pending,
        }))
    }

    /// Account `id`'s transfers, newest first: at most `limit`, made at or before `before_ms`.
    pub async fn history(&self, id: &str, limit: i64, before_ms: i64) -> Result<Vec<LedgerEntry>, LedgerError> {
        type R = (String, i64, String, String, String, i64, String, Option<String>, String);
        let rows: Vec<R> = sqlx::query_as(
            "SELECT id, created_at, code, debit, credit, amount, phase, pending_id, reference FROM ledger_transfers \
             WHERE (debit = $1 OR credit = $1) AND created_at <= $2 ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(id)
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at, code, debit, credit, amount, phase, pending_id, reference)| LedgerEntry {
                id,
                at_ms: at.max(0) as u64,
                code,
                debit,
                credit,
                amount,
                phase,
                pending_id,
                reference,
            })
            .collect())
    }

    /// Releases every open pending transfer whose timeout passed by `now_ms`; how many.
    pub async fn expire(&self, now_ms: i64) -> Result<usize, LedgerError> {
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM ledger_pending WHERE open = 1 AND timeout_at > 0 AND timeout_at <= $1 ORDER BY id LIMIT 1000",
        )
        .bind(now_ms)
        .fetch_all(&self.db.pool)
        .await?;
        let batch: Vec<Transfer> = due
            .iter()
            .map(|(id,)| Transfer {
                phase: Phase::Expire { pending_id: id.clone() },
                ..Transfer::void(format!("expire:{id}"), id, "release")
            })
            .collect();
        let done = self.transfer(&batch).await?;
        Ok(done.iter().filter(|o| **o == Outcome::Created).count())
    }

    /// Makes a batch of transfers in one database transaction, in order (a transfer
    /// sees the effect of those before it); one outcome per transfer. Only a database
    /// failure fails the whole batch (then nothing of it moved).
    pub async fn transfer(&self, batch: &[Transfer]) -> Result<Vec<Outcome>, LedgerError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let sqlite = self.db.backend == Backend::Sqlite;
        let _turn = if sqlite { Some(self.writer.lock().await) } else { None };
        let mut tx = self.db.pool.begin().await?;
        if sqlite {
            // Take SQLite's write lock first, so this transaction never has to upgrade.
            sqlx::query("UPDATE ledger_lock SET n = n + 1 WHERE id = 1").execute(&mut *tx).await?;
        }
        let lock = if sqlite { "" } else { " FOR UPDATE" };
        let per = params_per_statement(self.db.backend);

        let ids: Vec<&str> = batch.iter().map(|t| t.id.as_str()).collect();
        let existing: HashSet<String> =
            select_in(&mut tx, self.db.backend, per, "SELECT id FROM ledger_transfers WHERE id IN", &ids, "")
                .await?
                .into_iter()
                .map(|(id,)| id)
                .collect();

        let mut pending_ids: Vec<&str> = batch.iter().filter_map(|t| t.phase.pending_id()).collect();
        pending_ids.sort_unstable();
        pending_ids.dedup();
        let pending_lock = if sqlite { " ORDER BY p.id" } else { " ORDER BY p.id FOR UPDATE OF p" };
        let rows: Vec<(String, String, String, i64, i64, i64)> = select_in(
            &mut tx,
            self.db.backend,
            per,
            "SELECT p.id, t.debit, t.credit, p.remaining, p.open, p.timeout_at FROM ledger_pending p \
             JOIN ledger_transfers t ON t.id = p.id WHERE p.id IN",
            &pending_ids,
            pending_lock,
        )
        .await?;
        let mut pendings: HashMap<String, PendingRow> = rows
            .into_iter()
            .map(|(id, debit, credit, remaining, open, timeout_at)| {
                (id, PendingRow { debit, credit, remaining, open: open != 0, timeout_at, new: false, changed: false })
            })
            .collect();

        let mut account_ids: Vec<&str> = Vec::new();
        for t in batch {
            account_ids.extend([t.debit.as_str(), t.credit.as_str()].into_iter().filter(|a| !a.is_empty()));
        }
        for p in pendings.values() {
            account_ids.extend([p.debit.as_str(), p.credit.as_str()]);
        }
        account_ids.sort_unstable();
        account_ids.dedup();
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = select_in(
            &mut tx,
            self.db.backend,
            per,
            "SELECT id, flags, debits_posted, credits_posted, debits_pending, credits_pending FROM ledger_accounts WHERE id IN",
            &account_ids,
            &format!(" ORDER BY id{lock}"),
        )
        .await?;
        let mut accounts: BTreeMap<String, (Columns, bool)> = rows
            .into_iter()
            .map(|(id, flags, dp, cp, dpend, cpend)| {
                let columns = Columns {
                    flags,
                    debits_posted: dp,
                    credits_posted: cp,
                    debits_pending: dpend,
                    credits_pending: cpend,
                };
                (id, (columns, false))
            })
            .collect();

        let mut outcomes = Vec::with_capacity(batch.len());
        let mut inserts: Vec<Row> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for t in batch {
            if existing.contains(&t.id) || !seen.insert(t.id.as_str()) {
                outcomes.push(Outcome::Exists);
                continue;
            }
            match apply(t, &mut accounts, &mut pendings) {
                Ok((debit, credit, amount)) => {
                    inserts.push(Row {
                        id: &t.id,
                        debit,
                        credit,
                        amount,
                        phase: t.phase.name(),
                        pending_id: t.phase.pending_id(),
                        code: t.code,
                        reference: &t.reference,
                    });
                    outcomes.push(Outcome::Created);
                }
                Err(refusal) => {
                    seen.remove(t.id.as_str());
                    outcomes.push(Outcome::Refused(refusal));
                }
            }
        }

        let now = now_ms();
        let rows_per_insert = params_per_statement(self.db.backend) / 9;
        for chunk in inserts.chunks(rows_per_insert) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("({})", placeholders(self.db.backend, i * 9 + 1, 9))).collect();
            let sql = format!(
                "INSERT INTO ledger_transfers (id, debit, credit, amount, phase, pending_id, code, reference, created_at) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query::<Any>(&sql);
            for r in chunk {
                q = q
                    .bind(r.id)
                    .bind(r.debit.as_str())
                    .bind(r.credit.as_str())
                    .bind(r.amount)
                    .bind(r.phase)
                    .bind(r.pending_id)
                    .bind(r.code)
                    .bind(r.reference)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        let new: Vec<(&String, &PendingRow)> = pendings.iter().filter(|(_, p)| p.new).collect();
        for chunk in new.chunks(rows_per_insert) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("({})", placeholders(self.db.backend, i * 4 + 1, 4))).collect();
            let sql =
                format!("INSERT INTO ledger_pending (id, remaining, open, timeout_at) VALUES {}", values.join(", "));
            let mut q = sqlx::query::<Any>(&sql);
            for (id, p) in chunk {
                q = q.bind(id.as_str()).bind(p.remaining).bind(i64::from(p.open)).bind(p.timeout_at);
            }
            q.execute(&mut *tx).await?;
        }
        for (id, p) in pendings.iter().filter(|(_, p)| !p.new && p.changed) {
            sqlx::query("UPDATE ledger_pending SET remaining = $1, open = $2 WHERE id = $3")
                .bind(p.remaining)
                .bind(i64::from(p.open))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for (id, (c, changed)) in &accounts {
            if !changed {
                continue;
            }
            sqlx::query(
                "UPDATE ledger_accounts SET debits_posted = $1, credits_posted = $2, debits_pending = $3, \
                 credits_pending = $4 WHERE id = $5",
            )
            .bind(c.debits_posted)
            .bind(c.credits_posted)
            .bind(c.debits_pending)
            .bind(c.credits_pending)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The database.
    pub(super) fn db(&self) -> &Db {
        &self.db
    }
}

/// `SELECT ... IN (ids)` in chunks of `per`, with `tail` after the list.
async fn select_in<T>(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    per: usize,
    head: &str,
    ids: &[&str],
    tail: &str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for chunk in ids.chunks(per) {
        let sql = format!("{head} ({}){tail}", placeholders(backend, 1, chunk.len()));
        let mut q = sqlx::query_as::<Any, T>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

fn add(a: i64, b: i64) -> Result<i64, Refusal> {
    a.checked_add(b).ok_or(Refusal::InvalidAmount(b))
}

/// Applies one transfer to the balances read for the batch: the debit and credit
/// accounts and the amount moved, or why not (then nothing changed).
fn apply(
    t: &Transfer,
    accounts: &mut BTreeMap<String, (Columns, bool)>,
    pendings: &mut HashMap<String, PendingRow>,
) -> Result<(String, String, i64), Refusal> {
    match &t.phase {
        Phase::Posted | Phase::Pending { .. } => {
            if t.amount <= 0 {
                return Err(Refusal::InvalidAmount(t.amount));
            }
            if t.debit == t.credit {
                return Err(Refusal::SameAccount);
            }
            let (debit, _) = accounts.get(&t.debit).ok_or_else(|| Refusal::NoAccount(t.debit.clone()))?;
            let (credit, _) = accounts.get(&t.credit).ok_or_else(|| Refusal::NoAccount(t.credit.clone()))?;
            let pending = matches!(t.phase, Phase::Pending { .. });
            let (mut debit, mut credit) = (*debit, *credit);
            if debit.flags & super::NO_OVERDRAFT != 0 && debit.available() < t.amount {
                return Err(Refusal::InsufficientFunds {
                    account: t.debit.clone(),
                    available: debit.available(),
                    needed: t.amount,
                });
            }
            if pending {
                debit.debits_pending = add(debit.debits_pending, t.amount)?;
                credit.credits_pending = add(credit.credits_pending, t.amount)?;
            } else {
                debit.debits_posted = add(debit.debits_posted, t.amount)?;
                credit.credits_posted = add(credit.credits_posted, t.amount)?;
            }
            accounts.insert(t.debit.clone(), (debit, true));
            accounts.insert(t.credit.clone(), (credit, true));
            if let Phase::Pending { timeout_at_ms } = t.phase {
                pendings.insert(
                    t.id.clone(),
                    PendingRow {
                        debit: t.debit.clone(),
                        credit: t.credit.clone(),
                        remaining: t.amount,
                        open: true,
                        timeout_at: timeout_at_ms,
                        new: true,
                        changed: true,
                    },
                );
            }
            Ok((t.debit.clone(), t.credit.clone(), t.amount))
        }
        Phase::Post { pending_id } | Phase::Void { pending_id } | Phase::Expire { pending_id } => {
            let p = pendings.get_mut(pending_id).ok_or_else(|| Refusal::NoPending(pending_id.clone()))?;
            if !p.open {
                return Err(Refusal::PendingClosed(pending_id.clone()));
            }
            let post = matches!(t.phase, Phase::Post { .. });
            let amount = if post { t.amount } else { p.remaining };
            if post && amount <= 0 {
                return Err(Refusal::InvalidAmount(amount));
            }
            if amount > p.remaining {
                return Err(Refusal::ExceedsPending { pending: pending_id.clone(), remaining: p.remaining, amount });
            }
            let (mut debit, _) = *accounts.get(&p.debit).ok_or_else(|| Refusal::NoAccount(p.debit.clone()))?;
            let (mut credit, _) = *accounts.get(&p.credit).ok_or_else(|| Refusal::NoAccount(p.credit.clone()))?;
            debit.debits_pending -= amount;
            credit.credits_pending -= amount;
            if post {
                debit.debits_posted = add(debit.debits_posted, amount)?;
                credit.credits_posted = add(credit.credits_posted, amount)?;
            }
            accounts.insert(p.debit.clone(), (debit, true));
            accounts.insert(p.credit.clone(), (credit, true));
            p.remaining -= amount;
            p.open = post && p.remaining > 0;
            p.changed = true;
            Ok((p.debit.clone(), p.credit.clone(), amount))
        }
    }
}

//! `wasmesh ledger check`: every balance recomputed from the transfers, and the
//! books balanced.

use super::{Columns, LedgerError, NO_OVERDRAFT, SqlLedger};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use wasmesh_api::wire::LedgerCheck;

#[derive(Default)]
struct Replayed {
    columns: Columns,
}

/// What a pending transfer held, and what became of it.
#[derive(Default)]
struct Held {
    amount: i64,
    moved: i64,
    closed_by: u32,
}

impl SqlLedger {
    /// Replays every transfer: each account's columns must equal the sums of its
    /// transfers, posted debits must equal posted credits (and pending ones likewise)
    /// across all accounts, no account flagged against overdraft may be overdrawn, and
    /// every pending transfer's remainder must be its amount less what was posted and
    /// released from it. The first inconsistency is named.
    pub async fn check(&self) -> Result<LedgerCheck, LedgerError> {
        let pool = &self.db().pool;
        let stored: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, flags, debits_posted, credits_posted, debits_pending, credits_pending FROM ledger_accounts ORDER BY id",
        )
        .fetch_all(pool)
        .await?;
        let mut replayed: BTreeMap<String, Replayed> = BTreeMap::new();
        let mut held: BTreeMap<String, Held> = BTreeMap::new();
        let mut report = LedgerCheck::default();
        let mut problem: Option<String> = None;
        let mut note = |p: String| {
            if problem.is_none() {
                problem = Some(p);
            }
        };
        {
            let mut rows = sqlx::query_as::<_, (String, String, String, i64, String, Option<String>)>(
                "SELECT id, debit, credit, amount, phase, pending_id FROM ledger_transfers",
            )
            .fetch(pool);
            while let Some((id, debit, credit, amount, phase, pending_id)) = rows.try_next().await? {
                report.transfers += 1;
                if amount < 0 || (amount == 0 && phase != "void" && phase != "expire") {
                    note(format!("transfer {id} moves {amount} micros"));
                }
                let (posted, pending) = match phase.as_str() {
                    "posted" => (amount, 0),
                    "pending" => {
                        held.entry(id.clone()).or_default().amount = amount;
                        (0, amount)
                    }
                    "post" => (amount, -amount),
                    "void" | "expire" => (0, -amount),
                    other => {
                        note(format!("transfer {id} has an unknown phase '{other}'"));
                        (0, 0)
                    }
                };
                if let Some(p) = &pending_id {
                    let h = held.entry(p.clone()).or_default();
                    h.moved += amount;
                    if phase != "post" {
                        h.closed_by += 1;
                    }
                }
                let d = &mut replayed.entry(debit).or_default().columns;
                d.debits_posted += posted;
                d.debits_pending += pending;
                let c = &mut replayed.entry(credit).or_default().columns;
                c.credits_posted += posted;
                c.credits_pending += pending;
            }
        }
        let mut total = Columns::default();
        for (id, flags, dp, cp, dpend, cpend) in &stored {
            report.accounts += 1;
            let stored = Columns {
                flags: *flags,
                debits_posted: *dp,
                credits_posted: *cp,
                debits_pending: *dpend,
                credits_pending: *cpend,
            };
            let mut again = replayed.remove(id).unwrap_or_default().columns;
            again.flags = stored.flags;
            if again != stored {
                note(format!("account '{id}' stores {stored:?} but its transfers sum to {again:?}"));
            }
            if stored.flags & NO_OVERDRAFT != 0 && stored.available() < 0 {
                note(format!("account '{id}' is overdrawn: {} micros available", stored.available()));
            }
            if id == super::FEES {
                report.fees = stored.credits_posted - stored.debits_posted;
            } else if id == super::ESCROW {
                report.escrow = stored.credits_posted - stored.debits_posted;
            }
            total.debits_posted += stored.debits_posted;
            total.credits_posted += stored.credits_posted;
            total.debits_pending += stored.debits_pending;
            total.credits_pending += stored.credits_pending;
        }
        if let Some(id) = replayed.keys().next() {
            note(format!("transfers name account '{id}', which does not exist"));
        }
        if total.debits_posted != total.credits_posted {
            note(format!(
                "posted debits ({}) differ from posted credits ({})",
                total.debits_posted, total.credits_posted
            ));
        }
        if total.debits_pending != total.credits_pending {
            note(format!(
                "pending debits ({}) differ from pending credits ({})",
                total.debits_pending, total.credits_pending
            ));
        }
        let pendings: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT id, remaining, open FROM ledger_pending ORDER BY id").fetch_all(pool).await?;
        for (id, remaining, open) in pendings {
            let h = held.remove(&id).unwrap_or_default();
            if h.amount - h.moved != remaining {
                note(format!(
                    "pending transfer {id} held {} micros, {} moved since, but {remaining} remain",
                    h.amount, h.moved
                ));
            }
            if h.closed_by > 1 || (open != 0) != (h.closed_by == 0 && remaining > 0) {
                note(format!(
                    "pending transfer {id} is {} after {} voids",
                    if open != 0 { "open" } else { "closed" },
                    h.closed_by
                ));
            }
        }
        if let Some(id) = held.keys().next() {
            note(format!("pending transfer {id} has no pending row"));
        }
        report.debits_posted = total.debits_posted;
        report.credits_posted = total.credits_posted;
        report.ok = problem.is_none();
        report.problem = problem;
        Ok(report)
    }
}

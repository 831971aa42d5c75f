//! The credits ledger: double-entry, on the model of TigerBeetle's accounts and
//! transfers, in the registry's database (SQLite or PostgreSQL, [`SqlLedger`]).
//!
//! - An **account** has posted and pending debits and credits. Tenants' accounts
//!   (named as the tenant) and the escrow and fee accounts may not spend more than
//!   they hold (`no_overdraft`); the mint (`platform/mint`), where granted credits come
//!   from, may.
//! - A **transfer** moves an amount (integer micros) from a debit account to a credit
//!   account. Transfers are immutable and never deleted; each has an id, and sending a
//!   transfer again with the same id is a no-op (`Exists`), so a retried batch never
//!   moves money twice. Corrections are new transfers.
//! - **Two phases**: a `Pending` transfer holds the amount (pending debit and credit)
//!   until it is posted, voided or its timeout passes (then the expiry job releases
//!   it). Unlike TigerBeetle, a pending transfer may be posted in several parts, each a
//!   transfer of its own, while it is open: a router's reservation is spent by many
//!   requests' receipts. A `Void` (or expiry) releases what is left and closes it.
//! - Balances are checked and changed in one database transaction that holds the
//!   accounts' rows (PostgreSQL: `SELECT ... FOR UPDATE`, in id order; SQLite: its one
//!   writer), so routers and registry replicas writing at once never overdraw.
//!
//! [`SqlLedger::check`] replays every transfer and compares the balances.

mod check;
mod sql;

pub use sql::SqlLedger;
pub(crate) use sql::{params_per_statement, placeholders};

/// Where granted credits come from; its balance is minus everything granted.
pub const MINT: &str = "platform/mint";
/// Where callers' spending waits before it is split between providers and the fee.
pub const ESCROW: &str = "platform/escrow";
/// The platform's share of every request.
pub const FEES: &str = "platform/fees";

/// Account flag: debits (posted and pending) may not exceed posted credits.
pub const NO_OVERDRAFT: i64 = 1;

/// The schema (a registry migration).
pub const SCHEMA: &str = r#"
CREATE TABLE ledger_accounts (
    id TEXT PRIMARY KEY,
    flags BIGINT NOT NULL,
    debits_posted BIGINT NOT NULL DEFAULT 0,
    credits_posted BIGINT NOT NULL DEFAULT 0,
    debits_pending BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE ledger_transfers (
    id TEXT PRIMARY KEY,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount BIGINT NOT NULL,
    phase TEXT NOT NULL,
    pending_id TEXT,
    code TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit, created_at);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit, created_at);
CREATE INDEX ledger_transfers_pending ON ledger_transfers (pending_id);
CREATE TABLE ledger_pending (
    id TEXT PRIMARY KEY,
    remaining BIGINT NOT NULL,
    open BIGINT NOT NULL,
    timeout_at BIGINT NOT NULL
);
CREATE INDEX ledger_pending_timeout ON ledger_pending (open, timeout_at);
CREATE TABLE ledger_lock (
    id BIGINT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO ledger_lock (id, n) VALUES (1, 0);
INSERT INTO ledger_accounts (id, flags, created_at) VALUES ('platform/mint', 0, 0);
INSERT INTO ledger_accounts (id, flags, created_at) VALUES ('platform/escrow', 1, 0);
INSERT INTO ledger_accounts (id, flags, created_at) VALUES ('platform/fees', 1, 0)
"#;

/// What a transfer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Moves the amount at once.
    Posted,
    /// Holds the amount until posted, voided or, past `timeout_at_ms` (0: never), expired.
    Pending {
        /// When the expiry job releases it (Unix ms; 0: never).
        timeout_at_ms: i64,
    },
    /// Moves part (or all) of an open pending transfer's held amount; its accounts are
    /// the pending transfer's.
    Post {
        /// The pending transfer.
        pending_id: String,
    },
    /// Releases what is left of an open pending transfer and closes it.
    Void {
        /// The pending transfer.
        pending_id: String,
    },
    /// What the expiry job does to a pending transfer past its timeout: a void.
    Expire {
        /// The pending transfer.
        pending_id: String,
    },
}

impl Phase {
    /// The name stored in the `phase` column.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Posted => "posted",
            Phase::Pending { .. } => "pending",
            Phase::Post { .. } => "post",
            Phase::Void { .. } => "void",
            Phase::Expire { .. } => "expire",
        }
    }

    fn pending_id(&self) -> Option<&str> {
        match self {
            Phase::Post { pending_id } | Phase::Void { pending_id } | Phase::Expire { pending_id } => Some(pending_id),
            _ => None,
        }
    }
}

/// A transfer to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Unique; sending the same id again is a no-op.
    pub id: String,
    /// The account debited (ignored for `Post` and `Void`: the pending transfer's).
    pub debit: String,
    /// The account credited (as `debit`).
    pub credit: String,
    /// Micros, more than 0 (ignored for `Void`: what is left).
    pub amount: i64,
    /// What it does.
    pub phase: Phase,
    /// What it is for (`grant`, `reserve`, `spend`, ...).
    pub code: &'static str,
    /// What it pays for (a request id, a lease id, a memo).
    pub reference: String,
}

impl Transfer {
    /// A posted transfer.
    pub fn posted(id: impl Into<String>, debit: &str, credit: &str, amount: i64, code: &'static str) -> Self {
        Self {
            id: id.into(),
            debit: debit.into(),
            credit: credit.into(),
            amount,
            phase: Phase::Posted,
            code,
            reference: String::new(),
        }
    }

    /// A pending transfer that expires at `timeout_at_ms` (0: never).
    pub fn pending(
        id: impl Into<String>,
        debit: &str,
        credit: &str,
        amount: i64,
        timeout_at_ms: i64,
        code: &'static str,
    ) -> Self {
        Self { phase: Phase::Pending { timeout_at_ms }, ..Self::posted(id, debit, credit, amount, code) }
    }

    /// Posts `amount` of pending transfer `pending_id`.
    pub fn post(id: impl Into<String>, pending_id: &str, amount: i64, code: &'static str) -> Self {
        Self { phase: Phase::Post { pending_id: pending_id.into() }, ..Self::posted(id, "", "", amount, code) }
    }

    /// Releases what is left of pending transfer `pending_id`.
    pub fn void(id: impl Into<String>, pending_id: &str, code: &'static str) -> Self {
        Self { phase: Phase::Void { pending_id: pending_id.into() }, ..Self::posted(id, "", "", 0, code) }
    }

    /// With `reference`.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }
}

/// How one transfer of a batch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made now.
    Created,
    /// A transfer with this id was made before: nothing moved.
    Exists,
    /// Refused; nothing moved.
    Refused(Refusal),
}

/// Why a transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The debit account may not go below zero and holds too little.
    #[error("account '{account}' has {available} micros available, {needed} needed")]
    InsufficientFunds {
        /// The account.
        account: String,
        /// What it could spend.
        available: i64,
        /// What the transfer needed.
        needed: i64,
    },
    /// An account the transfer names does not exist.
    #[error("no ledger account '{0}'")]
    NoAccount(String),
    /// The pending transfer does not exist.
    #[error("no pending transfer '{0}'")]
    NoPending(String),
    /// The pending transfer was voided, expired or fully posted.
    #[error("pending transfer '{0}' is closed")]
    PendingClosed(String),
    /// The amount to post is more than the pending transfer still holds.
    #[error("pending transfer '{pending}' holds {remaining} micros, {amount} asked")]
    ExceedsPending {
        /// The pending transfer.
        pending: String,
        /// What it holds.
        remaining: i64,
        /// What was asked.
        amount: i64,
    },
    /// The amount is 0, negative or would overflow a balance.
    #[error("invalid amount {0}")]
    InvalidAmount(i64),
    /// Debit and credit are the same account.
    #[error("debit and credit are the same account")]
    SameAccount,
}

/// An account's balance columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// Flags ([`NO_OVERDRAFT`]).
    pub flags: i64,
    /// Posted debits.
    pub debits_posted: i64,
    /// Posted credits.
    pub credits_posted: i64,
    /// Pending debits.
    pub debits_pending: i64,
    /// Pending credits.
    pub credits_pending: i64,
}

impl Columns {
    /// What the account may still spend (posted credits less posted and pending debits).
    pub fn available(&self) -> i64 {
        self.credits_posted.saturating_sub(self.debits_posted).saturating_sub(self.debits_pending)
    }
}

/// An error of the database under the ledger.
#[derive(Debug, thiserror::Error)]
#[error("ledger database: {0}")]
pub struct LedgerError(#[from] pub sqlx::Error);

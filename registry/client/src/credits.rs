//! Credits: balances, history, grants, prices and the ledger check.

use crate::Client;
use crate::error::Result;
use wasmesh_api::wire::{
    Balance, Generation, Grant, Lease, LeaseRequest, LedgerCheck, LedgerEntry, Price, ReceiptBatch, ReceiptOutcome,
    UsageRow,
};

impl Client {
    /// `account`'s balance.
    pub async fn balance(&self, account: &str) -> Result<Balance> {
        self.get(&format!("/v1/credits/{account}")).await
    }

    /// `account`'s transfers, newest first (at most `limit`).
    pub async fn credit_history(&self, account: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        self.get(&format!("/v1/credits/{account}/history?limit={limit}")).await
    }

    /// Grants `amount` micros to `account` (admin); `id` makes a retry a no-op.
    pub async fn grant(&self, account: &str, amount: u64, memo: &str, id: Option<&str>) -> Result<Balance> {
        let req = Grant { account: account.into(), amount, memo: memo.into(), id: id.map(str::to_string) };
        self.post("/v1/credits/grants", &req).await
    }

    /// The prices this key may see.
    pub async fn prices(&self) -> Result<Vec<Price>> {
        self.get("/v1/prices").await
    }

    /// Sets `price.model`'s price (admin).
    pub async fn set_price(&self, price: &Price) -> Result<Price> {
        self.put(&format!("/v1/prices/{}", price.model), price).await
    }

    /// Recomputes every balance from the transfers (admin).
    pub async fn ledger_check(&self) -> Result<LedgerCheck> {
        self.get("/v1/ledger/check").await
    }

    /// Holds credits of `req.account` for this router's requests (router).
    pub async fn lease(&self, req: &LeaseRequest) -> Result<Lease> {
        self.post("/v1/leases", req).await
    }

    /// Releases what is left of lease `id` (router).
    pub async fn close_lease(&self, id: &str) -> Result<serde_json::Value> {
        self.post(&format!("/v1/leases/{id}/close"), &serde_json::json!({})).await
    }

    /// Sends a batch of receipts (router); one outcome per receipt.
    pub async fn post_receipts(&self, batch: &ReceiptBatch) -> Result<Vec<ReceiptOutcome>> {
        self.post("/v1/receipts", batch).await
    }

    /// `account`'s usage grouped `by` `app`, `model` or `day`.
    pub async fn usage(&self, account: &str, by: &str) -> Result<Vec<UsageRow>> {
        self.get(&format!("/v1/usage?account={account}&by={by}")).await
    }

    /// One request's record.
    pub async fn generation(&self, id: &str) -> Result<Generation> {
        self.get(&format!("/v1/generation?id={id}")).await
    }
}

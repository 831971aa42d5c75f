//! Accounts and their members.

use crate::Client;
use crate::error::Result;
use wasmesh_api::wire::{AccountInfo, AddMember, CreateAccount, MemberInfo, SignIn};

impl Client {
    /// Creates account `name` (admin).
    pub async fn create_account(&self, name: &str) -> Result<AccountInfo> {
        self.post("/v1/accounts", &CreateAccount { name: name.into() }).await
    }

    /// Every account (admin), or this key's own.
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>> {
        self.get("/v1/accounts").await
    }

    /// Adds member `email` with `password` to `account`.
    pub async fn add_member(&self, account: &str, email: &str, password: &str) -> Result<MemberInfo> {
        let req = AddMember { email: email.into(), password: password.into() };
        self.post(&format!("/v1/accounts/{account}/members"), &req).await
    }

    /// The members of `account`.
    pub async fn members(&self, account: &str) -> Result<Vec<MemberInfo>> {
        self.get(&format!("/v1/accounts/{account}/members")).await
    }

    /// Signs member `email` in (no API key needed).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<MemberInfo> {
        self.post("/v1/sessions", &SignIn { email: email.into(), password: password.into(), session: false }).await
    }
}

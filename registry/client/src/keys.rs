//! API keys: who this client's key is, and creating, listing and revoking keys.

use crate::Client;
use crate::error::Result;
use wasmesh_api::wire::{CreateKey, CreatedKey, KeyInfo, Scope};

impl Client {
    /// The key this client uses, as the registry sees it.
    pub async fn whoami(&self) -> Result<wasmesh_api::wire::WhoAmI> {
        self.get("/v1/whoami").await
    }

    /// Creates an API key of this key's account.
    pub async fn create_key(&self, name: &str, scopes: &[Scope]) -> Result<CreatedKey> {
        self.create_key_with(&CreateKey { name: name.into(), scopes: scopes.to_vec(), network: None, account: None })
            .await
    }

    /// Creates a provider key whose nodes join private network `network` (the account's own).
    pub async fn create_network_key(&self, name: &str, scopes: &[Scope], network: &str) -> Result<CreatedKey> {
        let req =
            CreateKey { name: name.into(), scopes: scopes.to_vec(), network: Some(network.into()), account: None };
        self.create_key_with(&req).await
    }

    /// Creates a key as `req` says (an admin may name another account).
    pub async fn create_key_with(&self, req: &CreateKey) -> Result<CreatedKey> {
        self.post("/v1/keys", req).await
    }

    /// Lists the account's keys (every key for an admin).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.get("/v1/keys").await
    }

    /// `GET /v1/whoami` for a caller's `key`, as a router asks it: the caller's address
    /// goes with it (failed attempts then count for that address, not the router's),
    /// vouched for by this client's own key.
    pub async fn whoami_for(&self, key: &str, caller: std::net::IpAddr) -> Result<wasmesh_api::wire::WhoAmI> {
        let mut builder = self.with_key(key).request(reqwest::Method::GET, "/v1/whoami");
        builder = builder.header(wasmesh_api::CALLER_ADDR_HEADER, caller.to_string());
        if let Some(own) = self.key() {
            builder = builder.header(wasmesh_api::ROUTER_KEY_HEADER, own);
        }
        self.json(builder).await
    }

    /// Revokes a key of the account (any key for an admin).
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}"))).await.map(drop)
    }
}

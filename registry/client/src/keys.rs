//! API keys: who this client's key is, and (admin) creating, listing and revoking
//! keys.

use crate::Client;
use crate::error::Result;
use wasmesh_api::wire::{CreateKey, CreatedKey, KeyInfo, Scope};

impl Client {
    /// The key this client uses, as the registry sees it.
    pub async fn whoami(&self) -> Result<wasmesh_api::wire::WhoAmI> {
        self.get("/v1/whoami").await
    }

    /// Creates an API key (admin).
    pub async fn create_key(&self, name: &str, scopes: &[Scope]) -> Result<CreatedKey> {
        self.post("/v1/keys", &CreateKey { name: name.into(), scopes: scopes.to_vec(), network: None }).await
    }

    /// Creates a provider key whose nodes join private network `network` (admin).
    pub async fn create_network_key(&self, name: &str, scopes: &[Scope], network: &str) -> Result<CreatedKey> {
        let req = CreateKey { name: name.into(), scopes: scopes.to_vec(), network: Some(network.into()) };
        self.post("/v1/keys", &req).await
    }

    /// Lists keys (admin).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.get("/v1/keys").await
    }

    /// Revokes a key (admin).
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}"))).await.map(drop)
    }
}

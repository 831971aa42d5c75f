//! A node's Ed25519 identity, kept in its data directory.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use std::path::Path;
use wasmesh_api::wire::{node_id_for, to_hex};

/// A node's signing key and the id derived from it.
pub struct NodeIdentity {
    key: SigningKey,
    id: String,
}

impl NodeIdentity {
    /// A new random identity.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source failed");
        Self::from_key(SigningKey::from_bytes(&secret))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = node_id_for(key.verifying_key().as_bytes());
        Self { key, id }
    }

    /// Loads the identity at `path` (PKCS#8 PEM), creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        if path.exists() {
            let pem = std::fs::read_to_string(path)?;
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not an Ed25519 PKCS#8 key ({e}); move it away to create a new identity",
                        path.display()
                    ),
                )
            })?;
            return Ok(Self::from_key(key));
        }
        let identity = Self::generate();
        let pem = identity.key.to_pkcs8_pem(Default::default()).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            std::io::Write::write_all(&mut file, pem.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(identity)
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.id
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        to_hex(self.key.verifying_key().as_bytes())
    }

    /// The private key as PKCS#8 DER (for TLS).
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key.to_pkcs8_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// Signs `message`; hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        to_hex(&self.key.sign(message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart_and_ids_follow_keys() {
        let dir = std::env::temp_dir().join(format!("wasmesh-identity-{}", std::process::id()));
        let path = dir.join("node.key");
        let first = NodeIdentity::load_or_create(&path).unwrap();
        let again = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(first.node_id(), again.node_id());
        assert_ne!(first.node_id(), NodeIdentity::generate().node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The node's own key (docs/DESIGN.md §7, "Node keys"): an Ed25519 key made on the first
//! start that needs it, kept in the state directory (`node-key`, 0600, written atomically
//! through the state directory's `FileStore` — `atomic-file` on a real node —, never
//! replaced), with which the agent signs its enrollment, its reports and its reboot
//! lease requests. Signing goes through [`NodeSigner`], so a key held in a TPM can take the
//! file key's place without the callers changing; and the enrollment's outcome is kept beside
//! it (`enrollment.json`), for the daemon's next start and for `status`.
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use partitions::io::FileStore;
use proto::nodeauth::{self, KeyStatus, NodeAuth};
use rand::RngCore;
use repo_client::http::SignRequest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The key's file in the state directory.
pub const KEY_FILE: &str = "node-key";
/// The enrollment's outcome, in the state directory.
pub const ENROLLMENT_FILE: &str = "enrollment.json";
/// Largest `enrollment.json` read.
const MAX_ENROLLMENT_FILE: u64 = 4096;

/// What signs for the node: the file key today, a TPM-held key tomorrow.
pub trait NodeSigner: Send + Sync {
    /// The raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// The Ed25519 signature of `message`; `Err(why)` when the key cannot sign.
    fn sign(&self, message: &[u8]) -> std::result::Result<[u8; 64], String>;

    /// The key's id: the hex SHA-256 of its public key.
    fn key_id(&self) -> String {
        nodeauth::hex(&Sha256::digest(self.public_key()))
    }
}

/// An Ed25519 key in a file of the state directory: its 32-byte seed, mode 0600.
pub struct FileKey {
    key: SigningKey,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileKey({})", self.key_id())
    }
}

impl FileKey {
    /// The key in the state directory `fs`, made there first if there is none. Read back
    /// after it is written: of two agents starting at once, both use the file that stayed.
    pub fn load_or_create(fs: &dyn FileStore) -> Result<FileKey> {
        let path = Path::new(KEY_FILE);
        let failed = |what: &str| Error::io(format!("cannot {what} the node key {KEY_FILE}"));
        match read_seed(fs) {
            Ok(seed) => return Ok(FileKey::from_seed(seed)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed("read")(e)),
            Err(_) => {}
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        fs.write_atomic(path, &seed).map_err(failed("write"))?;
        let key = FileKey::from_seed(read_seed(fs).map_err(failed("read"))?);
        tracing::info!(key_id = %key.key_id(), "made the node key");
        Ok(key)
    }

    fn from_seed(seed: [u8; 32]) -> FileKey {
        FileKey {
            key: SigningKey::from_bytes(&seed),
        }
    }
}

/// The 32 bytes of the key file: anything else is refused.
fn read_seed(fs: &dyn FileStore) -> std::io::Result<[u8; 32]> {
    let bytes = fs.read(Path::new(KEY_FILE), 32)?;
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a node key (32 bytes): move it away and the agent makes a new one, to enroll again",
        )
    })
}

impl NodeSigner for FileKey {
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<[u8; 64], String> {
        Ok(self.key.sign(message).to_bytes())
    }
}

/// A [`NodeSigner`] as the HTTP client's request signer: the `Authorization: Tandem-Node …`
/// value over the method, the API path, the time now, a random nonce and the body's SHA-256.
pub struct RequestSigner(pub Box<dyn NodeSigner>);

impl SignRequest for RequestSigner {
    fn authorization(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::result::Result<String, String> {
        let api_path = nodeauth::signed_path(path)
            .ok_or_else(|| format!("{path} is not an API path: only API requests are signed"))?;
        let timestamp = jiff::Timestamp::now().as_second();
        let timestamp = u64::try_from(timestamp).map_err(|_| "the clock is before 1970")?;
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let nonce = nodeauth::hex(&nonce);
        let message = nodeauth::signed_message(&nodeauth::Signed {
            method,
            path: api_path,
            timestamp,
            nonce: &nonce,
            body_sha256: &digest,
        });
        Ok(NodeAuth {
            key_id: self.0.key_id(),
            timestamp,
            nonce,
            signature: self.0.sign(&message)?,
        }
        .header())
    }
}

/// Where the node's enrollment stands, as the server last answered (`enrollment.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The server asked.
    pub server: String,
    /// The node enrolled.
    pub node_id: String,
    /// The key enrolled.
    pub key_id: String,
    /// `pending`, `approved`, `rejected` or `revoked`; `None` when the server refused the
    /// request itself (see `message`).
    pub status: Option<KeyStatus>,
    /// The server's words, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it answered (RFC 3339).
    pub at: String,
}

impl Enrollment {
    /// Whether this says the key speaks for `node_id` at `server`.
    pub fn approves(&self, server: &str, node_id: &str, key_id: &str) -> bool {
        self.status == Some(KeyStatus::Approved)
            && self.server == server
            && self.node_id == node_id
            && self.key_id == key_id
    }

    /// One line for `status` and the log.
    pub fn describe(&self) -> String {
        let short = self.key_id.get(..16).unwrap_or(&self.key_id);
        let standing = match (self.status, &self.message) {
            (Some(KeyStatus::Approved), _) => "approved: reports and leases are signed".into(),
            (Some(KeyStatus::Pending), _) => "pending: waits for an operator's approval".into(),
            (Some(other), _) => format!("{}: ask an operator", other.as_str()),
            (None, Some(message)) => format!("refused: {message}"),
            (None, None) => "refused".into(),
        };
        format!(
            "node key {short}… of {} at {}: {standing} (as of {})",
            self.node_id, self.server, self.at
        )
    }

    /// The enrollment recorded in the state directory `fs`, if any (an unreadable record
    /// counts as none: the daemon asks the server again).
    pub fn load(fs: &dyn FileStore) -> Option<Enrollment> {
        let bytes = fs
            .read(Path::new(ENROLLMENT_FILE), MAX_ENROLLMENT_FILE)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records this in the state directory `fs`.
    pub fn save(&self, fs: &dyn FileStore) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::usage(format!("cannot encode the enrollment: {e}")))?;
        fs.write_atomic(Path::new(ENROLLMENT_FILE), &bytes)
            .map_err(Error::io(format!("cannot write {ENROLLMENT_FILE}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use partitions::io::RealFs;

    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new(dir.path());
        let first = FileKey::load_or_create(&fs).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = FileKey::load_or_create(&fs).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        assert_eq!(first.key_id().len(), 64);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(
            FileKey::load_or_create(&fs).is_err(),
            "a damaged key is not replaced"
        );
    }

    #[test]
    fn a_signed_request_verifies_over_its_api_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey::load_or_create(&RealFs::new(dir.path())).unwrap();
        let public = key.public_key();
        let key_id = key.key_id();
        let signer = RequestSigner(Box::new(key));
        let header = signer
            .authorization("POST", "/prefix/v1/reports", b"{}")
            .unwrap();
        let auth = NodeAuth::parse(&header).unwrap();
        assert_eq!(auth.key_id, key_id);
        let digest: [u8; 32] = Sha256::digest(b"{}").into();
        let message = nodeauth::signed_message(&nodeauth::Signed {
            method: "POST",
            path: "/v1/reports",
            timestamp: auth.timestamp,
            nonce: &auth.nonce,
            body_sha256: &digest,
        });
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
        let signature = ed25519_dalek::Signature::from_bytes(&auth.signature);
        assert!(public.verify_strict(&message, &signature).is_ok());
        assert!(signer.authorization("POST", "/bundles/x", b"").is_err());
    }
}

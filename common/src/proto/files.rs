//! Wire types of the file server, `cp.push` and pillar requests (see
//! [`super::RequestBody::FileFind`] and the kinds after it).

use crate::crypto::{AesKey, CryptoError, KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::Value;

/// One version of a file the file server can serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// The path as asked, relative to the environment's roots.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex (Salt's `hash_type: sha256`).
    pub hash: String,
    /// Permission bits of the file on the master (`0o644`...).
    pub mode: u32,
}

/// What a [`super::RequestBody::FileList`] lists.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// Every visible file (`cp.list_master`, `fileserver.file_list`).
    Files,
    /// Every directory holding visible files (`cp.list_master_dirs`).
    Dirs,
    /// Directories with nothing visible in them (`cp.cache_dir include_empty`).
    EmptyDirs,
    /// The environments (`fileserver.envs`); `saltenv` and `prefix` unused.
    Envs,
}

/// One chunk of a `cp.push`. Chunks are written at their offset, so a
/// chunk sent twice (after a re-sign-in) writes the same bytes again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PushChunk {
    /// The path on the minion (or its `upload_path`), relative or absolute;
    /// the master stores it under `cachedir/minions/<id>/files/` after
    /// stripping the leading `/`, refusing `..` and anything else that
    /// would leave that directory.
    pub path: String,
    /// Size of the whole file (checked against `file_recv_max_size`).
    pub size: u64,
    pub offset: u64,
    pub data: ByteBuf,
    /// The last chunk: the master moves the file into place.
    pub last: bool,
}

/// A pillar sealed to one minion's RSA key: a fresh AES-256-GCM key under
/// RSA-OAEP-SHA256 of the minion's public key, and the msgpack of the
/// pillar under that key, bound to the minion's id. A syndic relays it
/// and cannot read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SealedPillar {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

fn aad_pillar(id: &str) -> Vec<u8> {
    [b"pillar:".as_slice(), id.as_bytes()].concat()
}

impl SealedPillar {
    /// Seal `pillar` to `to`, the key of minion `id`.
    pub fn seal(to: &PublicKey, id: &str, pillar: &Value) -> Result<Self, CryptoError> {
        let plain = crate::codec::encode(pillar).map_err(|e| CryptoError::Rsa(e.to_string()))?;
        let aes = AesKey::random();
        Ok(SealedPillar {
            key: to.encrypt(aes.as_bytes())?,
            data: aes.seal(&aad_pillar(id), &plain),
        })
    }

    /// Open a pillar sealed to `keys`, minion `id`'s key pair.
    pub fn open(&self, keys: &KeyPair, id: &str, max: usize) -> Result<Value, CryptoError> {
        let aes = AesKey::from_slice(&keys.decrypt(&self.key)?)?;
        let plain = aes.open(&aad_pillar(id), &self.data)?;
        crate::codec::decode(&plain, max).map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_pillar_opens_only_for_its_minion() {
        let m1 = KeyPair::generate().unwrap();
        let m2 = KeyPair::generate().unwrap();
        let pillar = serde_json::json!({"secret": "m1-only", "n": [1, 2]});
        let sealed = SealedPillar::seal(m1.public(), "m1", &pillar).unwrap();
        assert_eq!(sealed.open(&m1, "m1", 1 << 20).unwrap(), pillar);
        // Another key cannot open it, nor can the right key under another id.
        assert!(sealed.open(&m2, "m1", 1 << 20).is_err());
        assert!(sealed.open(&m1, "m2", 1 << 20).is_err());
    }
}

//! RSA keys, signatures and AES-256-GCM sealing.
//!
//! - RSA-2048 key pairs (PKCS#8 / SPKI PEM on disk) for identity: the master
//!   signs sign-in answers with RSA-PSS-SHA256 and delivers symmetric keys
//!   with RSA-OAEP-SHA256.
//! - [`PubSigner`] signs publishes with Ed25519 (about 20 µs a signature
//!   where RSA-PSS takes 2-4 ms, once per publish at every tier). Its key
//!   is derived from the master's RSA private key, so it survives restarts
//!   and changes with it; peers learn its public half from the RSA-signed
//!   sign-in answer, never on their own.
//! - [`AesKey`] seals publishes (shared publish key) and requests/returns
//!   (per-peer session key) with AES-256-GCM: a fresh 96-bit random nonce per
//!   message, prepended to the ciphertext, and associated data that binds a
//!   sealed blob to its context (peer id, direction) so it cannot be moved.
//!
//! RSA private-key operations cost 2-4 ms each; they happen only at
//! sign-in, never per publish or per return.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::sha2::{Digest, Sha256};
use std::path::Path;

/// Key size for every key Brine generates.
pub const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("rsa: {0}")]
    Rsa(String),
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("message does not decrypt (wrong key, tampered or truncated)")]
    Open,
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A peer's public key with its PEM text (sent on the wire as is).
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: rsa::PublicKey,
    pem: String,
}

impl PublicKey {
    /// Parse a SPKI PEM public key; refuses anything but RSA 2048..8192 bits.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let key = rsa::PublicKey::from_public_key_pem(pem.trim())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Ok(Self {
            key,
            pem: pem.trim().to_string() + "\n",
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// SHA-256 of the DER key, colon-separated hex (what `salt-key -f` prints).
    pub fn fingerprint(&self) -> String {
        let der = self
            .key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        colon_hex(&Sha256::digest(der))
    }

    /// RSA-PSS-SHA256 verification.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        self.key
            .pss_verify::<Sha256>(msg, sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// RSA-OAEP-SHA256 encryption to this key.
    pub fn encrypt(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key
            .oaep_encrypt::<Sha256>(msg)
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
}

/// An RSA private key and its public half.
#[derive(Clone)]
pub struct KeyPair {
    private: rsa::PrivateKey,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public.fingerprint())
    }
}

impl KeyPair {
    /// A fresh RSA-2048 key pair from the OS random source.
    pub fn generate() -> Result<Self, CryptoError> {
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
            .map_err(|e| CryptoError::Rsa(e.to_string()))?;
        Self::from_private(private)
    }

    fn from_private(private: rsa::PrivateKey) -> Result<Self, CryptoError> {
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        let public = PublicKey::from_pem(&pem)?;
        Ok(Self { private, public })
    }

    /// Parse a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let private = rsa::PrivateKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Self::from_private(private)
    }

    pub fn private_pem(&self) -> Result<String, CryptoError> {
        self.private
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| CryptoError::BadKey(e.to_string()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Load `dir/NAME.pem` (+ `NAME.pub`), generating and saving both on
    /// first use (private key mode 0400, public 0644). Returns the pair and
    /// whether it was created now.
    pub fn load_or_generate(dir: &Path, name: &str) -> Result<(Self, bool), CryptoError> {
        let pem_path = dir.join(format!("{name}.pem"));
        let pub_path = dir.join(format!("{name}.pub"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CryptoError::Io { path, source }
        };
        if pem_path.exists() {
            let text = std::fs::read_to_string(&pem_path).map_err(io(&pem_path))?;
            let kp = Self::from_pem(&text)?;
            if !pub_path.exists() {
                std::fs::write(&pub_path, kp.public.pem()).map_err(io(&pub_path))?;
            }
            return Ok((kp, false));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let kp = Self::generate()?;
        write_private(&pem_path, &kp.private_pem()?).map_err(io(&pem_path))?;
        std::fs::write(&pub_path, kp.public.pem()).map_err(io(&pub_path))?;
        Ok((kp, true))
    }

    /// RSA-PSS-SHA256 signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.private
            .pss_sign::<Sha256>(msg)
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }

    /// The Ed25519 key that signs this master's publishes: SHA-256 of a
    /// domain label and the PKCS#8 DER private key, as the secret key. The
    /// same RSA key always gives the same signer (a restarted master's
    /// `Reauth` verifies for peers signed in before), and nothing short of
    /// the RSA private key gives it.
    pub fn pub_signer(&self) -> Result<PubSigner, CryptoError> {
        let der = self
            .private
            .to_pkcs8_der()
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        let mut h = Sha256::new();
        h.update(b"brine publish signing key v1\0");
        h.update(der.as_bytes());
        let seed: [u8; 32] = h.finalize().into();
        Ok(PubSigner(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// RSA-OAEP-SHA256 decryption.
    pub fn decrypt(&self, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.private
            .oaep_decrypt::<Sha256>(ct)
            .map_err(|_| CryptoError::Open)
    }
}

/// Signs publishes (Ed25519; see [`KeyPair::pub_signer`]).
#[derive(Clone)]
pub struct PubSigner(ed25519_dalek::SigningKey);

impl std::fmt::Debug for PubSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PubSigner({})",
            hex::encode(self.0.verifying_key().as_bytes())
        )
    }
}

impl PubSigner {
    /// The public half, as peers get it in the sign-in answer.
    pub fn verifier(&self) -> PubVerifier {
        PubVerifier(self.0.verifying_key())
    }

    /// A 64-byte Ed25519 signature.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer;
        self.0.sign(msg).to_bytes().to_vec()
    }
}

/// Checks publish signatures: a master's [`PubSigner`] public half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubVerifier(ed25519_dalek::VerifyingKey);

impl PubVerifier {
    /// Parse the 32 bytes of an Ed25519 public key (refuses weak keys).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: &[u8; 32] = bytes.try_into().map_err(|_| {
            CryptoError::BadKey(format!(
                "publish signing key of {} bytes, not 32",
                bytes.len()
            ))
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(arr)
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if key.is_weak() {
            return Err(CryptoError::BadKey("weak publish signing key".into()));
        }
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Strict Ed25519 verification (no malleable signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `aa:bb:cc…` lowercase hex.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A 256-bit AES-GCM key (publish key or session key).
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

const NONCE_LEN: usize = 12;

impl AesKey {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::BadKey(format!("aes key of {} bytes", bytes.len())))?;
        Ok(Self(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `nonce ‖ AES-256-GCM(plaintext, aad)`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        // Encryption with a valid key and in-memory buffers cannot fail.
        if let Ok(ct) = cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Reverse of [`AesKey::seal`]; any tampering, truncation or wrong key is
    /// [`CryptoError::Open`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Open);
        }
        let cipher = Aes256Gcm::new((&self.0).into());
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Open)
    }
}

/// Associated data for a request from `id` to its master.
pub fn aad_request(id: &str) -> Vec<u8> {
    [b"req:".as_slice(), id.as_bytes()].concat()
}

/// Associated data for a reply from the master to `id`.
pub fn aad_reply(id: &str) -> Vec<u8> {
    [b"rep:".as_slice(), id.as_bytes()].concat()
}

/// Associated data for a job sealed under publish key `key_id`.
pub fn aad_publish(master_id: &str, key_id: u32) -> Vec<u8> {
    let mut v = b"pub:".to_vec();
    v.extend_from_slice(master_id.as_bytes());
    v.extend_from_slice(&key_id.to_be_bytes());
    v
}

/// Associated data for a publish-key update addressed to `id`.
pub fn aad_key_update(id: &str) -> Vec<u8> {
    [b"key:".as_slice(), id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_round_trip_and_tamper() {
        let k = AesKey::random();
        let s = k.seal(b"ctx", b"hello");
        assert_eq!(k.open(b"ctx", &s).expect("open"), b"hello");
        assert!(k.open(b"other", &s).is_err(), "aad binds the context");
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(k.open(b"ctx", &t).is_err());
        assert!(k.open(b"ctx", &s[..10]).is_err());
        assert!(AesKey::random().open(b"ctx", &s).is_err());
    }

    #[test]
    fn rsa_sign_encrypt_pem() {
        let kp = KeyPair::generate().expect("gen");
        let sig = kp.sign(b"msg").expect("sign");
        kp.public().verify(b"msg", &sig).expect("verify");
        assert!(kp.public().verify(b"other", &sig).is_err());
        let ct = kp.public().encrypt(b"secret").expect("enc");
        assert_eq!(kp.decrypt(&ct).expect("dec"), b"secret");
        let again = KeyPair::from_pem(&kp.private_pem().expect("pem")).expect("parse");
        assert_eq!(again.public().fingerprint(), kp.public().fingerprint());
        let fp = kp.public().fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(PublicKey::from_pem("garbage").is_err());
    }

    #[test]
    fn load_or_generate_persists() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, created) = KeyPair::load_or_generate(dir.path(), "minion").expect("gen");
        assert!(created);
        let (b, created) = KeyPair::load_or_generate(dir.path(), "minion").expect("load");
        assert!(!created);
        assert_eq!(a.public().pem(), b.public().pem());
    }

    #[test]
    fn publish_signer_is_bound_to_the_rsa_key() {
        let kp = KeyPair::generate().expect("gen");
        let signer = kp.pub_signer().expect("signer");
        let again = KeyPair::from_pem(&kp.private_pem().expect("pem"))
            .expect("parse")
            .pub_signer()
            .expect("signer");
        assert_eq!(signer.verifier(), again.verifier(), "stable across loads");
        let other = KeyPair::generate()
            .expect("gen")
            .pub_signer()
            .expect("signer");
        assert_ne!(
            signer.verifier(),
            other.verifier(),
            "another RSA key, another signer"
        );

        let sig = signer.sign(b"publish");
        assert_eq!(sig.len(), 64);
        let v = PubVerifier::from_bytes(signer.verifier().as_bytes()).expect("parse");
        v.verify(b"publish", &sig).expect("verify");
        assert!(v.verify(b"publish!", &sig).is_err(), "another body");
        assert!(
            other.verifier().verify(b"publish", &sig).is_err(),
            "another key"
        );
        assert!(v.verify(b"publish", &sig[..63]).is_err(), "short");
        let mut bent = sig.clone();
        bent[10] ^= 1;
        assert!(v.verify(b"publish", &bent).is_err(), "tampered");
        assert!(PubVerifier::from_bytes(&[0u8; 31]).is_err(), "length");
        assert!(
            PubVerifier::from_bytes(&[0u8; 32]).is_err(),
            "weak (small order)"
        );
    }
}

//! Encryption at rest: every stored package is encrypted with AES-256-GCM under its own random data key, and the
//! data key is stored beside it wrapped (AES-256-GCM again) by the master key. Rotating the master key re-wraps the
//! small key files and never touches the packages.
//!
//! A package is encrypted in 1 MiB segments with the STREAM construction (`aead::stream`, big-endian 32-bit
//! counter and a last-segment flag in each nonce), so a package of any size is encrypted and decrypted in bounded
//! memory, and truncating, reordering or splicing segments fails authentication. Every segment and the wrapped key
//! are bound to the package's digest as associated data: a blob or key file copied under another digest does not
//! decrypt.

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::RegistryError;

/// Plaintext bytes per encrypted segment.
pub(crate) const SEGMENT: usize = 1024 * 1024;
/// AES-GCM tag bytes added to each segment.
pub(crate) const TAG: usize = 16;
/// Encrypted blobs start with this, then the 7-byte STREAM nonce prefix.
const MAGIC: &[u8; 9] = b"FERRYENC1";
const NONCE_PREFIX: usize = 7;
/// Bytes before the first segment.
pub(crate) const HEADER: usize = MAGIC.len() + NONCE_PREFIX;
const WRAP_CONTEXT: &[u8] = b"ferry data key v1:";

/// The key that wraps every data key: 32 random bytes, given as 64 hex digits in a file or `FERRY_MASTER_KEY`.
#[derive(Clone)]
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`RegistryError::Encryption`] saying what is wrong, never echoing the key.
    pub fn from_hex(text: &str) -> Result<Self, RegistryError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_bytes(), key.as_mut_slice()).map_err(|_| {
            RegistryError::Encryption(format!(
                "a master key is 64 hex digits (32 bytes); this one is {} characters or not hex",
                text.len()
            ))
        })?;
        Ok(Self::from_bytes(key))
    }

    /// A new random master key.
    ///
    /// # Errors
    /// [`RegistryError::Encryption`] when the system's random source fails.
    pub fn generate() -> Result<Self, RegistryError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| RegistryError::Encryption(format!("no randomness: {e}")))?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"ferry master key id:");
        hasher.update(key.as_slice());
        let id = hex::encode(&hasher.finalize()[..8]);
        Self { key, id }
    }

    /// A public fingerprint of the key (16 hex digits), recorded with every data key it wraps so that a wrong key
    /// is named as such rather than failing as corruption.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as 64 hex digits, to be written to a key file.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_slice()))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.as_slice()))
    }

    /// Wraps a data key for the package `digest`.
    fn wrap(&self, digest: &str, data_key: &[u8; 32]) -> Result<WrappedKey, RegistryError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| RegistryError::Encryption(format!("no randomness: {e}")))?;
        let aad = wrap_aad(digest);
        let wrapped = self
            .cipher()
            .encrypt((&nonce).into(), Payload { msg: data_key, aad: &aad })
            .map_err(|_| RegistryError::Encryption("wrapping a data key failed".into()))?;
        Ok(WrappedKey {
            format: 1,
            master_key_id: self.id.clone(),
            nonce: hex::encode(nonce),
            wrapped_key: hex::encode(wrapped),
        })
    }

    /// Unwraps the data key of the package `digest`.
    fn unwrap(&self, digest: &str, wrapped: &WrappedKey) -> Result<Zeroizing<[u8; 32]>, RegistryError> {
        if wrapped.master_key_id != self.id {
            return Err(RegistryError::Encryption(format!(
                "package {digest} is encrypted under master key {}, but the configured master key is {}; configure \
                 the key it was stored with (or finish `ferry keys rotate-master`)",
                wrapped.master_key_id, self.id
            )));
        }
        let corrupt = || RegistryError::Encryption(format!("the key file of package {digest} was altered or damaged"));
        let nonce: [u8; 12] = hex::decode(&wrapped.nonce).ok().and_then(|n| n.try_into().ok()).ok_or_else(corrupt)?;
        let sealed = hex::decode(&wrapped.wrapped_key).map_err(|_| corrupt())?;
        let aad = wrap_aad(digest);
        let plain = Zeroizing::new(
            self.cipher().decrypt((&nonce).into(), Payload { msg: &sealed, aad: &aad }).map_err(|_| corrupt())?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(corrupt());
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

fn wrap_aad(digest: &str) -> Vec<u8> {
    [WRAP_CONTEXT, digest.as_bytes()].concat()
}

/// The key file stored beside an encrypted package: its data key, wrapped by the master key `master_key_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WrappedKey {
    format: u32,
    pub(crate) master_key_id: String,
    nonce: String,
    wrapped_key: String,
}

impl WrappedKey {
    pub(crate) fn parse(digest: &str, bytes: &[u8]) -> Result<Self, RegistryError> {
        let key: Self = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::Encryption(format!("the key file of package {digest} is unreadable: {e}")))?;
        if key.format != 1 {
            return Err(RegistryError::Encryption(format!(
                "the key file of package {digest} has format {}, which this ferry does not know",
                key.format
            )));
        }
        Ok(key)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The same data key wrapped by `new` instead of `old`.
    pub(crate) fn rewrap(&self, digest: &str, old: &MasterKey, new: &MasterKey) -> Result<Self, RegistryError> {
        let data_key = old.unwrap(digest, self)?;
        new.wrap(digest, &data_key)
    }
}

/// Encrypts one package, segment by segment.
pub(crate) struct Sealer {
    stream: EncryptorBE32<Aes256Gcm>,
    aad: Vec<u8>,
}

impl Sealer {
    /// A new data key for `digest`: its wrapped form (to store beside the blob), the sealer, and the blob header.
    pub(crate) fn new(master: &MasterKey, digest: &str) -> Result<(WrappedKey, Self, Vec<u8>), RegistryError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        getrandom::fill(data_key.as_mut_slice())
            .map_err(|e| RegistryError::Encryption(format!("no randomness: {e}")))?;
        let wrapped = master.wrap(digest, &data_key)?;
        let (sealer, header) = Self::with_key(&data_key, digest)?;
        Ok((wrapped, sealer, header))
    }

    /// A sealer under the data key an existing key file holds (a concurrent or earlier store of the same package
    /// wrote it), so that whichever copy of the blob lands, its key file opens it. Each blob still gets its own
    /// random nonce prefix.
    pub(crate) fn reusing(
        master: &MasterKey,
        digest: &str,
        wrapped: &WrappedKey,
    ) -> Result<(Self, Vec<u8>), RegistryError> {
        let data_key = master.unwrap(digest, wrapped)?;
        Self::with_key(&data_key, digest)
    }

    fn with_key(data_key: &[u8; 32], digest: &str) -> Result<(Self, Vec<u8>), RegistryError> {
        let mut prefix = [0u8; NONCE_PREFIX];
        getrandom::fill(&mut prefix).map_err(|e| RegistryError::Encryption(format!("no randomness: {e}")))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key.as_slice()));
        let stream = EncryptorBE32::from_aead(cipher, (&prefix).into());
        let header = [MAGIC.as_slice(), &prefix].concat();
        Ok((Self { stream, aad: digest.as_bytes().to_vec() }, header))
    }

    /// Whether a stored blob begins as ferry's encrypted blobs do.
    pub(crate) fn is_sealed(head: &[u8]) -> bool {
        head.starts_with(MAGIC)
    }

    /// Encrypts a full segment of [`SEGMENT`] bytes.
    pub(crate) fn seal_next(&mut self, segment: &[u8]) -> Result<Vec<u8>, RegistryError> {
        self.stream
            .encrypt_next(Payload { msg: segment, aad: &self.aad })
            .map_err(|_| RegistryError::Encryption("encryption failed".into()))
    }

    /// Encrypts the last segment (at most [`SEGMENT`] bytes, possibly none).
    pub(crate) fn seal_last(self, segment: &[u8]) -> Result<Vec<u8>, RegistryError> {
        self.stream
            .encrypt_last(Payload { msg: segment, aad: &self.aad })
            .map_err(|_| RegistryError::Encryption("encryption failed".into()))
    }
}

/// Decrypts one package, segment by segment.
pub(crate) struct Opener {
    stream: Option<DecryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    digest: String,
    /// Segments opened so far, to say where a failure is.
    opened: u64,
}

impl Opener {
    /// Reads the blob header and unwraps the data key.
    pub(crate) fn new(
        master: &MasterKey,
        digest: &str,
        wrapped: &WrappedKey,
        header: &[u8],
    ) -> Result<Self, RegistryError> {
        let data_key = master.unwrap(digest, wrapped)?;
        if header.len() != HEADER || &header[..MAGIC.len()] != MAGIC {
            return Err(RegistryError::Encryption(format!(
                "package {digest} has a key file but its stored blob is not encrypted by ferry"
            )));
        }
        let prefix: [u8; NONCE_PREFIX] = header[MAGIC.len()..]
            .try_into()
            .map_err(|_| RegistryError::Encryption(format!("package {digest}: bad header")))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key.as_slice()));
        Ok(Self {
            stream: Some(DecryptorBE32::from_aead(cipher, (&prefix).into())),
            aad: digest.as_bytes().to_vec(),
            digest: digest.to_owned(),
            opened: 0,
        })
    }

    fn tampered(&self) -> RegistryError {
        RegistryError::Encryption(format!(
            "package {} failed authentication in segment {}: the stored blob was altered, truncated or damaged",
            self.digest, self.opened
        ))
    }

    /// Decrypts a segment that is not the last one.
    pub(crate) fn open_next(&mut self, sealed: &[u8]) -> Result<Vec<u8>, RegistryError> {
        let Some(stream) = self.stream.as_mut() else { return Err(self.tampered()) };
        let plain = stream.decrypt_next(Payload { msg: sealed, aad: &self.aad }).map_err(|_| self.tampered())?;
        self.opened += 1;
        Ok(plain)
    }

    /// Decrypts the last segment.
    pub(crate) fn open_last(&mut self, sealed: &[u8]) -> Result<Vec<u8>, RegistryError> {
        let Some(stream) = self.stream.take() else { return Err(self.tampered()) };
        let aad = std::mem::take(&mut self.aad);
        stream.decrypt_last(Payload { msg: sealed, aad: &aad }).map_err(|_| self.tampered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "ab12";

    fn seal(master: &MasterKey, data: &[u8]) -> (WrappedKey, Vec<u8>) {
        let (wrapped, mut sealer, mut blob) = Sealer::new(master, DIGEST).expect("sealer");
        let mut rest = data;
        while rest.len() > SEGMENT {
            blob.extend(sealer.seal_next(&rest[..SEGMENT]).expect("seal"));
            rest = &rest[SEGMENT..];
        }
        blob.extend(sealer.seal_last(rest).expect("seal"));
        (wrapped, blob)
    }

    fn open(master: &MasterKey, wrapped: &WrappedKey, blob: &[u8]) -> Result<Vec<u8>, RegistryError> {
        let mut opener = Opener::new(master, DIGEST, wrapped, &blob[..HEADER])?;
        let body = &blob[HEADER..];
        let mut out = Vec::new();
        let mut segments = body.chunks(SEGMENT + TAG).peekable();
        while let Some(s) = segments.next() {
            if segments.peek().is_some() {
                out.extend(opener.open_next(s)?);
            } else {
                out.extend(opener.open_last(s)?);
            }
        }
        Ok(out)
    }

    #[test]
    fn round_trips_and_detects_every_kind_of_tampering() {
        let master = MasterKey::generate().expect("key");
        let data: Vec<u8> = (0..(SEGMENT * 2 + 77)).map(|i| (i % 251) as u8).collect();
        let (wrapped, blob) = seal(&master, &data);
        assert_eq!(blob.len(), HEADER + data.len() + 3 * TAG);
        assert_eq!(open(&master, &wrapped, &blob).expect("open"), data);

        let mut flipped = blob.clone();
        flipped[HEADER + SEGMENT + TAG + 5] ^= 1;
        assert!(open(&master, &wrapped, &flipped).expect_err("flip").to_string().contains("segment 1"));
        let truncated = &blob[..HEADER + SEGMENT + TAG];
        assert!(open(&master, &wrapped, truncated).is_err(), "dropping the tail must fail");

        let other = MasterKey::generate().expect("key");
        let err = open(&other, &wrapped, &blob).expect_err("wrong key").to_string();
        assert!(err.contains(master.id()) && err.contains(other.id()), "{err}");

        // The same key file under another digest does not unwrap.
        assert!(master.unwrap("cd34", &wrapped).is_err());
    }

    #[test]
    fn rewrapping_changes_only_the_key_file() {
        let (old, new) = (MasterKey::generate().expect("key"), MasterKey::generate().expect("key"));
        let (wrapped, blob) = seal(&old, b"small package");
        let rewrapped = wrapped.rewrap(DIGEST, &old, &new).expect("rewrap");
        assert_eq!(rewrapped.master_key_id, new.id());
        assert_eq!(open(&new, &rewrapped, &blob).expect("open"), b"small package");
        assert!(open(&old, &rewrapped, &blob).is_err());
        let parsed = WrappedKey::parse(DIGEST, &rewrapped.to_bytes()).expect("parse");
        assert_eq!(open(&new, &parsed, &blob).expect("open"), b"small package");
    }

    #[test]
    fn master_keys_parse_strictly_and_never_echo() {
        let key = MasterKey::generate().expect("key");
        let again = MasterKey::from_hex(&format!("  {}\n", key.to_hex().as_str())).expect("parse");
        assert_eq!(again.id(), key.id());
        let err = MasterKey::from_hex("zz".repeat(32).as_str()).expect_err("not hex").to_string();
        assert!(!err.contains("zzzz") && err.contains("64 hex"), "{err}");
        assert!(!format!("{key:?}").contains(key.to_hex().as_str()));
    }
}

//! Package signatures (Ed25519). A signed package ends with one more entry, `signature.json`, whose signature covers
//! the SHA-256 of every archive byte before it: the manifest, every file, every header and padding byte. Only zero
//! blocks may follow it, so no byte of a signed package can change without failing verification.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::PackageError;

/// The signature entry's path; always the last entry.
pub const SIGNATURE_PATH: &str = "signature.json";
const SECRET_TAG: &str = "ferry-ed25519-secret";
const PUBLIC_TAG: &str = "ferry-ed25519-public";

/// The content of `signature.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSignature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// SHA-256 of the archive bytes before this entry, hex.
    pub signed_digest: String,
    /// The signature over `signed_digest`'s 32 bytes, hex.
    pub signature: String,
}

/// A new key pair: `(secret key file text, public key file text)`.
///
/// # Errors
/// [`PackageError::Manifest`] when the system's random source fails.
pub fn generate_keypair() -> Result<(String, String), PackageError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| PackageError::Manifest(format!("no system randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((format!("{SECRET_TAG} {}\n", hex::encode(seed)), public_key_text(&key.verifying_key())))
}

/// The public key file text of a verifying key.
#[must_use]
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG} {}\n", hex::encode(key.as_bytes()))
}

fn parse_hex32(text: &str, tag: &str, what: &str) -> Result<[u8; 32], PackageError> {
    let body = text.trim().strip_prefix(tag).map(str::trim).ok_or_else(|| {
        PackageError::Manifest(format!("not a ferry {what} key (expected a line starting with {tag:?})"))
    })?;
    let bytes = hex::decode(body).map_err(|e| PackageError::Manifest(format!("{what} key: {e}")))?;
    bytes.try_into().map_err(|_| PackageError::Manifest(format!("{what} key: expected 32 bytes")))
}

/// Reads a secret key file's text.
///
/// # Errors
/// [`PackageError::Manifest`] for anything else.
pub fn parse_secret_key(text: &str) -> Result<SigningKey, PackageError> {
    Ok(SigningKey::from_bytes(&parse_hex32(text, SECRET_TAG, "secret")?))
}

/// Reads a public key file's text.
///
/// # Errors
/// [`PackageError::Manifest`] for anything else, or an invalid curve point.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, PackageError> {
    VerifyingKey::from_bytes(&parse_hex32(text, PUBLIC_TAG, "public")?)
        .map_err(|e| PackageError::Manifest(format!("public key: {e}")))
}

/// Where the entries end: the byte after the last entry's padded data (before the end-of-archive blocks), and
/// whether the last entry is a signature.
fn entries_end(path: &Path) -> Result<(u64, Option<u64>), PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let (mut end, mut signature_at) = (0u64, None);
    for entry in archive.entries().map_err(|e| PackageError::Malformed(e.to_string()))? {
        let entry = entry.map_err(|e| PackageError::Malformed(e.to_string()))?;
        let header_at = entry.raw_header_position();
        let is_signature = entry.path_bytes().as_ref() == SIGNATURE_PATH.as_bytes();
        if signature_at.is_some() {
            return Err(PackageError::Malformed(format!("an entry follows {SIGNATURE_PATH}; it must be the last")));
        }
        if is_signature {
            signature_at = Some(header_at);
        }
        end = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
    }
    Ok((end, signature_at))
}

fn sha256_prefix(path: &Path, len: u64) -> Result<[u8; 32], PackageError> {
    let mut file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(len), &mut hasher).map_err(PackageError::io(path))?;
    Ok(hasher.finalize().into())
}

/// Signs an unsigned package in place (written beside it and renamed).
///
/// # Errors
/// [`PackageError::Malformed`] if it is already signed or not an archive; I/O errors.
pub fn sign_package(path: &Path, key: &SigningKey) -> Result<PackageSignature, PackageError> {
    let (end, signed) = entries_end(path)?;
    if signed.is_some() {
        return Err(PackageError::Malformed("the package is already signed".into()));
    }
    let digest = sha256_prefix(path, end)?;
    let signature = PackageSignature {
        algorithm: "ed25519".into(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signed_digest: hex::encode(digest),
        signature: hex::encode(key.sign(&digest).to_bytes()),
    };
    let body = serde_json::to_vec_pretty(&signature).map_err(|e| PackageError::Manifest(e.to_string()))?;
    let tmp = path.with_extension("signing");
    let result = (|| {
        let mut src = std::fs::File::open(path).map_err(PackageError::io(path))?;
        let mut out = std::fs::File::create(&tmp).map_err(PackageError::io(&tmp))?;
        std::io::copy(&mut (&mut src).take(end), &mut out).map_err(PackageError::io(&tmp))?;
        let mut builder = tar::Builder::new(out);
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, SIGNATURE_PATH, &body[..]).map_err(PackageError::io(&tmp))?;
        let mut out = builder.into_inner().map_err(PackageError::io(&tmp))?;
        out.flush().map_err(PackageError::io(&tmp))?;
        out.sync_all().map_err(PackageError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(PackageError::io(path))
    })();
    if result.is_err() {
        drop(std::fs::remove_file(&tmp));
    }
    result.map(|()| signature)
}

/// Checks a package's signature: `Ok(None)` when unsigned, `Ok(Some(sig))` when the signature is valid for the
/// bytes before it (by whichever key made it; the caller decides whether it trusts `sig.public_key`).
///
/// # Errors
/// [`PackageError::Checksum`] naming what does not verify.
pub fn check_signature(path: &Path) -> Result<Option<PackageSignature>, PackageError> {
    let (_, at) = entries_end(path)?;
    let Some(at) = at else { return Ok(None) };
    let bad = |reason: String| PackageError::Checksum { path: SIGNATURE_PATH.into(), reason };
    let mut file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    file.seek(SeekFrom::Start(at)).map_err(PackageError::io(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(&mut file));
    let mut entries = archive.entries().map_err(|e| PackageError::Malformed(e.to_string()))?;
    let mut entry =
        entries.next().ok_or_else(|| bad("missing".into()))?.map_err(|e| PackageError::Malformed(e.to_string()))?;
    if entry.size() > 4096 {
        return Err(bad("too large".into()));
    }
    let mut text = Vec::new();
    entry.read_to_end(&mut text).map_err(PackageError::io(path))?;
    let sig: PackageSignature = serde_json::from_slice(&text).map_err(|e| bad(format!("unreadable: {e}")))?;
    // The entry must be exactly what `sign_package` writes, so that not even its formatting can change.
    let canonical = serde_json::to_vec_pretty(&sig).map_err(|e| bad(e.to_string()))?;
    if canonical != text || sig.algorithm != "ed25519" {
        return Err(bad("the signature entry was changed".into()));
    }
    // Only zeros may follow the signature's content: its block padding, then the end-of-archive blocks.
    let after = at + 512 + text.len() as u64;
    let mut file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    file.seek(SeekFrom::Start(after)).map_err(PackageError::io(path))?;
    let mut rest = Vec::new();
    file.take(1 << 20).read_to_end(&mut rest).map_err(PackageError::io(path))?;
    if rest.iter().any(|&b| b != 0) {
        return Err(bad("bytes after the signature were changed".into()));
    }
    let digest = sha256_prefix(path, at)?;
    if hex::encode(digest) != sig.signed_digest {
        return Err(bad("the package was changed after it was signed".into()));
    }
    let key_bytes: [u8; 32] = hex::decode(&sig.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("bad public key".into()))?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| bad(format!("bad public key: {e}")))?;
    let sig_bytes: [u8; 64] =
        hex::decode(&sig.signature).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| bad("bad signature".into()))?;
    key.verify_strict(&digest, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| bad("the signature does not verify".into()))?;
    Ok(Some(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let (secret, public) = generate_keypair().expect("keys");
        let key = parse_secret_key(&secret).expect("secret");
        assert_eq!(public_key_text(&key.verifying_key()), public);
        assert_eq!(parse_public_key(&public).expect("public"), key.verifying_key());
        assert!(parse_public_key(&secret).is_err() && parse_secret_key("nope").is_err());
    }
}

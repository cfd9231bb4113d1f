//! Who may do what: API keys (high-entropy, shown once, stored only as a SHA-256 hash, compared in constant time),
//! their roles and model-name scopes, the resolved [`Access`] every handler receives, and the hash-chained audit
//! record.
//!
//! Pure logic: no I/O, no HTTP. The registry stores keys and audit records; the server extracts and enforces.

mod audit;
mod keys;

pub use audit::{AuditRecord, ChainBreak, GENESIS_HASH, verify_chain};
pub use keys::{
    Access, AuthError, KEY_PREFIX, KeyInfo, Permission, Role, Scope, generate_key, hash_key, key_id, same_hash,
};

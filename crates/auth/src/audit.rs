//! The audit record and its SHA-256 chain: each record's hash covers its fields and the previous record's hash,
//! so editing, deleting or reordering any record breaks every hash after it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Key id, `anonymous`, or `ferry` for the server's own actions.
    pub actor: String,
    /// What was attempted (`push`, `set_alias`, `create_key`, `auth_failure`, …).
    pub action: String,
    /// What it was done to (`model/iris`, `key/3f2a…`).
    pub target: String,
    /// `ok`, `denied` or `failed: …`.
    pub outcome: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// SHA-256 over this record's fields and `prev_hash`.
    pub hash: String,
}

impl AuditRecord {
    /// The hash a record with these fields must carry. Fields are length-prefixed so that no two different records
    /// serialise to the same bytes.
    #[must_use]
    pub fn compute_hash(
        seq: i64,
        at: i64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        prev_hash: &str,
    ) -> String {
        let mut h = Sha256::new();
        h.update(seq.to_be_bytes());
        h.update(at.to_be_bytes());
        for field in [actor, action, target, outcome, prev_hash] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn expected_hash(&self) -> String {
        Self::compute_hash(self.seq, self.at, &self.actor, &self.action, &self.target, &self.outcome, &self.prev_hash)
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct ChainBreak {
    /// The first record that does not verify (or the position where one is missing).
    pub seq: i64,
    /// What is wrong.
    pub reason: String,
}

/// Verifies records in stored order against each other and against the head (`count`, `last_hash`) kept beside
/// them, which catches a truncated tail.
///
/// # Errors
/// The first [`ChainBreak`].
pub fn verify_chain(records: &[AuditRecord], head: Option<(i64, &str)>) -> Result<(), ChainBreak> {
    let mut prev = GENESIS_HASH.to_owned();
    for (i, r) in records.iter().enumerate() {
        let want_seq = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if r.seq != want_seq {
            return Err(ChainBreak {
                seq: want_seq,
                reason: format!("expected sequence number {want_seq}, found {} (deleted or reordered)", r.seq),
            });
        }
        if r.prev_hash != prev {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "does not follow the previous record (deleted or reordered)".into(),
            });
        }
        if r.hash != r.expected_hash() {
            return Err(ChainBreak { seq: r.seq, reason: "its content was changed after it was written".into() });
        }
        prev.clone_from(&r.hash);
    }
    if let Some((count, last)) = head {
        let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
        if count != n || (n > 0 && last != prev) {
            return Err(ChainBreak {
                seq: n + 1,
                reason: format!("the log should hold {count} records ending in {last}; it holds {n} (truncated)"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or_else(|| GENESIS_HASH.to_owned(), |r| r.hash.clone());
            let hash = AuditRecord::compute_hash(seq, seq * 10, "k1", "push", "model/m", "ok", &prev);
            out.push(AuditRecord {
                seq,
                at: seq * 10,
                actor: "k1".into(),
                action: "push".into(),
                target: "model/m".into(),
                outcome: "ok".into(),
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tampering_is_found() {
        let c = chain(5);
        let head = (5, c[4].hash.as_str());
        verify_chain(&c, Some(head)).expect("intact");

        let mut edited = c.clone();
        edited[2].actor = "k2".into();
        assert_eq!(verify_chain(&edited, Some(head)).expect_err("edit").seq, 3);

        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(verify_chain(&deleted, Some(head)).expect_err("delete").seq, 2);

        let mut reordered = c.clone();
        reordered.swap(1, 2);
        assert_eq!(verify_chain(&reordered, Some(head)).expect_err("reorder").seq, 2);

        let truncated = &c[..4];
        assert!(verify_chain(truncated, Some(head)).expect_err("truncate").reason.contains("truncated"));
    }
}

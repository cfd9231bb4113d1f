-- API keys (stored only as SHA-256 hashes) and the hash-chained audit log.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- The chain's head, updated in the same transaction as each append, so a truncated tail is detectable.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    count BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);

-- A model's deployment: which versions answer its traffic and with which weights (JSON, see ferry_rollout), shared
-- by every replica. The revision grows with every change, so a replica can tell that its copy is stale.
CREATE TABLE deployments (
    model TEXT PRIMARY KEY REFERENCES models (name),
    spec TEXT NOT NULL,
    revision BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- A model's canary rollout: its state machine and history (JSON, see ferry_server's rollouts), shared by every
-- replica so that a restart or another replica carries it on.
CREATE TABLE rollouts (
    model TEXT PRIMARY KEY REFERENCES models (name),
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

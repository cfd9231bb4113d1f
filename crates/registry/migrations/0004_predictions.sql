-- Logged predictions of models that opt in, with the data subject they concern (for erasure requests).
CREATE TABLE predictions (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    subject TEXT,
    at BIGINT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL
);

CREATE INDEX predictions_subject ON predictions (subject);
CREATE INDEX predictions_at ON predictions (at);

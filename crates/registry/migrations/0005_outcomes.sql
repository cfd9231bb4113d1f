-- What ferry keeps of each prediction of a monitored model to join the ground truth that arrives later: the
-- request id (and row, for batched requests), the version that answered, its output, and then the truth.
CREATE TABLE outcomes (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    version BIGINT NOT NULL,
    at BIGINT NOT NULL,
    predicted DOUBLE PRECISION NOT NULL,
    proba TEXT,
    truth DOUBLE PRECISION,
    feedback_at BIGINT,
    PRIMARY KEY (model, request_id, row_index)
);

CREATE INDEX outcomes_model_at ON outcomes (model, at);
CREATE INDEX outcomes_at ON outcomes (at);
-- Live quality reads only predictions that have their truth: a partial index keeps that cheap however many
-- predictions are kept without feedback.
CREATE INDEX outcomes_labelled ON outcomes (model, at) WHERE truth IS NOT NULL;

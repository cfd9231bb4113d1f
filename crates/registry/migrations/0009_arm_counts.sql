-- Each replica's counts per version under a model's current deployment revision (JSON, see ferry_server's
-- ArmTotals), so that a canary is judged on the whole fleet's traffic and not on the one replica that judges it.
-- A replica has a fresh random id per process: one that restarts adds a row and the old row's counts still count.
CREATE TABLE arm_counts (
    model TEXT NOT NULL,
    replica TEXT NOT NULL,
    version BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    totals TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model, replica, version)
);

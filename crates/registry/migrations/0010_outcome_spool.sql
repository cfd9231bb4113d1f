-- How far the indexer has moved kept predictions from the spool (SQLite registries: segment files beside the
-- database) into `outcomes`: updated in the transaction that inserts them, so that no row is indexed twice. One row.
CREATE TABLE outcome_spool (
    id INTEGER PRIMARY KEY,
    segment BIGINT NOT NULL,
    offset_bytes BIGINT NOT NULL
);

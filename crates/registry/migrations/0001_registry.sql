-- Models, their immutable versions, aliases pointing at versions, and what happened to them.
-- Portable SQL: the same migration runs on SQLite and PostgreSQL. Times are Unix milliseconds.
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    owner TEXT NOT NULL,
    next_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE versions (
    model TEXT NOT NULL REFERENCES models (name),
    version BIGINT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (model, digest)
);

CREATE INDEX versions_digest ON versions (digest);

CREATE TABLE aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version BIGINT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX events_model ON events (model, at);

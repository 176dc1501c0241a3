-- The same tables as SQLite's 0001_initial. Names sort bytewise (COLLATE "C"), as in SQLite.

-- Runs are created by their first snapshot and removed with their last. A put locks its
-- run's row only for its last statement (counters, position) and the commit, so a run's
-- positions are handed out in commit order and paging never skips a snapshot.
CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    snapshots BIGINT NOT NULL DEFAULT 0,
    positions BIGINT NOT NULL DEFAULT 0,
    UNIQUE (namespace, name)
);

-- A named snapshot of a run; its ranks are entries. Listing pages by (run_id, position).
CREATE TABLE snapshots (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    name TEXT COLLATE "C" NOT NULL,
    stored DOUBLE PRECISION NOT NULL,
    position BIGINT,
    UNIQUE (run_id, name),
    UNIQUE (run_id, position)
);

-- One rank's encoded snapshot: the envelope is the body with its state entries cut out.
CREATE TABLE entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snapshot_id BIGINT NOT NULL REFERENCES snapshots (id),
    rank INTEGER NOT NULL,
    body_sha256 BYTEA NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    envelope BYTEA NOT NULL,
    info TEXT NOT NULL,
    UNIQUE (snapshot_id, rank)
);

-- Content-addressed state entries, kept once however many snapshots use them. Generator
-- states are random bits: storing them uncompressed saves a futile compression attempt.
CREATE TABLE states (
    hash BYTEA PRIMARY KEY,
    data BYTEA NOT NULL
);
ALTER TABLE states ALTER COLUMN data SET STORAGE EXTERNAL;

-- Where each state entry goes back into an envelope.
CREATE TABLE entry_states (
    entry_id BIGINT NOT NULL REFERENCES entries (id),
    position INTEGER NOT NULL,
    at INTEGER NOT NULL,
    state_hash BYTEA NOT NULL REFERENCES states (hash),
    PRIMARY KEY (entry_id, position)
);
CREATE INDEX entry_states_by_state ON entry_states (state_hash);

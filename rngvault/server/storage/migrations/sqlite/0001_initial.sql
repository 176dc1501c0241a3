-- Runs are created by their first snapshot and removed with their last.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    snapshots INTEGER NOT NULL DEFAULT 0,
    UNIQUE (namespace, name)
);

-- A named snapshot of a run; its ranks are entries. Listing pages by (run_id, id).
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    stored REAL NOT NULL,
    UNIQUE (run_id, name)
);
CREATE INDEX snapshots_by_run ON snapshots (run_id, id);

-- One rank's encoded snapshot: the envelope is the body with its state entries cut out.
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id),
    rank INTEGER NOT NULL,
    body_sha256 BLOB NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    info TEXT NOT NULL,
    UNIQUE (snapshot_id, rank)
);

-- Content-addressed state entries, kept once however many snapshots use them.
CREATE TABLE states (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);

-- Where each state entry goes back into an envelope.
CREATE TABLE entry_states (
    entry_id INTEGER NOT NULL REFERENCES entries (id),
    position INTEGER NOT NULL,
    at INTEGER NOT NULL,
    state_id INTEGER NOT NULL REFERENCES states (id),
    PRIMARY KEY (entry_id, position)
) WITHOUT ROWID;
CREATE INDEX entry_states_by_state ON entry_states (state_id);

-- Each run's dictionary: the last 32 KiB of the envelope and listing info of an entry of
-- the run (msgpack [envelope, info]), set once by the first put that finds none, removed with the run.
-- An entry whose ``info`` is "~" and a CRC-32 (or, stored first, empty) keeps its
-- envelope and info packed: raw DEFLATE
-- of [envelope, info] against its run's dictionary; entries stored before are plain.
CREATE TABLE dictionaries (
    run_id BIGINT PRIMARY KEY REFERENCES runs (id),
    data BYTEA NOT NULL
);

-- Each run's dictionary: the last 32 KiB of the envelope and listing info of an entry of
-- the run (msgpack [envelope, info]), set once by the first put that finds none, removed with the run.
-- An entry whose ``info`` is "~" and a CRC-32 (or, stored first, empty) keeps its
-- envelope and info packed: raw DEFLATE
-- of [envelope, info] against its run's dictionary; entries stored before are plain.
CREATE TABLE dictionaries (
    run_id INTEGER PRIMARY KEY REFERENCES runs (id),
    data BLOB NOT NULL
);

-- A state row's ``hash`` may be the first 8 bytes of its SHA-256, the whole of which is
-- then ``sha256``: the unique index on ``hash`` stays short. A row whose 8 bytes another
-- state took first, and every row stored before, has its whole SHA-256 as ``hash`` and no
-- ``sha256``.
ALTER TABLE states ADD COLUMN sha256 BLOB;

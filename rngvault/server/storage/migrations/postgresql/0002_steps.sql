-- Each entry's run and step (its metadata.step, clamped to bigint; NULL for none), indexed
-- for "this run, this rank, by step, then in the order the snapshots were stored"; the
-- index holds what the listing reads of an entry (digest, id).
ALTER TABLE entries ADD COLUMN run_id BIGINT, ADD COLUMN step BIGINT;

-- Existing rows: the step from the listing metadata, which begins {"created":X,"step":Y,
-- (read as text: the metadata may hold NaN, which PostgreSQL's json refuses).
UPDATE entries e SET
    run_id = s.run_id,
    step = CASE WHEN substring(e.info FROM '^\{"created":[^,]*,"step":(-?[0-9]+)') IS NOT NULL
        THEN LEAST(
            substring(e.info FROM '^\{"created":[^,]*,"step":(-?[0-9]+)')::numeric,
            9223372036854775807
        )::bigint
    END
FROM snapshots s WHERE s.id = e.snapshot_id;

CREATE INDEX entries_by_step ON entries (run_id, rank, step, snapshot_id)
    INCLUDE (digest, id) WHERE step IS NOT NULL;

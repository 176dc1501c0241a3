-- Each entry's run and step (its metadata.step, clamped to int64; NULL for none), indexed
-- for "this run, this rank, by step, then in the order the snapshots were stored". The
-- index covers the listing (the digest too): reading each entry's row instead costs
-- three times as much.
ALTER TABLE entries ADD COLUMN run_id INTEGER;
ALTER TABLE entries ADD COLUMN step INTEGER;

-- Existing rows: the step from the listing metadata, which begins {"created":X,"step":Y,
-- (X a number, never holding a comma); CAST clamps a step past int64.
UPDATE entries SET
    run_id = (SELECT run_id FROM snapshots WHERE snapshots.id = entries.snapshot_id),
    step = (
        SELECT CASE WHEN value = 'null' THEN NULL ELSE CAST(value AS INTEGER) END
        FROM (SELECT substr(rest, 1, instr(rest, ',') - 1) AS value
              FROM (SELECT substr(info, instr(info, ',"step":') + 8) AS rest))
    );

CREATE INDEX entries_by_step ON entries (run_id, rank, step, snapshot_id, digest)
    WHERE step IS NOT NULL;

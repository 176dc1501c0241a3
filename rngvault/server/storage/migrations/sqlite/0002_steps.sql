-- Each entry's run and step (its metadata.step, clamped to int64; NULL for none), indexed
-- for "this run, this rank, by step" (the rowid orders one step's entries as stored).
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

CREATE INDEX entries_by_step ON entries (run_id, rank, step) WHERE step IS NOT NULL;

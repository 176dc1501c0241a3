-- The same column as SQLite's 0005_run_records: a run's record as compact JSON, written
-- once; NULL for a run without one (it reads as {}).
ALTER TABLE runs ADD COLUMN record TEXT;

-- A run's record (rngvault._record): compact JSON, written once; NULL for a run without
-- one (it reads as {}). A record may create its run, which then holds no snapshot yet.
ALTER TABLE runs ADD COLUMN record TEXT;

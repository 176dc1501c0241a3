-- A state may be kept as a delta from a whole state of the same generator (its base):
-- ``base`` is the base row's id and ``how`` the delta's form letter then its key advance as JSON
-- (an older form, [form, how] as JSON, still reads), both NULL for
-- a whole state, as every row stored before is. A base is freed only once no delta
-- refers to it.
ALTER TABLE states ADD COLUMN base INTEGER REFERENCES states (id);
ALTER TABLE states ADD COLUMN how TEXT;
CREATE INDEX states_by_base ON states (base) WHERE base IS NOT NULL;

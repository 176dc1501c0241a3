-- A whole state row may keep its bytes in the blob store (``--blobs s3://...``): ``external``
-- is 1 there, with ``data`` empty and ``how`` NULL (the object holds the state itself, keyed by
-- its SHA-256); NULL for a row whose bytes are in ``data``, as every row stored before.
ALTER TABLE states ADD COLUMN external INTEGER;

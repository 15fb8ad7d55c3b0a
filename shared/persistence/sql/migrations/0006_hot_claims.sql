-- A claim changes only the lease columns of its rows (claimed_by, lease_until), which no index
-- names: it can update them in place (a HOT update: no new index entries) when the new
-- versions fit on the rows' page. At fillfactor 80 they did not: rows are inserted together and
-- claimed together (a round takes every row of a page at once), so 79 % of claims wrote their
-- new version to another page and added an entry to each of the five indexes every row has
-- (40,000 due at once, bench/README.md). A claimed version is larger than the row it replaces
-- (the ticker's name, the lease end): at 50, 77 % of a round's claims stayed in place with a
-- 34-character ticker name, at 45 96 %, at 40 all (tests/integration/test_ticker.py). The room
-- left also takes the versions that the mark and the acks write later, near their row.
-- Applies to pages written from now on; existing pages keep their fill.
ALTER TABLE actions SET (fillfactor = 40);

-- The history is read by occurrence, in order (action_history, by `id`), and written three
-- times per occurrence fired and acknowledged: one index, keyed (action_id, id), serves both
-- the reads and uniqueness, instead of a primary key on `id` beside an index on (action_id, id).
ALTER TABLE action_history DROP CONSTRAINT action_history_pkey;
DROP INDEX action_history_by_action;
ALTER TABLE action_history ADD PRIMARY KEY (action_id, id);

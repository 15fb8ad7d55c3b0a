-- A schedule's state changes once in the life of a one-shot schedule (ACTIVE -> COMPLETED, in
-- the ticker's mark of the round that fired its last occurrence), and on each pause and resume.
-- `state` was in the predicate of the name's unique index, so that update could not be HOT: it
-- wrote the whole row (a definition of ~1 KB in it) to another page and an entry into both
-- indexes. The index's predicate now reads `live`, a column PostgreSQL computes from `state`:
-- completing, pausing or resuming leaves it true, and no index names `state` any more, so those
-- updates stay in place when the new version fits on its page. Rows are created together and
-- completed together (a burst of one-shot schedules fires in the same rounds), so a page keeps
-- room for each of its rows' new version: at fillfactor 70 half of them stayed in place, at 50
-- all (definitions of 50 to 900 bytes). Timed alone, completing 50,000 schedules in rounds of
-- 2,000: 22-26 us a schedule before, 5-6 now (bench/README.md, profile notes). The heap of
-- schedules that never complete is twice as large; once completed, as large as before (a
-- non-HOT update left a new version elsewhere too).
-- Queries by name must say `live` (not `state <> 'DELETED'`) for the index to serve them.
-- Adding a stored generated column rewrites the table (at the fill factor set first).
ALTER TABLE schedules SET (fillfactor = 50);
ALTER TABLE schedules ADD COLUMN live boolean GENERATED ALWAYS AS (state <> 'DELETED') STORED;
DROP INDEX schedules_name_key;
CREATE UNIQUE INDEX schedules_name_key ON schedules (tenant, namespace, name) WHERE live;

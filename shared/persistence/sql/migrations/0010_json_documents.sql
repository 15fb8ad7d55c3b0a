-- A schedule's definition (`spec`, ~600 bytes) and a command's stored answer (`result`, ~1.3 KB)
-- are written whole for every create and read back whole: PostgreSQL never looks inside them
-- on a hot path (the dashboard reads spec->'trigger'->>'kind', which json serves too). As jsonb
-- each was parsed into jsonb's tree on the way in and printed on the way out; json keeps the
-- text (checked, not parsed into a tree). Measured on command ingest (bench/README.md): the
-- two inserts went from 18.7 and 26.6 µs a row to 14.9 and 15.1 µs, PostgreSQL's CPU from 77
-- to 59 µs a command. json also keeps the document as written: a replayed command answers
-- with its first result down to the order of the fields, and a schedule's spec reads back in
-- the documented order (jsonb reorders keys by length).
-- actions.payload and action_history.output stay jsonb: mostly NULL, and rewriting the two
-- largest tables for them is not worth it.
-- Rewrites both tables (ALTER ... TYPE takes an exclusive lock while it copies them).
ALTER TABLE schedules ALTER COLUMN spec TYPE json USING spec::json;
ALTER TABLE processed_commands ALTER COLUMN result TYPE json USING result::json;

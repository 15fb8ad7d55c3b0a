-- A schedule's shape: a digest of what its definition says about firing (all but what names
-- the schedule and its explicit actions: shared/specs.py, `shape_of`), written by the scheduler
-- with the definition. Schedules of one shape share one parsed definition in the ticker; the
-- claim names each occurrence's shape, so a schedule whose shape the ticker parsed already
-- needs no read of its definition (a burst of distinct one-shot schedules made from one
-- template reads one; bench/README.md, profile notes). NULL where it is not known (schedules
-- stored before this migration): the ticker reads the definition and computes it, as before.
-- Not computed by PostgreSQL (a generated column): parsing the json to drop the names and
-- hashing it added 20-25 us to each insert, on the command path (bench/README.md).
ALTER TABLE schedules ADD COLUMN shape bytea;

-- A definition rewritten without its shape (by code that does not know the column, still
-- running while this migration lands) must not keep the old one: the ticker would fire the
-- new definition's occurrences as the old shape says. Only an update that sets `spec` runs
-- this (replacing or patching a schedule), never one of the hot paths (completing, pausing).
-- A rewrite that keeps the shape (a replace that changes only the names or the explicit
-- actions) clears it too: the ticker then reads that definition once and computes its shape
-- (correct, as before this migration).
CREATE FUNCTION schedules_forget_shape() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.shape := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER schedules_shape_follows_spec
    BEFORE UPDATE OF spec ON schedules
    FOR EACH ROW
    WHEN (NEW.shape IS NOT DISTINCT FROM OLD.shape
          AND NEW.spec::text IS DISTINCT FROM OLD.spec::text)
    EXECUTE FUNCTION schedules_forget_shape();

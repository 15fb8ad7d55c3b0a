-- The dashboard (served by the ticker, refreshed every 5 s while a page is open) read all of
-- what was stored on every refresh: every schedule for its next fire, every finished
-- occurrence sorted by updated_at, every history row of the last hour (at 5,000 fired a
-- second, 54 million). Its reads now touch about what it shows.

-- Next fire of a schedule: its pending occurrences by fire_at, so that the first one is one
-- probe, not a read of all of them (a schedule of 1,000 explicit actions: 1,000 rows). Also
-- what a schedule's view asks (pending_due_times, its next five). fire_at is in
-- actions_pending_fire already: a claim, which changes neither, stays a HOT update.
DROP INDEX actions_pending_by_schedule;
CREATE INDEX actions_pending_by_schedule ON actions (schedule_id, fire_at) WHERE state = 'PENDING';

-- Recent actions: the newest history rows, by id (ids grow as rows are appended). A BRIN index
-- keeps one summary per range of pages instead of an entry per row; ranges not summarized yet
-- (the newest) are always read, so the tail is found whatever autovacuum has done.
CREATE INDEX action_history_recent ON action_history USING brin (id) WITH (pages_per_range = 16);

-- Timeline: attempts fired and acknowledged per minute, counted as the history is written, in
-- a ring of one day (slot: the minute of the day) so that the table never grows. Each writer
-- mostly updates rows of its own (shard: its backend's pid modulo 64), so that two writers
-- rarely wait for each other's transaction. A count arriving more than a day late is dropped.
-- Counting starts with this migration (the history is not read back: on a large table that
-- would be a long scan while upgrading), so the timeline fills within its hour.
CREATE TABLE activity_minutes (
    slot         smallint    NOT NULL,
    shard        smallint    NOT NULL,
    minute       timestamptz NOT NULL,
    fired        bigint      NOT NULL,
    acknowledged bigint      NOT NULL,
    PRIMARY KEY (slot, shard)
);
CREATE INDEX activity_minutes_by_minute ON activity_minutes (minute);

CREATE FUNCTION count_activity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO activity_minutes AS m (slot, shard, minute, fired, acknowledged)
    SELECT (extract(epoch FROM c.minute)::bigint / 60 % 1440)::smallint,
           (pg_backend_pid() % 64)::smallint, c.minute, c.fired, c.acknowledged
    FROM (
        SELECT date_trunc('minute', at, 'UTC') AS minute,
               count(*) FILTER (WHERE state = 'DISPATCHED') AS fired,
               count(*) FILTER (WHERE state IN ('SUCCEEDED', 'FAILED')) AS acknowledged
        FROM new_rows
        WHERE state IN ('DISPATCHED', 'SUCCEEDED', 'FAILED')
        GROUP BY 1
    ) c
    ORDER BY c.minute  -- rows locked in time order: two writers of one shard cannot deadlock
    ON CONFLICT (slot, shard) DO UPDATE
    SET minute = excluded.minute,
        fired = CASE WHEN m.minute = excluded.minute THEN m.fired ELSE 0 END + excluded.fired,
        acknowledged = CASE WHEN m.minute = excluded.minute THEN m.acknowledged ELSE 0 END
                       + excluded.acknowledged
    WHERE m.minute <= excluded.minute;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_activity AFTER INSERT ON action_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_activity();

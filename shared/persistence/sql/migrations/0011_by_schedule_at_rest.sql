-- A schedule's occurrences, newest first (a schedule's `recentActions`), indexed only while they
-- are at rest: pending or finished. An update that changes `state` is not HOT, and adds an
-- entry to every index whose predicate its new version meets; in flight (DISPATCHED, RUNNING)
-- an occurrence now adds none here, so a fire writes three index entries instead of four
-- (the primary key and the two in-flight indexes) and so does a RUNNING ack. The in-flight
-- ones are found by actions_in_flight_by_schedule (recent_actions reads both).
-- Measured alone (100,000 claimed and marked in rounds of 1,000): the mark writes 580 bytes of
-- WAL a row instead of 673, and its fastest rounds take 24-28 us a row instead of 26-30
-- (bench/README.md, profile notes).
DROP INDEX actions_by_schedule;
CREATE INDEX actions_by_schedule ON actions (schedule_id, due_at DESC)
    WHERE state NOT IN ('DISPATCHED', 'RUNNING');

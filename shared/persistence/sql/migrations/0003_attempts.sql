-- Attempts: `fire_at` is when the current attempt fires (due_at for the first, later for a
-- retry), so that due_at, and the idempotencyKey built from it, never change. `held` marks an
-- occurrence buffered behind a running one (policy.overlap BUFFER_ONE).
ALTER TABLE actions ADD COLUMN fire_at timestamptz;
UPDATE actions SET fire_at = due_at;
ALTER TABLE actions ALTER COLUMN fire_at SET NOT NULL;
ALTER TABLE actions ADD COLUMN held boolean NOT NULL DEFAULT false;
ALTER TABLE actions ADD COLUMN misfired boolean NOT NULL DEFAULT false;

DROP INDEX actions_pending_due;
-- What the claim reads: only what could fire.
CREATE INDEX actions_pending_fire ON actions (fire_at) WHERE state = 'PENDING' AND NOT held;
-- What the deadline sweep reads: only what is in flight.
CREATE INDEX actions_in_flight_deadline ON actions (ack_deadline)
    WHERE state IN ('DISPATCHED', 'RUNNING');
-- Overlap checks: in-flight occurrences of one schedule.
CREATE INDEX actions_in_flight_by_schedule ON actions (schedule_id)
    WHERE state IN ('DISPATCHED', 'RUNNING');

-- Churned tables: vacuum and analyze them sooner than the defaults would.
ALTER TABLE actions SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Pausing: when a schedule was paused, for `schedule.resume` with resumeFrom PAUSED_AT.
ALTER TABLE schedules ADD COLUMN paused_at timestamptz;

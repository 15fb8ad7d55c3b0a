-- Probes of the fire benchmark (bench/fire_throughput.py). Read-only.

-- name: fired_span
-- When the ticker released the first and the last occurrence (firedAt, stored with each row):
-- Chime's own pace, whatever the broker then takes to deliver.
SELECT count(fired_at) AS fired, min(fired_at) AS first, max(fired_at) AS last
FROM actions WHERE tenant = $1;

-- name: recorded_fires
-- Fires recorded since $1: the dashboard's per-minute counters, which each mark's history rows
-- add to in the mark's transaction, committed after the broker acknowledged the round. A few
-- rows read: cheap enough to poll while the ticker fires.
SELECT coalesce(sum(fired), 0) AS fired FROM activity_minutes WHERE minute >= date_trunc('minute', $1::timestamptz);

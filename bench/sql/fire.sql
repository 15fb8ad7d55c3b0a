-- Probes of the fire benchmark (bench/fire_throughput.py). Read-only.

-- name: fired_span
-- When the ticker released the first and the last occurrence (firedAt, stored with each row):
-- Chime's own pace, whatever the broker then takes to deliver.
SELECT count(fired_at) AS fired, min(fired_at) AS first, max(fired_at) AS last
FROM actions WHERE tenant = $1;

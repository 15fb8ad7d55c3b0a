-- Probes of the steady/soak benchmark (bench/steady_lateness.py). Read-only.

-- name: claim_probe
-- The ticker's claim, as a plain read (no row locks, so it cannot delay the ticker): what the
-- index of due occurrences costs to read while rows churn.
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
SELECT a.id FROM actions a JOIN schedules s ON s.id = a.schedule_id
WHERE a.state = 'PENDING' AND NOT a.held AND a.fire_at <= $1
  AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')
ORDER BY a.fire_at
LIMIT 1000;

-- name: churn
SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,
       pg_relation_size('actions') AS table_bytes,
       pg_relation_size('actions_pending_fire') AS due_index_bytes
FROM pg_stat_user_tables WHERE relname = 'actions';

-- name: session_waits
-- What each client session running a statement is doing at this instant: waiting (the wait
-- event) or not (on a core, or waiting for one: NULL), and how long its statement has run.
-- Sampled every second, so that a window in which the ticker fired late says whether its
-- statements were stuck in PostgreSQL, and on what.
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait,
       extract(epoch FROM clock_timestamp() - query_start) AS running_s
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid();

-- name: io
-- Data pages written out and read in so far, by the kind of process (PostgreSQL 16+:
-- pg_stat_io), and the checkpoints so far (17+: pg_stat_checkpointer). A backend that writes
-- pages out itself (no clean buffer to take) waits for it, and so would a claim or a mark; a page
-- read in came from the OS (its page cache or the disk), not from shared buffers.
SELECT (SELECT jsonb_object_agg(backend_type, writes) FROM (
            SELECT backend_type, sum(writes)::bigint AS writes FROM pg_stat_io
            WHERE object = 'relation' AND writes IS NOT NULL
            GROUP BY backend_type) AS w) AS by_writer,
       (SELECT jsonb_object_agg(backend_type, reads) FROM (
            SELECT backend_type, sum(reads)::bigint AS reads FROM pg_stat_io
            WHERE object = 'relation' AND reads IS NOT NULL
            GROUP BY backend_type) AS r) AS by_reader,
       (SELECT num_timed + num_requested FROM pg_stat_checkpointer) AS checkpoints;

-- name: fired_by_window
-- firedAt - dueAt of every occurrence due in the run, per window of $2 seconds from $1.
-- (fired_at is the latest attempt's: a retried occurrence would count its retry's delay.)
SELECT floor(extract(epoch FROM due_at - $1) / $2)::int AS window,
       count(*) AS due,
       count(fired_at) AS fired,
       count(*) FILTER (WHERE fired_at < due_at) AS early,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY fired_at - due_at) AS p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY fired_at - due_at) AS p99,
       max(fired_at - due_at) AS max
FROM actions WHERE tenant = $3 AND due_at >= $1
GROUP BY 1 ORDER BY 1;

-- name: fired_overall
SELECT count(*) AS due, count(fired_at) AS fired, count(*) FILTER (WHERE attempt > 1) AS retried,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY fired_at - due_at) AS p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY fired_at - due_at) AS p99,
       max(fired_at - due_at) AS max
FROM actions WHERE tenant = $2 AND due_at >= $1;

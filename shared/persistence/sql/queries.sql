-- Named queries. `-- name: x` starts a query; $n are asyncpg bind parameters.
-- Queries that decide what is due take `now` as a parameter, never NOW(): the clock is injected.

-- name: applied_migrations
-- The schema's migrations applied so far (chime migrate records each; the services' role may
-- read them: grants.sql).
SELECT version FROM chime_schema_migrations;

-- name: set_tenant
-- The tenant whose rows this transaction may see under row-level security (0004); '*': all.
SELECT set_config('chime.tenant', $1, true);

-- name: find_processed_command
-- The command applied with this id, else the one that took this key: a redelivery is its
-- command again whatever key it names. (Both may match, two rows: without the order, which one
-- came first was the table's physical order.)
SELECT command_id, idempotency_key, body_hash, result
FROM processed_commands
WHERE tenant = $1 AND (command_id = $2 OR ($3::text IS NOT NULL AND idempotency_key = $3))
ORDER BY command_id = $2 DESC
LIMIT 1;

-- name: insert_processed_command
INSERT INTO processed_commands (tenant, command_id, idempotency_key, body_hash, result, processed_at)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: insert_schedule
INSERT INTO schedules (id, tenant, namespace, name, state, version, spec, shape,
                       cron_expression, ack_timeout_ms, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $10)
RETURNING *;

-- name: get_schedule_by_id
-- Locked: concurrent commands on one schedule apply one after the other, and the second sees
-- the first's version (so two replaces with the same expectedVersion cannot both win).
SELECT * FROM schedules WHERE tenant = $1 AND id = $2 AND live FOR UPDATE;

-- name: get_schedule_by_name
-- `live` (not deleted) is the predicate of the name's unique index (migration 0014): a query
-- by name that spelled it `state <> 'DELETED'` could not use the index.
SELECT * FROM schedules WHERE tenant = $1 AND namespace = $2 AND name = $3 AND live
FOR UPDATE;

-- name: set_schedule_state
UPDATE schedules SET state = $3::text, version = version + 1, updated_at = $4::timestamptz,
                     paused_at = CASE WHEN $3::text = 'PAUSED' THEN $4::timestamptz END
WHERE tenant = $1 AND id = $2
RETURNING *;

-- name: overwrite_schedule
UPDATE schedules
SET namespace = $3, name = $4, state = $5, spec = $6, shape = $7, cron_expression = $8,
    ack_timeout_ms = $9, version = version + 1, updated_at = $10,
    paused_at = CASE WHEN $5::text = 'PAUSED' THEN coalesce(paused_at, $10::timestamptz) END
WHERE tenant = $1 AND id = $2
RETURNING *;

-- name: drop_pending_series
-- A series being redefined or paused: its next occurrence (never fired) is dropped. One that a
-- ticker's round holds right now (locked by its claim) is waited for: once the round commits it
-- is DISPATCHED and left to finish; if the round is rolled back it is PENDING again and dropped.
-- One that fired and waits for its retry (PENDING at a later attempt) is left to finish too.
DELETE FROM actions
WHERE schedule_id = $1 AND origin = 'SERIES' AND state = 'PENDING' AND attempt = 1;

-- name: drop_pending_explicit
-- Explicit actions being redefined: those never fired (as drop_pending_series).
DELETE FROM actions
WHERE schedule_id = $1 AND origin = 'EXPLICIT' AND state = 'PENDING' AND attempt = 1;

-- name: last_series_seq
SELECT coalesce(max(seq), 0) FROM actions WHERE schedule_id = $1;

-- name: skip_missed
-- Resuming from NOW: what fell due while paused (from $4 to $2) is recorded as SKIPPED, not
-- fired. What fell due before the pause and waits (held behind a running one, or not fired
-- yet) goes on waiting; a retry is not an occurrence that fell due: its occurrence fired before.
WITH skipped AS (
    UPDATE actions SET state = 'SKIPPED', held = false, version = version + 1, updated_at = $2
    WHERE schedule_id = $1 AND state = 'PENDING' AND due_at >= $4 AND due_at < $2
      AND origin <> 'MANUAL' AND attempt = 1
    RETURNING id, attempt
)
INSERT INTO action_history (action_id, attempt, state, at, message)
SELECT id, attempt, 'SKIPPED', $2, $3 FROM skipped;

-- name: insert_actions
INSERT INTO actions (id, schedule_id, tenant, seq, origin, client_id, type, payload, due_at,
                     fire_at, state, created_at, updated_at)
SELECT a.id, a.schedule_id, a.tenant, a.seq, a.origin, a.client_id, a.type, a.payload, a.due_at,
       a.due_at, 'PENDING', $9, $9
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $10::jsonb[])
     AS a(id, schedule_id, tenant, seq, origin, client_id, type, due_at, payload)
ON CONFLICT (schedule_id, seq) WHERE seq IS NOT NULL DO NOTHING;

-- name: cancel_pending_actions
WITH cancelled AS (
    UPDATE actions SET state = 'CANCELLED', held = false, version = version + 1, updated_at = $2
    WHERE schedule_id = $1 AND state = 'PENDING'
    RETURNING id, attempt
)
INSERT INTO action_history (action_id, attempt, state, at, message)
SELECT id, attempt, 'CANCELLED', $2, $3 FROM cancelled;

-- name: series_position
-- A schedule's last series occurrence (series occurrences are the ones with a position: `seq IS
-- NOT NULL` lets actions_series_position find it), and whether it is still to fire. One that has
-- fired, or was skipped, had its successor decided then: with none stored after it, the series
-- has ended, though its trigger has times after it (it ran out late, past its end or its
-- catch-up window). No row: the series has stored none.
SELECT seq, due_at, state = 'PENDING' AND attempt = 1 AS to_fire
FROM actions WHERE schedule_id = $1 AND seq IS NOT NULL
ORDER BY seq DESC LIMIT 1;

-- name: pending_due_times
-- When a schedule's stored occurrences fire next: every pending one, or with $3 its manual ones
-- alone (all that fires of a paused schedule).
SELECT fire_at AS due_at FROM actions WHERE schedule_id = $1 AND state = 'PENDING'
  AND (NOT $3 OR origin = 'MANUAL')
ORDER BY fire_at LIMIT $2;

-- name: recent_actions
-- A schedule's newest occurrences: those at rest (actions_by_schedule, newest first) and those
-- in flight (actions_in_flight_by_schedule), which that index leaves out (migration 0011).
SELECT * FROM (
    (SELECT id, type, due_at, state, attempt, fired_at, updated_at
     FROM actions WHERE schedule_id = $1 AND state NOT IN ('DISPATCHED', 'RUNNING')
     ORDER BY due_at DESC LIMIT $2)
    UNION ALL
    (SELECT id, type, due_at, state, attempt, fired_at, updated_at
     FROM actions WHERE schedule_id = $1 AND state IN ('DISPATCHED', 'RUNNING'))
) recent
ORDER BY due_at DESC LIMIT $2;

-- name: notify_due
SELECT pg_notify('chime_due', '');

-- name: keyed_plan
-- The plan of the ticker's claim and of its deadline sweep, for the rest of their
-- transaction: walk the index that gives the rows in order (due occurrences by fire_at,
-- attempts in flight by ack deadline), look each one's schedule up by key, stop at the
-- round's size, and lock the rows chosen. PostgreSQL picks a plan from its
-- statistics, and they mislead it here. The claim: before autovacuum has analysed a burst
-- stored within the last minute, it expects a dozen due rows and reads all of them (100,000),
-- hashes them with the schedules and sorts them, for every round (50-100 ms a round of 1,000,
-- against 5-7 ms); with statistics up to date but one schedule holding most of them, the
-- same; and with many schedules (when it still updated the rows it claimed), it updated the
-- chosen rows through a scan of the whole table (21 ms). The sweep (once a second, between claims): with no statistics it hashed every
-- schedule to join the few attempts overdue; in a benchmark run it read the in-flight rows
-- through their other index (by schedule) and sorted them, 160,000 rows and 40-74 ms a
-- second. Sorts, hash joins and sequential scans are what those plans need and what neither
-- statement ever needs. The statements after them in the transaction (definitions,
-- successors, overlap checks, ending attempts) read by key as well. The claim's transaction
-- sets the same through claim_plan.
SELECT set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true),
       set_config('enable_seqscan', 'off', true);

-- name: claim_plan
-- keyed_plan for the claim's transaction, and how long that transaction may sit idle ($1, in
-- ms: the ticker's lease) before PostgreSQL ends its session. The transaction holds the round's
-- rows from the claim to the mark, idle while the round waits for its instants and the broker;
-- the ticker runs a statement in it every third of the lease meanwhile (`keep_claim`), so only
-- a ticker that stopped answering loses its round, which is rolled back and taken by others.
SELECT set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true),
       set_config('enable_seqscan', 'off', true),
       set_config('idle_in_transaction_session_timeout', $1::text, true);

-- name: keep_claim
-- A round's transaction still in use (see claim_plan).
SELECT 1;

-- name: claim_due
-- Claim what is due by $1 (now plus the ticker's lookahead), oldest first, at most $2: lock the
-- rows for the rest of the transaction, which the ticker keeps open until the round is marked
-- (the claim writes nothing to them: the lock is the claim). Other tickers pass over them
-- (SKIP LOCKED); a ticker that dies takes its transaction with it, and the rows are free at
-- once. Paused schedules hold their occurrences, except manual triggers; held ones wait
-- (overlap).
-- Two columns come in the form that costs the ticker least to read: the payload as its JSON
-- text, which the event carries as it is (not a document decoded only to be encoded again),
-- and fire_at only where it differs from due_at (a retry, a run delayed), NULL otherwise: a
-- timestamp fewer to decode for nearly every occurrence. Together 1.4-1.8 us less of the
-- ticker's CPU a row (bench/README.md, profile notes).
-- The schedule's shape and creation: a schedule whose shape the ticker parsed already is
-- compiled from them, without reading its definition (shared/specs.py).
SELECT a.id, a.schedule_id, a.tenant, a.seq, a.origin, a.type, a.payload::text AS payload_json,
       a.due_at, NULLIF(a.fire_at, a.due_at) AS fire_at, a.attempt, s.name, s.namespace,
       s.version AS schedule_version, s.ack_timeout_ms, s.shape,
       s.created_at AS schedule_created_at
FROM actions a JOIN schedules s ON s.id = a.schedule_id
WHERE a.state = 'PENDING' AND NOT a.held AND a.fire_at <= $1
  AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')
ORDER BY a.fire_at
LIMIT $2
FOR UPDATE OF a SKIP LOCKED;

-- name: schedule_definitions
SELECT id, version, created_at, shape, spec FROM schedules WHERE id = ANY($1::uuid[]);

-- name: in_flight_schedules
-- Which of these schedules have an occurrence that has not ended: in flight, or waiting for
-- its retry (PENDING at a later attempt; one the round is about to fire counts too, whatever
-- its place in the round). Each probe reads a schedule's rows in one state only
-- (actions_in_flight_by_schedule, actions_pending_by_schedule).
SELECT schedule_id FROM actions
WHERE schedule_id = ANY($1::uuid[]) AND state IN ('DISPATCHED', 'RUNNING')
UNION
SELECT schedule_id FROM actions
WHERE schedule_id = ANY($1::uuid[]) AND state = 'PENDING' AND attempt > 1;

-- name: lock_guarded
-- Of these schedules (with an overlap policy), those this round may decide: it takes a lock on
-- each for the rest of its transaction, unless another round holds it (a replica's, whose
-- fires this one cannot see until it commits). The key: a class for Chime's overlap locks and
-- the schedule id's hash (two schedules sharing one only wait for each other).
SELECT id FROM unnest($1::uuid[]) AS id
WHERE pg_try_advisory_xact_lock(1667788133, hashtext(id::text));

-- name: held_schedules
SELECT DISTINCT schedule_id FROM actions
WHERE schedule_id = ANY($1::uuid[]) AND state = 'PENDING' AND held;

-- name: hold_actions
-- Hold these occurrences (BUFFER_ONE; of the schedules $3) behind an occurrence of their
-- schedule that has not ended (in flight, or waiting for its retry), share-locked here until the
-- round commits: whatever ends it (an ack, the deadline sweep) waits for that commit, and then
-- sees and releases what this round held. One whose schedule has none left to lock (ended since
-- the claim read it, or being ended right now) is not held: left PENDING, the next claim takes
-- it. Else an ack committed between the claim and this round's commit released nothing, and the
-- occurrence stayed held for ever.
WITH flying AS MATERIALIZED (
    SELECT schedule_id FROM actions
    WHERE schedule_id = ANY($3::uuid[]) AND state IN ('DISPATCHED', 'RUNNING')
    FOR SHARE SKIP LOCKED
), retrying AS MATERIALIZED (
    SELECT schedule_id FROM actions
    WHERE schedule_id = ANY($3::uuid[]) AND state = 'PENDING' AND attempt > 1
    FOR SHARE SKIP LOCKED
)
UPDATE actions SET held = true, updated_at = $2
WHERE id = ANY($1::uuid[])
  AND schedule_id IN (SELECT schedule_id FROM flying UNION SELECT schedule_id FROM retrying);

-- name: release_held
-- The running occurrence ended: the one buffered behind it (BUFFER_ONE) fires now.
WITH released AS (
    UPDATE actions SET held = false, fire_at = $2, updated_at = $2
    WHERE schedule_id = ANY($1::uuid[]) AND state = 'PENDING' AND held
    RETURNING id
)
SELECT pg_notify('chime_due', '') FROM released;

-- name: complete_schedules
-- Schedules whose series ended and that have nothing left to fire, at the mark of the round
-- that fired their last occurrences ($3: its rows, DISPATCHED by now in this transaction; still
-- PENDING when they were skipped or held, but not left to fire). Rows another round holds
-- (locked by its claim) are passed over: that round fires them, and if it is rolled back they
-- fire later all the same (a completed schedule's occurrences are claimed as any other). Were
-- they counted, two rounds holding occurrences of one schedule would each see the other's
-- pending and neither complete it.
-- A scalar subquery rather than NOT EXISTS: it probes each named schedule's pending rows
-- (actions_pending_by_schedule, migration 0005). As an anti join it left the planner a
-- choice, and with statistics that underestimated the pending rows it scanned all of them
-- instead, inside the ticker's claim (0.6-1.1 s at 300,000 rows; bench/README.md).
UPDATE schedules s SET state = 'COMPLETED', version = version + 1, updated_at = $2
WHERE s.id = ANY($1::uuid[]) AND s.state = 'ACTIVE'
  AND (SELECT 1 FROM actions a
       WHERE a.schedule_id = s.id AND a.state = 'PENDING' AND a.id <> ALL($3::uuid[])
       LIMIT 1 FOR KEY SHARE OF a SKIP LOCKED) IS NULL;

-- name: mark_dispatched
-- After publishing, in the claim's transaction: PENDING -> DISPATCHED (the round holds its
-- rows, so nothing else moved them meanwhile: an ack for one waits for this commit). Each row
-- has its own firing instant: a round is released as its occurrences fall due, so its rows
-- name the instant of their part ($2, 1-based, into $3: the round's release instants), and
-- their ack deadline is that instant plus their schedule's ack timeout in ms ($4; bigint, as
-- stored: 25 days are more ms than an int4 holds). Two instants a row made asyncpg build and
-- encode two timestamps a row, ~1.1 us of the ticker's CPU a fire; two integers cost ~0.3
-- (bench/README.md, profile notes).
WITH d AS (
    SELECT u.id, ($3::timestamptz[])[u.part] AS fired_at, u.ack_ms, u.misfired
    FROM unnest($1::uuid[], $2::int4[], $4::int8[], $5::boolean[])
        AS u(id, part, ack_ms, misfired)
), marked AS (
    UPDATE actions a
    SET state = 'DISPATCHED', fired_at = d.fired_at,
        ack_deadline = d.fired_at + d.ack_ms * interval '1 millisecond',
        misfired = d.misfired, version = a.version + 1, updated_at = d.fired_at
    FROM d
    WHERE a.id = d.id
    RETURNING a.id, a.attempt, d.fired_at
)
INSERT INTO action_history (action_id, attempt, state, at)
SELECT id, attempt, 'DISPATCHED', fired_at FROM marked;

-- name: next_wake
-- The earliest instant at which a round could find something: an occurrence to fire or an ack
-- deadline to expire. The first is the first pending occurrence by fire_at that no round holds
-- (passed over as the claim passes over them: FOR KEY SHARE SKIP LOCKED, a lock taken for this
-- statement only), read from the index of pending occurrences and never by a scan of them all
-- (millions may be stored). A round rolled back frees its rows without a NOTIFY: the tickers
-- find them at their next wake (a due instant, a NOTIFY or max idle).
WITH first_free AS (
    SELECT a.fire_at FROM actions a JOIN schedules s ON s.id = a.schedule_id
    WHERE a.state = 'PENDING' AND NOT a.held
      AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')
    ORDER BY a.fire_at
    LIMIT 1
    FOR KEY SHARE OF a SKIP LOCKED
)
SELECT least(
    (SELECT fire_at FROM first_free),
    (SELECT min(ack_deadline) FROM actions WHERE state IN ('DISPATCHED', 'RUNNING'))
);

-- name: claim_expired
-- In-flight attempts whose ack deadline passed, locked for this round.
SELECT a.id, a.schedule_id, a.tenant, a.type, a.due_at, a.attempt, a.state, a.version,
       s.name, s.namespace, s.spec, s.version AS schedule_version,
       s.created_at AS schedule_created_at
FROM actions a JOIN schedules s ON s.id = a.schedule_id
WHERE a.id IN (SELECT id FROM actions
               WHERE state IN ('DISPATCHED', 'RUNNING') AND ack_deadline <= $1
               ORDER BY ack_deadline LIMIT $2 FOR UPDATE SKIP LOCKED);

-- name: retry_action
-- A failed or timed-out attempt with attempts left: the next one fires at $3.
UPDATE actions
SET state = 'PENDING', attempt = attempt + 1, fire_at = $3, ack_deadline = NULL,
    version = version + 1, updated_at = $2
WHERE id = $1;

-- name: fail_action
UPDATE actions
SET state = 'FAILED', ack_deadline = NULL, version = version + 1, updated_at = $2
WHERE id = $1;

-- name: lock_action
SELECT a.id, a.schedule_id, a.tenant, a.type, a.due_at, a.state, a.attempt, a.version,
       a.fired_at, s.ack_timeout_ms, s.name, s.namespace, s.spec,
       s.version AS schedule_version, s.created_at AS schedule_created_at
FROM actions a JOIN schedules s ON s.id = a.schedule_id
WHERE a.id = $1 AND a.tenant = $2
FOR UPDATE OF a;

-- name: lock_actions
-- lock_action for many occurrences of one tenant (acks in bulk), without the definition: an
-- ack that needs it (FAILED: retry policy) is applied by lock_action's path.
SELECT a.id, a.schedule_id, a.state, a.attempt, a.version, a.fired_at, s.ack_timeout_ms
FROM actions a JOIN schedules s ON s.id = a.schedule_id
WHERE a.id = ANY($1::uuid[]) AND a.tenant = $2
ORDER BY a.id
FOR UPDATE OF a;

-- name: dispatch_acked
-- Occurrences acknowledged while still PENDING at the attempt the ack names ($1, $2; of tenant
-- $4), due by $3 (the ack's instant) and not held: a round published them and was then rolled
-- back (its transaction failed between the broker's ack and its commit), so the acker records
-- the fire the round could not: DISPATCHED at $3 (the release instant is lost with the round),
-- with its ack deadline and history row. The rows are locked already (lock_actions or
-- lock_action). Returns what the series successors need (shared/persistence/successors.py).
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS u(id, attempt)
), fired AS (
    UPDATE actions a
    SET state = 'DISPATCHED', fired_at = $3,
        ack_deadline = $3 + s.ack_timeout_ms * interval '1 millisecond',
        version = a.version + 1, updated_at = $3
    FROM u, schedules s
    WHERE a.id = u.id AND a.attempt = u.attempt AND a.tenant = $4 AND s.id = a.schedule_id
      AND a.state = 'PENDING' AND NOT a.held AND a.fire_at <= $3
    RETURNING a.id, a.schedule_id, a.tenant, a.seq, a.origin, a.attempt, a.due_at, a.fire_at,
              s.version AS schedule_version, s.shape, s.created_at AS schedule_created_at
), history AS (
    INSERT INTO action_history (action_id, attempt, state, at, message)
    SELECT id, attempt, 'DISPATCHED', $3,
           'published by a round that was rolled back; recorded when its ack came'
    FROM fired
)
SELECT * FROM fired;

-- name: held_among
-- Which of these occurrences are held behind another of their schedule (BUFFER_ONE), with their
-- tenants (actions_held: the held rows only; every tenant's, in a transaction set to '*').
SELECT id, tenant FROM actions WHERE held AND id = ANY($1::uuid[]);

-- name: apply_in_flight_acks
-- RUNNING and SUCCEEDED acks of the attempt in flight (DISPATCHED or RUNNING), one per
-- occurrence, applied in one statement with their history rows: what `decide_ack` does with
-- them, without reading the rows first. Returns the occurrences it changed, with the state
-- each had (`was`: the event's previousState); the acker decides the others after reading
-- them (lock_actions). A row changed by another transaction while this one waited for it is
-- checked again as changed (EvalPlanQual), but `was` keeps the version read before: the
-- states then differ and the row is left to the other path, which reads it as it is now.
-- Rows are locked in the order of $1 (the acker sorts it by id). Unless one of the tenant's
-- acks in the batch ($8) names an occurrence held behind another (BUFFER_ONE, actions_held):
-- then nothing is changed, and those held are returned (`held`), for the acker to apply the
-- tenant's acks one by one, in order (where such an ack comes against the one releasing its
-- occurrence decides it).
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::jsonb[])
        WITH ORDINALITY AS u(id, attempt, state, message, output, n)
), held AS (
    SELECT id FROM actions WHERE held AND id = ANY($8::uuid[])
), changed AS (
    UPDATE actions a
    SET state = u.state,
        ack_deadline = CASE WHEN u.state = 'RUNNING'
            THEN $6::timestamptz
                 + (SELECT s.ack_timeout_ms FROM schedules s WHERE s.id = a.schedule_id)
                   * interval '1 millisecond'
            ELSE a.ack_deadline END,
        version = a.version + 1, updated_at = $6
    FROM u JOIN actions was ON was.id = u.id
    WHERE a.id = u.id AND a.tenant = $7 AND a.attempt = u.attempt
      AND a.state IN ('DISPATCHED', 'RUNNING') AND a.state = was.state
      AND u.state IN ('RUNNING', 'SUCCEEDED') AND NOT EXISTS (SELECT FROM held)
    RETURNING a.id, a.schedule_id, was.state AS previous_state, u.attempt, u.state, u.message,
              u.output, u.n
), history AS (
    INSERT INTO action_history (action_id, attempt, state, at, message, output)
    SELECT id, attempt, state, $6, message, output FROM changed ORDER BY n
)
SELECT id, schedule_id, previous_state, false AS held FROM changed
UNION ALL
SELECT id, NULL, NULL, true FROM held;

-- name: update_action_states
-- Ack changes, one per occurrence (each locked, at the version it was read).
UPDATE actions a
SET state = u.state, ack_deadline = COALESCE(u.deadline, a.ack_deadline),
    version = a.version + 1, updated_at = $5
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[]) AS u(id, version, state, deadline)
WHERE a.id = u.id AND a.version = u.version;

-- name: insert_manual_action
INSERT INTO actions (id, schedule_id, tenant, seq, origin, type, payload, due_at, fire_at, state,
                     created_at, updated_at)
VALUES ($1, $2, $3, NULL, 'MANUAL', $4, $5, $6, $6, 'PENDING', $6, $6);

-- name: insert_history
INSERT INTO action_history (action_id, attempt, state, at, message, output)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: insert_histories
INSERT INTO action_history (action_id, attempt, state, at, message, output)
SELECT h.action_id, h.attempt, h.state, $4, h.message, h.output
FROM unnest($1::uuid[], $2::int[], $3::text[], $5::text[], $6::jsonb[])
     WITH ORDINALITY AS h(action_id, attempt, state, message, output, n)
ORDER BY h.n;

-- name: action_history
SELECT attempt, state, at, message, output FROM action_history WHERE action_id = $1 ORDER BY id;

-- name: mark_skipped
-- Claimed occurrences decided not to fire (misfire, overlap, condition; a definition that
-- cannot be read, a fault of the ticker's own), in the claim's transaction: SKIPPED, with why.
WITH skipped AS (
    UPDATE actions a
    SET state = 'SKIPPED', version = a.version + 1, updated_at = d.at
    FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS d(id, at, reason)
    WHERE a.id = d.id
    RETURNING a.id, a.attempt, d.at, d.reason
)
INSERT INTO action_history (action_id, attempt, state, at, message)
SELECT id, attempt, 'SKIPPED', at, reason FROM skipped;

-- name: status_report
-- `chime status`: schedules by state, and what is due ($1 = now), in flight or failed.
SELECT (SELECT array_agg(state ORDER BY state) FROM (SELECT DISTINCT state FROM schedules) s)
           AS states,
       (SELECT array_agg(n ORDER BY state)
        FROM (SELECT state, count(*) AS n FROM schedules GROUP BY state) c) AS counts,
       (SELECT count(*) FROM actions WHERE state = 'PENDING' AND NOT held AND fire_at <= $1)
           AS backlog,
       (SELECT count(*) FROM actions WHERE state IN ('DISPATCHED', 'RUNNING')) AS in_flight,
       (SELECT count(*) FROM actions WHERE state = 'FAILED') AS failed,
       (SELECT min(fire_at) FROM actions WHERE state = 'PENDING' AND NOT held) AS next_due;

-- name: due_backlog
SELECT count(*) FROM actions WHERE state = 'PENDING' AND NOT held AND fire_at <= $1;

-- name: dashboard_schedules
-- The $1 schedules that fire soonest, found among the first $2 occurrences that can fire (the
-- claim's index, in fire_at order); fewer than $1 there: the newest others fill up the list.
-- A schedule's next fire is its first occurrence that can fire (one held behind a running one
-- has no time of its own yet; a paused schedule fires its manual triggers alone).
WITH soonest AS (
    SELECT s.*, n.next_fire
    FROM (SELECT first.schedule_id, min(first.fire_at) AS next_fire
          FROM (SELECT schedule_id, fire_at, origin FROM actions
                WHERE state = 'PENDING' AND NOT held ORDER BY fire_at LIMIT $2) first
          JOIN schedules p ON p.id = first.schedule_id
          WHERE p.state <> 'PAUSED' OR first.origin = 'MANUAL'
          GROUP BY first.schedule_id ORDER BY next_fire) n
    CROSS JOIN LATERAL (SELECT * FROM schedules s WHERE s.id = n.schedule_id
                        AND s.live) s
    ORDER BY n.next_fire LIMIT $1
), listed AS (
    SELECT * FROM soonest
    UNION ALL
    (SELECT s.*, (SELECT min(a.fire_at) FROM actions a
                  WHERE a.schedule_id = s.id AND a.state = 'PENDING' AND NOT a.held
                    AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL'))
     FROM schedules s
     WHERE s.live AND s.id NOT IN (SELECT id FROM soonest)
     ORDER BY s.id DESC LIMIT $1)
)
SELECT id, tenant, namespace, name, state, cron_expression, spec->'trigger'->>'kind' AS kind,
       next_fire
FROM listed ORDER BY next_fire NULLS LAST, name LIMIT $1;

-- name: history_last_id
SELECT coalesce(pg_sequence_last_value('action_history_id_seq'), 0);

-- name: dashboard_recent_actions
-- The $1 occurrences written to most recently: the history rows after id $2 (the newest few
-- thousand, read through the BRIN index on id).
SELECT a.id, s.name, a.type, a.due_at, a.fired_at, a.state, a.attempt, a.updated_at
FROM (SELECT action_id, max(id) AS last_id FROM action_history WHERE id > $2
      GROUP BY action_id ORDER BY last_id DESC LIMIT $1) h
JOIN actions a ON a.id = h.action_id
JOIN schedules s ON s.id = a.schedule_id
ORDER BY h.last_id DESC;

-- name: dashboard_timeline
-- Per minute over the last $2 minutes before $1: attempts fired and acknowledged (counted as
-- the history is written: activity_minutes, migration 0008).
SELECT minute, sum(fired)::bigint AS fired, sum(acknowledged)::bigint AS acknowledged
FROM activity_minutes
WHERE minute > $1::timestamptz - make_interval(mins => $2) AND minute <= $1
GROUP BY 1 ORDER BY 1;

-- name: seen_before
-- schedule.create in bulk, one tenant's run: which of its command ids and idempotency keys were
-- applied already, and which of its names a live schedule holds; one round trip for both.
SELECT 'command' AS kind, command_id AS first, idempotency_key AS second
FROM processed_commands
WHERE tenant = $1 AND (command_id = ANY($2::text[]) OR idempotency_key = ANY($3::text[]))
UNION ALL
SELECT 'name', s.namespace, s.name FROM schedules s
JOIN unnest($4::text[], $5::text[]) AS n(namespace, name)
  ON s.namespace = n.namespace AND s.name = n.name
WHERE s.tenant = $1 AND s.live;

-- name: insert_creates
-- schedule.create in bulk, one tenant's run: the new schedules, their occurrences and the
-- commands' results (rejections too), in one statement and one round trip instead of four
-- (the occurrences' foreign key is checked at the statement's end, when its schedules are
-- there); the tickers are woken if an occurrence was stored.
WITH s AS (
    INSERT INTO schedules (id, tenant, namespace, name, state, version, spec, shape,
                           cron_expression, ack_timeout_ms, created_at, updated_at)
    SELECT s.id, $1, s.namespace, s.name, s.state, 1, s.spec, s.shape, s.cron_expression,
           s.ack_timeout_ms, $2, $2
    FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::json[], $8::bytea[],
                $9::text[], $10::bigint[])
         AS s(id, namespace, name, state, spec, shape, cron_expression, ack_timeout_ms)
), a AS (
    INSERT INTO actions (id, schedule_id, tenant, seq, origin, client_id, type, payload, due_at,
                         fire_at, state, created_at, updated_at)
    SELECT a.id, a.schedule_id, $1, a.seq, a.origin, a.client_id, a.type, a.payload, a.due_at,
           a.due_at, 'PENDING', $2, $2
    FROM unnest($11::uuid[], $12::uuid[], $13::int[], $14::text[], $15::text[], $16::text[],
                $17::timestamptz[], $18::jsonb[])
         AS a(id, schedule_id, seq, origin, client_id, type, due_at, payload)
    RETURNING 1
), c AS (
    INSERT INTO processed_commands (tenant, command_id, idempotency_key, body_hash, result,
                                    processed_at)
    SELECT $1, c.command_id, c.idempotency_key, c.body_hash, c.result, $2
    FROM unnest($19::text[], $20::text[], $21::text[], $22::json[])
         AS c(command_id, idempotency_key, body_hash, result)
)
SELECT pg_notify('chime_due', '') WHERE EXISTS (SELECT FROM a);

-- name: prune_finished
-- Retention: finished occurrences due before $1, oldest first, at most $2, with their history.
-- Each schedule's last series occurrence stays (the series counts its occurrences and goes on
-- from it); rows another ticker is pruning are skipped. The history goes by its primary key.
WITH doomed AS (
    SELECT a.id FROM actions a
    WHERE a.state IN ('SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED') AND a.due_at < $1
      AND (a.seq IS NULL OR a.seq < (SELECT max(m.seq) FROM actions m
                                     WHERE m.schedule_id = a.schedule_id AND m.seq IS NOT NULL))
    ORDER BY a.due_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), history AS (
    DELETE FROM action_history WHERE action_id = ANY (ARRAY(SELECT id FROM doomed))
), gone AS (
    DELETE FROM actions WHERE id = ANY (ARRAY(SELECT id FROM doomed)) RETURNING 1
)
SELECT count(*) FROM gone;

-- Chime schema, version 1: schedules, their occurrences (actions), history, processed commands.

CREATE TABLE schedules (
    id              uuid PRIMARY KEY,
    tenant          text        NOT NULL,
    namespace       text        NOT NULL,
    name            text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('ACTIVE', 'PAUSED', 'COMPLETED', 'DELETED')),
    version         integer     NOT NULL DEFAULT 1,
    spec            jsonb       NOT NULL,
    cron_expression text,
    ack_timeout_ms  bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- A name is unique per tenant and namespace among schedules that are not deleted.
CREATE UNIQUE INDEX schedules_name_key ON schedules (tenant, namespace, name) WHERE state <> 'DELETED';

-- One row per occurrence. Rows are claimed, marked and acknowledged: leave room for HOT updates.
CREATE TABLE actions (
    id           uuid PRIMARY KEY,
    schedule_id  uuid        NOT NULL REFERENCES schedules (id),
    tenant       text        NOT NULL,
    seq          integer,              -- position in the trigger's series (1-based); NULL otherwise
    origin       text        NOT NULL CHECK (origin IN ('SERIES', 'EXPLICIT', 'MANUAL')),
    client_id    text,                 -- an explicit action's own id
    type         text        NOT NULL,
    payload      jsonb,                -- NULL: the schedule's action payload
    due_at       timestamptz NOT NULL,
    state        text        NOT NULL CHECK (state IN ('PENDING', 'DISPATCHED', 'RUNNING',
                     'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED', 'TIMED_OUT')),
    attempt      integer     NOT NULL DEFAULT 1,
    claimed_by   text,
    lease_until  timestamptz,
    fired_at     timestamptz,
    ack_deadline timestamptz,
    version      integer     NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (schedule_id, seq)
) WITH (fillfactor = 80);
-- The claim query reads only this partial index: its size is what is due, not what is stored.
CREATE INDEX actions_pending_due ON actions (due_at) WHERE state = 'PENDING';
CREATE INDEX actions_by_schedule ON actions (schedule_id, due_at DESC);

CREATE TABLE action_history (
    id        bigserial PRIMARY KEY,
    action_id uuid        NOT NULL,
    attempt   integer     NOT NULL,
    state     text        NOT NULL,
    at        timestamptz NOT NULL,
    message   text,
    output    jsonb
);
CREATE INDEX action_history_by_action ON action_history (action_id, id);

-- Commands applied, with the result they got: replayed for duplicates, also after restarts.
CREATE TABLE processed_commands (
    tenant          text        NOT NULL,
    command_id      text        NOT NULL,
    idempotency_key text,
    body_hash       text        NOT NULL,
    result          jsonb       NOT NULL,
    processed_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant, command_id)
);
CREATE UNIQUE INDEX processed_commands_idempotency
    ON processed_commands (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

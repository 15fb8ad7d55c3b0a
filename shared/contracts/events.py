"""Results and events: what Chime publishes, and the acks workers send back."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from shared.contracts.common import (
    NUL_REFUSED,
    PAYLOAD_LIMIT,
    SCHEMA_VERSION,
    TENANT_PATTERN,
    ContractModel,
    ErrorItem,
    JsonObject,
    UtcInstant,
    Whole,
    has_nul,
)

__all__ = [
    "ACK_STATES",
    "ActionAck",
    "ActionAckData",
    "ActionDead",
    "ActionDue",
    "ActionDueData",
    "ActionEvent",
    "ActionEventData",
    "ActionView",
    "CommandResult",
    "EventMeta",
    "ResultMeta",
    "ScheduleView",
    "action_event_body",
    "event_meta",
]

ACK_STATES = ("RUNNING", "SUCCEEDED", "FAILED")
# The highest attempt number an ack can name: attempts are stored as integer (int4); no
# occurrence gets near it (policy.retry.maxAttempts is at most 100).
LAST_ATTEMPT = 2**31 - 1

_SID = "0b7e9f3c-5a4d-4e8f-9c21-7d3b2a1f6e45"
_AID = "9d2c6a1e-3b7f-4c58-8e90-1a2b3c4d5e6f"
_AT = "2026-03-11T10:30:00Z"
_FIRED = "2026-03-11T10:30:00.004Z"
_DEADLINE = "2026-03-11T10:35:00.004Z"
_META = {"eventId": f"{_AID}:1", "timestamp": _FIRED, "tenant": "acct-12345", "schemaVersion": 1}


def _id(description: str, example: str = _SID) -> Any:
    return Field(description=description, examples=[example])


class ResultMeta(ContractModel):
    """Correlation of a result with its command."""

    command_id: str | None = Field(
        description="The command's id.", examples=["6f1c9a5e-2f43-4a55-9d0e-8f8e2f4b1a01"]
    )
    correlation_id: str | None = Field(
        description="The command's correlationId.",
        examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890"],
    )
    tenant: str | None = Field(description="The command's tenant.", examples=["acct-12345"])
    timestamp: UtcInstant = Field(
        description="When the result was made.", examples=["2026-03-10T12:00:00.012Z"]
    )
    schema_version: int = Field(
        SCHEMA_VERSION, description="Contract version.", examples=[SCHEMA_VERSION]
    )


class ActionView(ContractModel):
    """One occurrence of a schedule and its state."""

    action_id: str = _id("Occurrence id.", _AID)
    type: str = Field(description="Action type.", examples=["billing-run"])
    due_at: UtcInstant = Field(description="When it is due.", examples=[_AT])
    state: str = Field(description="Action state.", examples=["PENDING"])
    attempt: int = Field(description="Current attempt.", examples=[1])
    fired_at: UtcInstant | None = Field(
        None, description="When it was last published.", examples=[_FIRED]
    )
    updated_at: UtcInstant | None = Field(None, description="Last state change.", examples=[_FIRED])


class ScheduleView(ContractModel):
    """A schedule as results show it."""

    id: str = _id("Schedule id.")
    name: str = Field(description="Name.", examples=["TermEndDateScheduledEvent"])
    namespace: str = Field(description="Namespace.", examples=["default"])
    state: Literal["ACTIVE", "PAUSED", "COMPLETED", "DELETED"] = Field(
        description="State.", examples=["ACTIVE"]
    )
    version: int = Field(description="Version; bumps on every change.", examples=[1])
    timezone: str = Field(description="Time zone as given.", examples=["Europe/London"])
    cron_expression: str | None = Field(
        None, description="Quartz form of daily/cron triggers.", examples=["0 30 10 ? * *"]
    )
    scheduled_for: UtcInstant | None = Field(None, description="Next fire time.", examples=[_AT])
    next_fire_times: list[UtcInstant] = Field(
        description="Up to five next fire times.", examples=[[_AT, "2026-03-12T10:30:00Z"]]
    )
    created_at: UtcInstant = Field(description="Creation time.", examples=["2026-03-10T12:00:00Z"])
    updated_at: UtcInstant = Field(description="Last change.", examples=["2026-03-10T12:00:00Z"])
    spec: dict[str, Any] = Field(
        description="The schedule definition as stored (camelCase, as in schedule.create).",
        examples=[
            {
                "name": "TermEndDateScheduledEvent",
                "trigger": {"kind": "daily", "hours": 10, "minutes": 30},
            }
        ],
    )
    recent_actions: list[ActionView] | None = Field(
        None, description="Latest occurrences (schedule.get and schedule.trigger).", examples=[None]
    )


class CommandResult(ContractModel):
    """One per command on `chime.command-results`."""

    type: str = Field(
        description="Past tense of the command, or command.rejected.", examples=["schedule.created"]
    )
    meta: ResultMeta = Field(
        description="Correlation with the command.",
        examples=[
            {
                "commandId": "6f1c9a5e-2f43-4a55-9d0e-8f8e2f4b1a01",
                "correlationId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
                "tenant": "acct-12345",
                "timestamp": "2026-03-10T12:00:00.012Z",
                "schemaVersion": 1,
            }
        ],
    )
    data: ScheduleView | None = Field(
        description="The schedule, or null when rejected.", examples=[None]
    )
    errors: list[ErrorItem] = Field(
        default_factory=list,
        description="Why it was rejected.",
        examples=[
            [
                {
                    "code": "VALIDATION",
                    "message": "hours must be between 0 and 23 (got 24)",
                    "field": "data.trigger.hours",
                }
            ]
        ],
    )


class EventMeta(ContractModel):
    """Identity of a fired or state event."""

    event_id: str = Field(
        description="`<actionId>:<attempt>` on action.due: the same for every copy.",
        examples=[f"{_AID}:1"],
    )
    timestamp: UtcInstant = Field(description="When the event was made.", examples=[_FIRED])
    tenant: str = Field(description="Owner.", examples=["acct-12345"])
    schema_version: int = Field(
        SCHEMA_VERSION, description="Contract version.", examples=[SCHEMA_VERSION]
    )


class ActionDueData(ContractModel):
    action_id: str = _id("Occurrence id; acknowledge with it.", _AID)
    schedule_id: str = _id("Schedule id.")
    name: str = Field(description="Schedule name.", examples=["daily-billing-run"])
    namespace: str = Field(description="Schedule namespace.", examples=["default"])
    type: str = Field(description="Action type.", examples=["billing-run"])
    due_at: UtcInstant = Field(description="When it was due.", examples=[_AT])
    fired_at: UtcInstant = Field(description="When Chime published it.", examples=[_FIRED])
    attempt: int = Field(description="Attempt number, from 1.", examples=[1])
    ack_deadline: UtcInstant = Field(
        description="Acknowledge before this instant.", examples=[_DEADLINE]
    )
    idempotency_key: str = Field(
        description="`<scheduleId>/<dueAt>`: stable across attempts.", examples=[f"{_SID}/{_AT}"]
    )
    payload: dict[str, Any] = Field(description="The action payload.", examples=[{"run": 1}])
    labels: dict[str, str] = Field(
        description="The schedule's labels.", examples=[{"team": "billing"}]
    )
    external_ref: str | None = Field(
        None, description="The schedule's externalRef.", examples=["abc123"]
    )
    misfired: bool = Field(
        False, description="Fired later than policy.misfireGrace after dueAt.", examples=[False]
    )


class ActionDue(ContractModel):
    """Published on `chime.actions.due` when an occurrence is due."""

    type: Literal["action.due"] = Field(
        "action.due", description="Event type.", examples=["action.due"]
    )
    meta: EventMeta = Field(description="Identity.", examples=[_META])
    data: ActionDueData = Field(
        description="The occurrence.",
        examples=[
            {
                "actionId": _AID,
                "scheduleId": _SID,
                "name": "daily-billing-run",
                "namespace": "default",
                "type": "billing-run",
                "dueAt": _AT,
                "firedAt": _FIRED,
                "attempt": 1,
                "ackDeadline": _DEADLINE,
                "idempotencyKey": f"{_SID}/{_AT}",
                "payload": {},
                "labels": {},
                "externalRef": None,
            }
        ],
    )


class HistoryEntry(ContractModel):
    attempt: int = Field(description="Attempt.", examples=[1])
    state: str = Field(description="State entered.", examples=["TIMED_OUT"])
    at: UtcInstant = Field(description="When.", examples=[_DEADLINE])
    message: str | None = Field(None, description="Why, or the ack's message.", examples=[None])


class ActionDeadData(ContractModel):
    action_id: str = _id("Occurrence id.", _AID)
    schedule_id: str = _id("Schedule id.")
    name: str = Field(description="Schedule name.", examples=["daily-billing-run"])
    namespace: str = Field(description="Schedule namespace.", examples=["default"])
    type: str = Field(description="Action type.", examples=["billing-run"])
    due_at: UtcInstant = Field(description="When it was due.", examples=[_AT])
    attempts: int = Field(description="Attempts made.", examples=[3])
    reason: str = Field(description="Why it was given up.", examples=["attempt 3 timed out"])
    history: list[HistoryEntry] = Field(
        description="Every state it went through.",
        examples=[[{"attempt": 1, "state": "DISPATCHED", "at": _FIRED}]],
    )


class ActionDead(ContractModel):
    """Published on `chime.dlq` when an occurrence failed its last attempt."""

    type: Literal["action.dead"] = Field(description="Event type.", examples=["action.dead"])
    meta: EventMeta = Field(
        description="Identity.", examples=[{**_META, "eventId": f"{_AID}:dead"}]
    )
    data: ActionDeadData = Field(
        description="The occurrence and its history.",
        examples=[
            {
                "actionId": _AID,
                "scheduleId": _SID,
                "name": "daily-billing-run",
                "namespace": "default",
                "type": "billing-run",
                "dueAt": _AT,
                "attempts": 3,
                "reason": "attempt 3 failed",
                "history": [],
            }
        ],
    )


class AckMeta(ContractModel):
    tenant: str = Field(
        min_length=1,
        max_length=200,
        pattern=TENANT_PATTERN,
        description="Owner of the action.",
        examples=["acct-12345"],
    )
    timestamp: UtcInstant | None = Field(
        None, description="When the worker sent it.", examples=[_FIRED]
    )
    schema_version: Whole = Field(
        SCHEMA_VERSION,
        ge=1,
        le=SCHEMA_VERSION,
        description="Contract version.",
        examples=[SCHEMA_VERSION],
    )


# An ack's output is held to PAYLOAD_LIMIT as written again: the action events carry it, and a
# 1 MiB ack could make a 4.5 MB one (`1e15` written 1000000000000000.0), which the broker
# refuses: the acker's batch would be answered again, refused again, for ever.


class ActionAckData(ContractModel):
    action_id: str = Field(
        min_length=1, max_length=200, description="From action.due.", examples=[_AID]
    )
    attempt: Whole = Field(ge=1, le=LAST_ATTEMPT, description="From action.due.", examples=[1])
    state: Literal["RUNNING", "SUCCEEDED", "FAILED"] = Field(
        description="New state.", examples=["SUCCEEDED"]
    )
    message: str | None = Field(
        None, max_length=10_000, description="Free text.", examples=["42 invoices"]
    )
    output: JsonObject = Field(
        default_factory=dict,
        description=f"Worker output, at most {PAYLOAD_LIMIT} bytes (256 KiB) of JSON as Chime "
        "writes it (numbers in full): the events about the ack carry it.",
        examples=[{"invoices": 42}],
    )

    @field_validator("message", "output")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if value is not None and has_nul(value):
            raise ValueError(NUL_REFUSED)
        return value

    @field_validator("output")
    @classmethod
    def _carried(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value and (size := len(orjson.dumps(value))) > PAYLOAD_LIMIT:
            raise ValueError(
                f"is {size} bytes as JSON written out (numbers in full); at most {PAYLOAD_LIMIT} "
                "(256 KiB): store large results elsewhere and pass a reference"
            )
        return value


class ActionAck(ContractModel):
    """Published by workers on `chime.actions.acks`, keyed by schedule id."""

    type: Literal["action.ack"] = Field(description="Message type.", examples=["action.ack"])
    meta: AckMeta = Field(description="Sender.", examples=[{"tenant": "acct-12345"}])
    data: ActionAckData = Field(
        description="The acknowledgement.",
        examples=[{"actionId": _AID, "attempt": 1, "state": "SUCCEEDED"}],
    )


class ActionEventData(ContractModel):
    action_id: str = _id("Occurrence id.", _AID)
    schedule_id: str | None = Field(
        None, description="Schedule id (null for unknown actions).", examples=[_SID]
    )
    attempt: int = Field(description="Attempt the event is about.", examples=[1])
    state: str | None = Field(None, description="State after the event.", examples=["SUCCEEDED"])
    previous_state: str | None = Field(None, description="State before it.", examples=["RUNNING"])
    reason: str | None = Field(
        None,
        description="Why an ack was ignored or an occurrence skipped, or the ack's message.",
        examples=["DUPLICATE: already SUCCEEDED"],
    )
    output: dict[str, Any] = Field(
        default_factory=dict, description="Worker output.", examples=[{}]
    )


class ActionEvent(ContractModel):
    """Published on `chime.actions.events`: a state change, or an ack that changed nothing."""

    type: Literal["action.state-changed", "action.ack-ignored"] = Field(
        description="Event type.", examples=["action.state-changed"]
    )
    meta: EventMeta = Field(
        description="Identity.", examples=[{**_META, "eventId": f"{_AID}:1:SUCCEEDED"}]
    )
    data: ActionEventData = Field(
        description="What happened.",
        examples=[
            {
                "actionId": _AID,
                "scheduleId": _SID,
                "attempt": 1,
                "state": "SUCCEEDED",
                "previousState": "RUNNING",
            }
        ],
    )


def event_meta(event_id: str, timestamp: str, tenant: str) -> dict[str, Any]:
    """`meta` of every event Chime publishes (wire JSON)."""
    return {
        "eventId": event_id,
        "timestamp": timestamp,
        "tenant": tenant,
        "schemaVersion": SCHEMA_VERSION,
    }


def action_event_body(
    kind: str, tenant: str, action_id: str, attempt: int, now: str, suffix: str, **data: Any
) -> dict[str, Any]:
    """An `ActionEvent` as wire JSON (built directly: this is on the hot path)."""
    return {
        "type": kind,
        "meta": event_meta(f"{action_id}:{attempt}:{suffix}", now, tenant),
        "data": {"actionId": action_id, "attempt": attempt, **data},
    }

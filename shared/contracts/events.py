"""Results and events: what Chime publishes, and the acks workers send back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.contracts.common import SCHEMA_VERSION, ContractModel, ErrorItem, UtcInstant

__all__ = [
    "ACK_STATES",
    "ActionAck",
    "ActionAckData",
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
]

ACK_STATES = ("RUNNING", "SUCCEEDED", "FAILED")


class ResultMeta(ContractModel):
    """Correlation of a result with its command."""

    command_id: str | None = Field(description="The command's id.", examples=["6f1c…"])
    correlation_id: str | None = Field(
        description="The command's correlationId.", examples=["a1b2…"]
    )
    tenant: str | None = Field(description="The command's tenant.", examples=["acct-12345"])
    timestamp: UtcInstant = Field(description="When the result was made.")
    schema_version: int = Field(SCHEMA_VERSION, description="Contract version.")


class ActionView(ContractModel):
    """One occurrence of a schedule and its state."""

    action_id: str = Field(description="Occurrence id.")
    type: str = Field(description="Action type.", examples=["billing-run"])
    due_at: UtcInstant = Field(description="When it is due.")
    state: str = Field(description="Action state.", examples=["PENDING"])
    attempt: int = Field(description="Current attempt.", examples=[1])
    fired_at: UtcInstant | None = Field(None, description="When it was last published.")
    updated_at: UtcInstant | None = Field(None, description="Last state change.")


class ScheduleView(ContractModel):
    """A schedule as results show it."""

    id: str = Field(description="Schedule id.")
    name: str = Field(description="Name.")
    namespace: str = Field(description="Namespace.")
    state: Literal["ACTIVE", "PAUSED", "COMPLETED", "DELETED"] = Field(description="State.")
    version: int = Field(description="Version; bumps on every change.", examples=[1])
    timezone: str = Field(description="Time zone as given.", examples=["Europe/London"])
    cron_expression: str | None = Field(
        None, description="Quartz form of daily/cron triggers.", examples=["0 30 10 ? * *"]
    )
    scheduled_for: UtcInstant | None = Field(None, description="Next fire time.")
    next_fire_times: list[UtcInstant] = Field(description="Up to five next fire times.")
    created_at: UtcInstant = Field(description="Creation time.")
    updated_at: UtcInstant = Field(description="Last change.")
    spec: dict[str, Any] = Field(description="The schedule definition as stored (camelCase).")
    recent_actions: list[ActionView] | None = Field(
        None, description="Latest occurrences (schedule.get only)."
    )


class CommandResult(ContractModel):
    """One per command on `chime.command-results`."""

    type: str = Field(
        description="Past tense of the command, or command.rejected.", examples=["schedule.created"]
    )
    meta: ResultMeta = Field(description="Correlation.")
    data: ScheduleView | None = Field(description="The schedule, or null when rejected.")
    errors: list[ErrorItem] = Field(default_factory=list, description="Why it was rejected.")


class EventMeta(ContractModel):
    """Identity of a fired or state event."""

    event_id: str = Field(description="`<actionId>:<attempt>`: same for every copy.")
    timestamp: UtcInstant = Field(description="When the event was made.")
    tenant: str = Field(description="Owner.")
    schema_version: int = Field(SCHEMA_VERSION, description="Contract version.")


class ActionDueData(ContractModel):
    action_id: str = Field(description="Occurrence id; acknowledge with it.")
    schedule_id: str = Field(description="Schedule id.")
    name: str = Field(description="Schedule name.")
    namespace: str = Field(description="Schedule namespace.")
    type: str = Field(description="Action type.", examples=["billing-run"])
    due_at: UtcInstant = Field(description="When it was due.")
    fired_at: UtcInstant = Field(description="When Chime published it.")
    attempt: int = Field(description="Attempt number, from 1.")
    ack_deadline: UtcInstant = Field(description="Acknowledge before this instant.")
    idempotency_key: str = Field(description="`<scheduleId>/<dueAt>`: stable across attempts.")
    payload: dict[str, Any] = Field(description="The schedule's action payload.")
    labels: dict[str, str] = Field(description="The schedule's labels.")
    external_ref: str | None = Field(None, description="The schedule's externalRef.")


class ActionDue(ContractModel):
    """Published on `chime.actions.due` when an occurrence is due."""

    type: Literal["action.due"] = Field("action.due", description="Event type.")
    meta: EventMeta = Field(description="Identity.")
    data: ActionDueData = Field(description="The occurrence.")


class AckMeta(ContractModel):
    tenant: str = Field(min_length=1, max_length=200, description="Owner of the action.")
    timestamp: UtcInstant | None = Field(None, description="When the worker sent it.")
    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION, description="Version.")


class ActionAckData(ContractModel):
    action_id: str = Field(min_length=1, max_length=200, description="From action.due.")
    attempt: int = Field(ge=1, description="From action.due.")
    state: Literal["RUNNING", "SUCCEEDED", "FAILED"] = Field(description="New state.")
    message: str | None = Field(None, max_length=10_000, description="Free text.")
    output: dict[str, Any] = Field(default_factory=dict, description="Worker output.")


class ActionAck(ContractModel):
    """Published by workers on `chime.actions.acks`."""

    type: Literal["action.ack"] = Field(description="Message type.")
    meta: AckMeta = Field(description="Sender.")
    data: ActionAckData = Field(description="The acknowledgement.")


class ActionEventData(ContractModel):
    action_id: str = Field(description="Occurrence id.")
    schedule_id: str | None = Field(None, description="Schedule id (null for unknown actions).")
    attempt: int = Field(description="Attempt the event is about.")
    state: str | None = Field(None, description="State after the event.")
    previous_state: str | None = Field(None, description="State before it.")
    reason: str | None = Field(None, description="Why an ack was ignored, or a message.")
    output: dict[str, Any] = Field(default_factory=dict, description="Worker output.")


class ActionEvent(ContractModel):
    """Published on `chime.actions.events`: a state change, or an ack that changed nothing."""

    type: Literal["action.state-changed", "action.ack-ignored"] = Field(description="Event type.")
    meta: EventMeta = Field(description="Identity.")
    data: ActionEventData = Field(description="What happened.")


def action_event_body(
    kind: str, tenant: str, action_id: str, attempt: int, now: str, suffix: str, **data: Any
) -> dict[str, Any]:
    """An `ActionEvent` as wire JSON (built directly: this is on the hot path)."""
    return {
        "type": kind,
        "meta": {
            "eventId": f"{action_id}:{attempt}:{suffix}",
            "timestamp": now,
            "tenant": tenant,
            "schemaVersion": SCHEMA_VERSION,
        },
        "data": {"actionId": action_id, "attempt": attempt, **data},
    }

"""Commands on `chime.commands`: the envelope and each command's `data`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from shared.contracts.common import (
    SCHEMA_VERSION,
    STORED,
    TENANT_PATTERN,
    ContractModel,
    JsonObject,
    Number,
    Positive,
    UtcInstant,
    Whole,
    from_storage,
    reused,
)
from shared.contracts.triggers import Trigger

__all__ = [
    "COMMAND_TYPES",
    "ActionSpec",
    "CommandEnvelope",
    "CommandMeta",
    "ExplicitAction",
    "Policy",
    "ReplaceData",
    "ResumeData",
    "RetryPolicy",
    "ScheduleRef",
    "ScheduleSpec",
    "TriggerData",
    "UpdateData",
]

NAME_PATTERN = r"^[A-Za-z][\w\-]*$"
ACTION_TYPE_PATTERN = r"^[A-Za-z0-9][\w.\-]*$"


# The longest a policy's duration may be: an ack deadline, a backoff or a catch-up window is
# an instant plus or minus one, and must stay one that PostgreSQL and Python can hold.
LONGEST_POLICY_DURATION = timedelta(days=3650)


def _duration(value: str, info: ValidationInfo) -> str:
    from shared.schedule.durations import parse_duration

    longest = parse_duration(value, "value")
    if longest > LONGEST_POLICY_DURATION and not from_storage(info):
        raise ValueError(f"value {value!r} is longer than ten years (P3650D)")
    return value


Duration = Annotated[str, AfterValidator(_duration)]


MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
LABEL_KEY = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._/\-]{{0,{MAX_LABEL_KEY - 1}}}")


class CommandMeta(ContractModel):
    """Who sent a command and how to correlate its result."""

    command_id: str = Field(
        min_length=1,
        max_length=200,
        description="Unique id of this command; deduplicates.",
        examples=["6f1c9a5e-2f43-4a55-9d0e-8f8e2f4b1a01"],
    )
    correlation_id: str = Field(
        min_length=1,
        max_length=200,
        description="Echoed on the result.",
        examples=["a1b2c3d4-e5f6-7890-abcd-ef1234567890"],
    )
    tenant: str = Field(
        min_length=1,
        max_length=200,
        pattern=TENANT_PATTERN,
        description="Owner of the schedule.",
        examples=["acct-12345"],
    )
    timestamp: UtcInstant | None = Field(
        None, description="When the command was sent.", examples=["2026-03-10T12:00:00Z"]
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Same key within a tenant returns the original result.",
        examples=["create-term-end-2026"],
    )
    schema_version: Whole = Field(
        SCHEMA_VERSION,
        ge=1,
        le=SCHEMA_VERSION,
        description="Contract version the sender speaks.",
        examples=[SCHEMA_VERSION],
    )


class RetryPolicy(ContractModel):
    """Retries of FAILED and TIMED_OUT attempts."""

    max_attempts: Whole = Field(3, ge=1, le=100, description="Attempts in all.", examples=[3])
    initial_backoff: Duration = Field("PT10S", description="First wait.", examples=["PT10S"])
    multiplier: Number = Field(2.0, ge=1.0, le=100.0, description="Backoff growth.", examples=[2.0])
    max_backoff: Duration = Field("PT10M", description="Longest wait.", examples=["PT10M"])


class Policy(ContractModel):
    """How occurrences behave around failures and downtime."""

    misfire: Literal["FIRE_ONCE", "FIRE_ALL", "SKIP"] = Field(
        "FIRE_ONCE",
        description="What to do with runs missed during downtime.",
        examples=["FIRE_ONCE"],
    )
    catchup_window: Duration = Field(
        "P1D",
        description="FIRE_ALL catches up missed occurrences at most this far back; older ones "
        "are SKIPPED.",
        examples=["PT6H"],
    )
    misfire_grace: Duration = Field(
        "PT1M",
        description="Lateness after which an occurrence counts as misfired.",
        examples=["PT1M"],
    )
    overlap: Literal["ALLOW", "SKIP", "BUFFER_ONE"] = Field(
        "ALLOW",
        description="Fire while an earlier occurrence has not ended (in flight, or waiting for "
        "its retry)? SKIP: no; BUFFER_ONE: hold one until it ends, skip the others.",
        examples=["ALLOW"],
    )
    retry: RetryPolicy = Field(
        RetryPolicy(),
        description="Retry policy.",
        examples=[
            {"maxAttempts": 3, "initialBackoff": "PT10S", "multiplier": 2.0, "maxBackoff": "PT10M"}
        ],
    )
    ack_timeout: Duration = Field(
        "PT5M",
        description="An attempt not acknowledged in this time times out.",
        examples=["PT5M"],
    )
    dst: Literal["AUTO", "ONCE_EARLIER", "ONCE_LATER", "REAL_TIME"] = Field(
        "AUTO",
        description="Wall-clock times in DST changes. AUTO: a skipped time fires once after the "
        "gap, a repeated time once at its first occurrence, unless the hour field matches every "
        "hour (then real time). ONCE_EARLIER / ONCE_LATER: always once, at the first / second "
        "occurrence. REAL_TIME: skipped times never fire, repeated times fire twice.",
        examples=["AUTO"],
    )


class ActionSpec(ContractModel):
    """What each fired occurrence asks a worker to do."""

    type: str = Field(
        min_length=1,
        max_length=200,
        pattern=ACTION_TYPE_PATTERN,
        description="Action type, e.g. billing-run, tax-run, payment-run, import, START, STOP.",
        examples=["billing-run"],
    )
    payload: JsonObject = Field(
        default_factory=dict, description="Opaque JSON handed to the worker.", examples=[{}]
    )
    topic: str | None = Field(
        None,
        max_length=249,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Publish this schedule's action.due here instead of chime.actions.due; "
        "must be in the CHIME_ACTION_TOPICS allow-list.",
        examples=[None],
    )


class ExplicitAction(ContractModel):
    """A one-shot action at its own instant (seed 000's scheduledActions)."""

    id: str | None = Field(
        None,
        max_length=200,
        description="Client id of this action.",
        examples=["f6a7b8c9-d0e1-2345-f012-3456789abcde"],
    )
    type: str = Field(
        min_length=1,
        max_length=200,
        pattern=ACTION_TYPE_PATTERN,
        description="Action type.",
        examples=["START"],
    )
    at: UtcInstant = Field(description="When to fire.", examples=["2026-03-15T08:00:00Z"])
    description: str | None = Field(
        None, max_length=1000, description="Free text.", examples=["Scheduled start"]
    )
    payload: JsonObject | None = Field(
        None, description="Payload; default: the schedule action's payload.", examples=[None]
    )


_POLICIES: dict[tuple[bool, bytes], Policy] = {}  # ScheduleSpec's, by JSON text (`reused`)


class ScheduleSpec(ContractModel):
    """`data` of schedule.create: everything a schedule is."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        description="Unique per tenant and namespace; no spaces.",
        examples=["TermEndDateScheduledEvent"],
    )
    namespace: str = Field(
        "default",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][\w.\-]*$",
        description="Grouping of names.",
        examples=["default"],
    )
    display_name: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Human name.",
        examples=["Term End Date Scheduled Event"],
    )
    description: str | None = Field(
        None, max_length=1000, description="Free text.", examples=["Daily at 10:30"]
    )
    external_ref: str | None = Field(
        None, max_length=2048, description="Your system's reference.", examples=["abc123"]
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description=f"Key/value labels copied to fired events: at most {MAX_LABELS}, keys "
        f"1-{MAX_LABEL_KEY} characters (letters, digits, . _ / -), values at most "
        f"{MAX_LABEL_VALUE}.",
        examples=[{"team": "billing"}],
    )
    trigger: Trigger | None = Field(
        None,
        description="When the series fires; optional when `actions` is given.",
        examples=[
            {"kind": "daily", "hours": 10, "minutes": 30},
            {"kind": "cron", "expression": "30 0 * * *"},
        ],
    )
    actions: list[ExplicitAction] = Field(
        default_factory=list,
        max_length=1000,
        description="One-shot actions at their own instants (beside or instead of a trigger).",
        examples=[
            [
                {"type": "START", "at": "2026-03-15T08:00:00Z"},
                {"type": "STOP", "at": "2026-03-15T20:00:00Z"},
            ]
        ],
    )
    timezone: str = Field(
        "UTC",
        min_length=1,
        max_length=64,
        description="IANA zone or Java short id (CST) for wall-clock triggers.",
        examples=["Europe/London"],
    )
    starts_at: UtcInstant | None = Field(
        None, description="Nothing fires before this instant.", examples=[None]
    )
    ends_at: UtcInstant | None = Field(
        None, description="Nothing fires after this instant.", examples=[None]
    )
    max_occurrences: Positive | None = Field(
        None, description="The series ends after this many occurrences.", examples=[None]
    )
    enabled: bool = Field(
        True,
        description="false stores the schedule PAUSED (seed 001's `active` is accepted too).",
        examples=[True],
    )
    action: ActionSpec = Field(
        description="What the series fires.", examples=[{"type": "billing-run", "payload": {}}]
    )
    condition: str | None = Field(
        None,
        max_length=65535,
        description="JEXL, evaluated at fire time against the parameters (by name and as "
        "`parameters`), `payload`, `dueAt` and `attempt`; false or an error -> SKIPPED.",
        examples=[None],
    )
    parameters: JsonObject = Field(
        default_factory=dict, description="Parameters of the condition.", examples=[{}]
    )
    # One default instance, shared (models are frozen): `default_factory=Policy` built and
    # validated a Policy and its RetryPolicy for every definition without one, 1.9 of 7.5 us
    # of a benchmark create's validation (bench/README.md, profile notes).
    policy: Policy = Field(
        Policy(),
        description="Delivery policy.",
        examples=[{"misfire": "FIRE_ONCE", "ackTimeout": "PT5M", "dst": "AUTO"}],
    )

    @model_validator(mode="before")
    @classmethod
    def _active_is_enabled(cls, data: Any) -> Any:
        # Seed 001 calls it `active`; Chime stores `enabled`.
        if isinstance(data, dict) and "active" in data:
            data = dict(data)
            active = data.pop("active")
            if "enabled" in data and data["enabled"] != active:
                raise ValueError("active and enabled disagree: give one of them")
            data["enabled"] = active
        return data

    @field_validator("policy", mode="wrap")
    @classmethod
    def _policy_once(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Policy:
        return reused(_POLICIES, value, handler, info)  # type: ignore[no-any-return]

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if from_storage(info):  # checked when stored
            return value
        for key, text in value.items():
            if not LABEL_KEY.fullmatch(key):
                raise ValueError(
                    f"key {key[:80]!r} must be 1-{MAX_LABEL_KEY} letters, digits, . _ / -"
                )
            if len(text) > MAX_LABEL_VALUE:
                raise ValueError(f"value of {key!r} exceeds {MAX_LABEL_VALUE} characters")
        return value

    @field_validator("condition")
    @classmethod
    def _jexl(cls, value: str | None) -> str | None:
        if value is not None:
            from shared.conditions import ConditionError, check_condition

            try:
                check_condition(value)
            except ConditionError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> ScheduleSpec:
        # Checked when stored: the ticker and the acker read a stored definition without its
        # explicit actions (`shared.specs`), which each occurrence's row carries.
        if self.trigger is None and not self.actions and not from_storage(info):
            raise ValueError("give a trigger, an actions list, or both")
        if self.starts_at and self.ends_at and self.ends_at < self.starts_at:
            raise ValueError("endsAt must not be before startsAt")
        return self

    @classmethod
    def stored(cls, value: dict[str, Any]) -> ScheduleSpec:
        """A definition as read back from the database (`shared.contracts.common.STORED`)."""
        return cls.model_validate(value, context=STORED)


class ScheduleRef(ContractModel):
    """`data` of commands that address one schedule: by id, or by namespace + name."""

    id: str | None = Field(None, max_length=200, description="Schedule id.", examples=[None])
    namespace: str = Field(
        "default", max_length=200, description="Namespace of `name`.", examples=["default"]
    )
    name: str | None = Field(
        None, max_length=200, description="Schedule name.", examples=["nightly-billing"]
    )
    expected_version: Positive | None = Field(
        None,
        description="Reject with CONFLICT unless the schedule has this version.",
        examples=[None],
    )

    @model_validator(mode="after")
    def _addressed(self) -> ScheduleRef:
        if self.id is None and self.name is None:
            raise ValueError("give the schedule's id, or its namespace and name")
        return self


class ReplaceData(ScheduleSpec):
    """`data` of schedule.replace: a whole schedule; overwrites the one with this id (or
    namespace + name), or creates it when absent."""

    id: str | None = Field(
        None, max_length=200, description="Schedule id to replace.", examples=[None]
    )
    expected_version: Positive | None = Field(
        None,
        description="Reject with CONFLICT unless the schedule has this version.",
        examples=[3],
    )


class UpdateData(ScheduleRef):
    """`data` of schedule.update: a JSON merge patch over the stored schedule."""

    changes: JsonObject = Field(
        min_length=1,
        description="Fields to change (camelCase, as in schedule.create), as a JSON merge "
        "patch: objects such as policy merge, null resets a field to its default; a trigger "
        "given here replaces the whole trigger.",
        examples=[{"trigger": {"kind": "daily", "hours": 11, "minutes": 0}}],
    )


class ResumeData(ScheduleRef):
    """`data` of schedule.resume."""

    resume_from: Literal["NOW", "PAUSED_AT"] = Field(
        "NOW",
        description="NOW: what was due while paused is skipped. PAUSED_AT: it is caught up "
        "according to policy.misfire.",
        examples=["NOW"],
    )


class TriggerData(ScheduleRef):
    """`data` of schedule.trigger: fire now, outside the series."""

    reason: str | None = Field(
        None,
        max_length=1000,
        description="Recorded in the action's history.",
        examples=["manual re-run after incident 42"],
    )
    payload: JsonObject | None = Field(
        None, description="Payload for this firing; default: the schedule's.", examples=[None]
    )


COMMAND_TYPES = (
    "schedule.create",
    "schedule.replace",
    "schedule.update",
    "schedule.pause",
    "schedule.resume",
    "schedule.delete",
    "schedule.trigger",
    "schedule.get",
)


class CommandEnvelope(ContractModel):
    """Every command: `type`, `meta`, and a `data` object checked per type."""

    type: str = Field(
        max_length=200,
        description=f"Command type: one of {', '.join(COMMAND_TYPES)}.",
        examples=["schedule.create"],
    )
    meta: CommandMeta = Field(
        description="Sender and correlation.",
        examples=[
            {
                "commandId": "6f1c9a5e-2f43-4a55-9d0e-8f8e2f4b1a01",
                "correlationId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
                "tenant": "acct-12345",
            }
        ],
    )
    data: JsonObject = Field(
        description="The command's body; its shape depends on `type` (see the *.data schemas).",
        examples=[
            {
                "name": "nightly-billing",
                "trigger": {"kind": "daily", "hours": 1},
                "action": {"type": "billing-run"},
            }
        ],
    )

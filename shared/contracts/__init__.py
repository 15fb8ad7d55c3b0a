"""Message contracts (pydantic v2): the public surface on Kafka."""

from shared.contracts.commands import (
    COMMAND_TYPES,
    ActionSpec,
    CommandEnvelope,
    CommandMeta,
    ExplicitAction,
    Policy,
    ReplaceData,
    ResumeData,
    ScheduleRef,
    ScheduleSpec,
    TriggerData,
    UpdateData,
)
from shared.contracts.common import SCHEMA_VERSION, ErrorItem, format_instant
from shared.contracts.errors import errors_from_validation
from shared.contracts.events import (
    ActionAck,
    ActionDead,
    ActionDue,
    ActionEvent,
    ActionView,
    CommandResult,
    ResultMeta,
    ScheduleView,
)
from shared.contracts.triggers import TRIGGER_KINDS, Trigger

__all__ = [
    "COMMAND_TYPES",
    "SCHEMA_VERSION",
    "TRIGGER_KINDS",
    "ActionAck",
    "ActionDead",
    "ActionDue",
    "ActionEvent",
    "ActionSpec",
    "ActionView",
    "CommandEnvelope",
    "CommandMeta",
    "CommandResult",
    "ErrorItem",
    "ExplicitAction",
    "Policy",
    "ReplaceData",
    "ResultMeta",
    "ResumeData",
    "ScheduleRef",
    "ScheduleSpec",
    "ScheduleView",
    "Trigger",
    "TriggerData",
    "UpdateData",
    "errors_from_validation",
    "format_instant",
]

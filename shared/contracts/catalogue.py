"""Every message on Chime's topics, by the name its JSON Schema is published under."""

from __future__ import annotations

from pydantic import BaseModel

from shared.contracts.commands import (
    CommandEnvelope,
    ReplaceData,
    ResumeData,
    ScheduleRef,
    ScheduleSpec,
    TriggerData,
    UpdateData,
)
from shared.contracts.events import ActionAck, ActionDead, ActionDue, ActionEvent, CommandResult

__all__ = ["COMMAND_DATA", "MESSAGES"]

# `data` of each command type
COMMAND_DATA: dict[str, type[BaseModel]] = {
    "schedule.create": ScheduleSpec,
    "schedule.replace": ReplaceData,
    "schedule.update": UpdateData,
    "schedule.pause": ScheduleRef,
    "schedule.resume": ResumeData,
    "schedule.delete": ScheduleRef,
    "schedule.trigger": TriggerData,
    "schedule.get": ScheduleRef,
}

MESSAGES: dict[str, type[BaseModel]] = {
    "command": CommandEnvelope,
    **{f"{kind}.data": model for kind, model in COMMAND_DATA.items()},
    "command-result": CommandResult,
    "action.due": ActionDue,
    "action.ack": ActionAck,
    "action.event": ActionEvent,
    "action.dead": ActionDead,
}

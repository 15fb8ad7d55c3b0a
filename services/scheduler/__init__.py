"""The scheduler service: consumes `chime.commands`, owns schedules, answers every command."""

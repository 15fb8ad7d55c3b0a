"""Chime's services: one FastStream app per folder, plus the `chime` CLI."""

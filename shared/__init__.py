"""Chime's shared core: contracts, schedule math, persistence and settings."""

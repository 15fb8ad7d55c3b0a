"""The acker service: applies acks from `chime.actions.acks` and announces state changes."""

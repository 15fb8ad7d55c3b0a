"""The ticker service: fires due occurrences on `chime.actions.due` and advances series."""

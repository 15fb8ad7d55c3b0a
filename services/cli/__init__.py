"""The `chime` command line."""

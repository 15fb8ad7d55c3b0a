"""The operators' dashboard: a read-only page and its JSON API, served by the ticker's HTTP
server at /dashboard and /api/dashboard."""

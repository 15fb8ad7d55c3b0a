"""Configuration: one pydantic-settings class, env prefix `CHIME_`, built once per process."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "Topics"]


class Topics:
    """Topic names under the configured prefix."""

    def __init__(self, prefix: str) -> None:
        self.commands = f"{prefix}commands"
        self.command_results = f"{prefix}command-results"
        self.actions_due = f"{prefix}actions.due"
        self.actions_acks = f"{prefix}actions.acks"
        self.actions_events = f"{prefix}actions.events"
        self.dlq = f"{prefix}dlq"

    def all(self) -> list[str]:
        return [
            self.commands,
            self.command_results,
            self.actions_due,
            self.actions_acks,
            self.actions_events,
            self.dlq,
        ]


class Settings(BaseSettings):
    """Every knob of a Chime process. Unset servers mean the embedded default ports."""

    model_config = SettingsConfigDict(env_prefix="CHIME_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/chime",
        description="PostgreSQL URL used by the services.",
    )
    topic_prefix: str = Field("chime.", description="Prefix of every Chime topic.")
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of each topic when Chime creates it."
    )
    http_host: str = Field("127.0.0.1", description="Address of the health/metrics server.")
    http_port: int = Field(0, ge=0, le=65535, description="Port of the health server; 0 = any.")
    kafka_session_timeout_ms: int = Field(
        10_000, description="Consumer group session timeout (Kafka needs >= 6000)."
    )
    kafka_heartbeat_interval_ms: int = Field(3_000, description="Consumer heartbeat interval.")
    consumer_batch_size: int = Field(
        500, ge=1, description="Most messages a batch subscriber takes at once."
    )
    consumer_batch_timeout_ms: int = Field(
        20, ge=0, description="How long a batch subscriber waits to fill a batch."
    )
    database_pool_size: int = Field(4, ge=1, description="Connections per service process.")
    ticker_batch_size: int = Field(1000, ge=1, description="Occurrences claimed per round.")
    ticker_lease_seconds: float = Field(
        30.0, gt=0, description="How long a claim is held before another ticker may take it."
    )
    ticker_max_idle_seconds: float = Field(
        5.0, gt=0, description="Longest sleep between polls when nothing is due or notified."
    )
    ticker_id: str | None = Field(None, description="Claimer name; default host:pid.")
    log_level: str = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector, e.g. http://otel-collector:4318; tracing is off "
        "when unset.",
    )
    action_topics: str = Field(
        "",
        description="Comma-separated topics a schedule's action.topic may name (allow-list).",
    )

    @property
    def action_topic_allow_list(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.action_topics.split(",") if t.strip())

    def to_env(self) -> dict[str, str]:
        """These settings as CHIME_* variables, for a child process."""
        return {
            f"CHIME_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def consumer_group(self, service: str) -> str:
        """`chime.scheduler` by default: deployments with their own prefix get their own groups."""
        return f"{self.topic_prefix}{service}"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

"""Configuration: one pydantic-settings class, env prefix `CHIME_`, built once per process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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

    # allow_inf_nan: a time of `inf` passed `gt=0` and failed the service at start (OverflowError)
    model_config = SettingsConfigDict(
        env_prefix="CHIME_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/chime",
        description="PostgreSQL URL used by the services. TLS: add "
        "`?sslmode=verify-full&sslrootcert=/path/ca.pem`; keep a password out of the "
        "environment with CHIME_DATABASE_URL_FILE.",
    )
    topic_prefix: str = Field(
        "chime.",
        pattern=r"^[A-Za-z0-9._\-]{0,200}$",
        description="Prefix of every Chime topic: letters, digits, '.', '_' and '-' (as Kafka "
        "topic names), at most 200.",
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of each topic when Chime creates it."
    )
    http_host: str = Field("127.0.0.1", description="Address of the health/metrics server.")
    http_port: int = Field(0, ge=0, le=65535, description="Port of the health server; 0 = any.")
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1,
        le=3_600_000,
        description="Consumer group session timeout (Kafka needs >= 6000).",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000, ge=1, description="Consumer heartbeat interval; less than the session timeout."
    )
    kafka_read_again_ms: int = Field(
        500,
        ge=0,
        le=60_000,
        description="How long a consumer keeps reading a partition again from the offset it "
        "expected when the partition's offsets jump from there, before it takes the jump as "
        "offsets holding nothing to read. The embedded broker can step a fetch over a batch it "
        "has not stored yet (read again, it comes); on Kafka only transaction markers and "
        "compacted records make offsets jump, and each then holds the consumer this long: "
        "lower it where transactional producers write Chime's topics.",
    )
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Compression of the record batches Chime publishes: none, gzip, snappy, "
        "lz4 or zstd. Consumers of Chime's topics need the codec (every Kafka client has "
        "them; aiokafka with `aiokafka[zstd]` and the like). Chime reads every codec. Prefer zstd "
        "or snappy: aiokafka compresses lz4 at its slowest level.",
    )
    consumer_batch_size: int = Field(
        2000,
        ge=1,
        description="Most messages a batch subscriber takes at once (a tenant's creates and "
        "acks in a batch are applied with a few multi-row statements each).",
    )
    consumer_batch_timeout_ms: int = Field(
        20, ge=0, description="How long a batch subscriber waits to fill a batch."
    )
    consumer_run_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1,
        description="A batch is applied in runs of messages of at most this many bytes (a "
        "message larger than that is a run of its own), each in its own transaction: "
        "what a service parses and holds at once is bounded by size, not only by count.",
    )
    database_pool_size: int = Field(
        4,
        ge=1,
        description="Connections per service process. The scheduler applies the runs of creates "
        "of up to this many tenants minus one at once, and the acker a batch's acks in up to "
        "this many minus one parts (by occurrence), each on a connection of its own.",
    )
    ticker_batch_size: int = Field(2000, ge=1, description="Occurrences claimed per round.")
    ticker_lease_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="How long a ticker that stopped answering holds its claims before "
        "PostgreSQL ends its session and another ticker takes them (a ticker that dies "
        "frees them at once).",
    )
    ticker_lookahead_ms: int = Field(
        50,
        ge=0,
        le=5_000,
        description="How far ahead of their due instant occurrences are claimed; each is "
        "still published no earlier than its instant (0: claim only what is due).",
    )
    ticker_max_idle_seconds: float = Field(
        5.0,
        gt=0,
        le=3_600,
        description="Longest sleep between polls when nothing is due or notified.",
    )
    ticker_id: str | None = Field(
        None,
        description="The ticker's name in PostgreSQL's sessions (application_name "
        "'chime-ticker <id>'); default host:pid.",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        le=36_500,
        description="Finished occurrences (SUCCEEDED, FAILED, SKIPPED, CANCELLED) due more than "
        "this many days ago are deleted with their history by the ticker, a batch at a time; "
        "unset: kept forever (the full history).",
    )
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = Field("INFO", description="DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr.")
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector, e.g. http://otel-collector:4318; tracing is off "
        "when unset.",
    )
    action_topics: str = Field(
        "",
        description="Comma-separated topics a schedule's action.topic may name (allow-list).",
    )
    database_migration_url: str | None = Field(
        None,
        description="PostgreSQL URL of the role that owns the schema, used by `chime migrate` "
        "only; default: database_url.",
    )
    database_service_role: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Role the services log in as: `chime migrate` grants it row access (no "
        "DDL), and row-level security applies to it.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (production)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates."
    )
    kafka_ssl_certfile: str | None = Field(
        None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: str | None = Field(None, description="Client private key (PEM).")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client private key."
    )
    auth_mode: Literal["off", "jwt"] = Field(
        "off",
        description="off: trust meta.tenant (development only). jwt: every command and ack "
        "carries `authorization: Bearer <JWT>`; required in production.",
    )
    auth_hs256_secret: SecretStr | None = Field(
        None, description="Shared secret for HS256 tokens (at least 32 bytes)."
    )
    auth_jwks_file: str | None = Field(
        None, description="JWKS file with the RS256/ES256 public keys tokens are signed with."
    )
    auth_issuer: str | None = Field(None, description="Required `iss` of tokens, if set.")
    auth_audience: str | None = Field(None, description="Required `aud` of tokens, if set.")
    auth_tenant_claim: str = Field("tenant", description="Claim that names the token's tenant.")
    auth_leeway_seconds: float = Field(
        30.0, ge=0, le=3_600, description="Clock skew tolerated on exp/nbf/iat."
    )
    auth_token: SecretStr | None = Field(
        None, description="Token the CLI (`chime publish`, `chime ack`) sends, when set."
    )
    max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest command or ack accepted; a larger one is dead-lettered unread.",
    )

    @field_validator("kafka_heartbeat_interval_ms")
    @classmethod
    def _beats_within_a_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("kafka_session_timeout_ms")
        if session is not None and value >= session:
            raise ValueError(
                f"must be less than CHIME_KAFKA_SESSION_TIMEOUT_MS ({session}): a consumer "
                "beats several times a session, or its group drops it"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FromFiles(settings_cls))

    @property
    def action_topic_allow_list(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.action_topics.split(",") if t.strip())

    def to_env(self) -> dict[str, str]:
        """These settings as CHIME_* variables, for a child process."""
        return {
            f"CHIME_{name.upper()}": value.get_secret_value()
            if isinstance(value, SecretStr)
            else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def consumer_group(self, service: str) -> str:
        """`chime.scheduler` by default: deployments with their own prefix get their own groups."""
        return f"{self.topic_prefix}{service}"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


class _FromFiles(PydanticBaseSettingsSource):
    """`CHIME_<SETTING>_FILE=/run/secrets/x`: the setting is that file's content (Docker and
    Kubernetes secrets). A variable `CHIME_<SETTING>` itself takes precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"CHIME_{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as exc:
            raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values

"""Secrets from files, never shown; Kafka TLS/SASL options from settings."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.messaging import kafka_client_options, kafka_security
from shared.persistence.database import redacted
from shared.settings import Settings


def test_a_setting_from_a_file_and_the_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "sasl"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.setenv("CHIME_KAFKA_SASL_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert settings.to_env()["CHIME_KAFKA_SASL_PASSWORD"] == "s3cret-from-file"  # for children
    monkeypatch.setenv("CHIME_KAFKA_SASL_PASSWORD", "from-env")
    assert Settings().kafka_sasl_password.get_secret_value() == "from-env"  # type: ignore[union-attr]


def test_an_unreadable_secret_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIME_DATABASE_URL_FILE", "/nonexistent/db-url")
    with pytest.raises(ValueError, match="CHIME_DATABASE_URL_FILE: cannot read /nonexistent"):
        Settings()


def test_redacted_url() -> None:
    assert redacted("postgresql://app:pw@db:5432/chime") == "postgresql://app:***@db:5432/chime"
    assert redacted("postgresql://app@db/chime") == "postgresql://app@db/chime"


def _ca(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chime-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_kafka_plaintext_by_default() -> None:
    assert kafka_client_options(Settings()) == {"bootstrap_servers": "127.0.0.1:9092"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_sasl_ssl(tmp_path: Path, mechanism: str) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="chime",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=str(_ca(tmp_path)),
    )
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("chime", "pw")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "chime-test-ca"),),)]


def test_kafka_ssl_and_sasl_plaintext() -> None:
    ssl_only = kafka_client_options(Settings(kafka_security_protocol="SSL"))
    assert ssl_only["security_protocol"] == "SSL"
    assert isinstance(ssl_only["ssl_context"], ssl.SSLContext)
    plain = kafka_client_options(
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    )
    assert plain["security_protocol"] == "SASL_PLAINTEXT"
    assert plain["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    "credentials", [{}, {"kafka_sasl_username": "u"}, {"kafka_sasl_password": "p"}]
)
def test_kafka_sasl_without_credentials_is_refused(credentials: dict[str, str]) -> None:
    # kafka_client_options (the plain clients) is built on kafka_security (FastStream's broker)
    with pytest.raises(ValueError, match="needs kafka_sasl_username and kafka_sasl_password"):
        kafka_client_options(Settings(kafka_security_protocol="SASL_SSL", **credentials))


def test_faststream_gets_tls_from_the_same_settings() -> None:
    assert kafka_security(Settings()) is None
    security = kafka_security(Settings(kafka_security_protocol="SSL"))
    assert security is not None and security.use_ssl
    assert isinstance(security.ssl_context, ssl.SSLContext)

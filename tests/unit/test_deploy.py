"""docker-compose.yml and the Dockerfile: no engine here, so check their structure."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHIME_SERVICES = {
    "scheduler": ["run", "scheduler"],
    "ticker": ["run", "ticker"],
    "acker": ["run", "acker"],
}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_official_kafka_kraft_and_postgres_with_health_checks() -> None:
    services = compose()["services"]
    kafka, postgres = services["kafka"], services["postgres"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "zookeeper" not in services
    assert postgres["image"].startswith("postgres:")
    for name in ("kafka", "postgres"):
        assert services[name]["healthcheck"]["test"]


def test_services_build_from_the_one_dockerfile_and_wait_for_migrations() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, command in CHIME_SERVICES.items():
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"] == command
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "/health/ready" in " ".join(service["healthcheck"]["test"])
        env = service["environment"]
        assert env["CHIME_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["CHIME_DATABASE_URL"].startswith("postgresql://")


def test_named_volumes_and_optional_ui() -> None:
    doc = compose()
    assert {"kafka-data", "postgres-data"} <= set(doc["volumes"])
    assert doc["services"]["kafka-ui"]["profiles"] == ["ui"]


def test_dockerfile_is_multi_stage_non_root_single_entrypoint() -> None:
    lines = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert 'ENTRYPOINT ["chime"]' in lines

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


# --- Kubernetes ------------------------------------------------------------------------------

K8S = ROOT / "deploy" / "k8s" / "base"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_every_manifest_is_valid_kubernetes() -> None:
    import kubernetes_validate

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for doc in manifests():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises on any schema error


def test_deployments_probe_health_and_request_resources() -> None:
    deployments = by_kind("Deployment")
    assert set(deployments) == {"chime-scheduler", "chime-ticker", "chime-acker"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert container["image"] == "chime"  # set by kustomize `images`
        assert container["args"] == ["run", name.removeprefix("chime-")]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert deployment["spec"]["replicas"] >= 2


def test_migration_job_budgets_and_autoscaling() -> None:
    job = by_kind("Job")["chime-migrate"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    # The owner migrates; the services' role gets row access only (docs/security.md).
    assert [e["name"] for e in container["env"]] == ["CHIME_DATABASE_MIGRATION_URL"]
    config = by_kind("ConfigMap")["chime-config"]["data"]
    assert config["CHIME_AUTH_MODE"] == "jwt" and config["CHIME_DATABASE_SERVICE_ROLE"]
    for name in ("chime-scheduler", "chime-acker", "chime-ticker"):
        env = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {e["name"] for e in env} == {"CHIME_DATABASE_URL", "CHIME_AUTH_HS256_SECRET"}
    budgets = by_kind("PodDisruptionBudget")
    assert {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets.values()
    } == set(by_kind("Deployment"))
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in by_kind("HorizontalPodAutoscaler").values()
    }
    assert scaled == {"chime-scheduler", "chime-acker"}

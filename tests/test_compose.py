"""docker-compose.yaml describes the distributed shape. No Docker engine runs here, so this parses the
file and checks what can be checked without running it."""

from __future__ import annotations

import pathlib

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_the_services_of_the_distributed_shape_exist():
    expected = {
        "postgres", "redis", "minio", "airflow-init", "airflow-apiserver", "airflow-scheduler",
        "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2",
    }
    assert expected <= set(SERVICES)
    commands = {name: str(svc.get("command", "")) for name, svc in SERVICES.items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker-1"].startswith("celery worker")
    assert commands["airflow-worker-2"].startswith("celery worker")


def test_airflow_settings_name_celery_postgres_and_redis():
    for name, svc in SERVICES.items():
        if not name.startswith("airflow-"):
            continue
        env = _env(svc)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379"), name


def test_every_mounted_or_referenced_repo_file_exists():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
        build = svc.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (REPO / context / "Dockerfile").exists()
    dockerfile = (REPO / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists(), f"Dockerfile copies missing {src}"


def test_the_mlpipe_connection_points_at_minio():
    init = SERVICES["airflow-init"]
    script_mount = next(v for v in init["volumes"] if "init.sh" in v)
    script = (REPO / script_mount.split(":")[0]).read_text()
    assert "connections add mlpipe_default --conn-type mlpipe" in script
    assert '"endpoint_url": "http://minio:9000"' in script
    assert '"workspace": "s3://mlpipe/' in script
    assert "airflow db migrate" in script
    assert "minio" in SERVICES and "9000:9000" in SERVICES["minio"]["ports"]
    for worker in ("airflow-worker-1", "airflow-worker-2"):
        assert _env(SERVICES[worker])["MLPIPE_SCRATCH_DIR"], "each worker has its own scratch directory"

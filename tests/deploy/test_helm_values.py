"""deploy/helm/dagster-values.yaml: values for the official Dagster chart (`dagster/dagster`).

Validated offline against the chart's own JSON schema (vendored unmodified outside the repository,
``../shared/vendor/dagster-helm/values.schema.json`` or the file ``DS_DAGSTER_HELM_SCHEMA`` names),
whose external ``$ref``s to kubernetesjsonschema.dev are served from the Kubernetes schemas bundled
with kubernetes-validate. Without the schema those tests skip, unless ``DS_REQUIRE_SKAB`` is set
(CI, whose ../shared holds it): then they fail. The rest needs no schema: the values agree with
the image, the code location, the settings, the instance config Dagster accepts, the scorer's
manifest, and the GPU run tags documented in docs/operations.md are valid Kubernetes.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from ds_assets.definitions import build_definitions
from ds_assets.settings import GPU_TAG, Settings

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "helm" / "dagster-values.yaml"
DOC = ROOT / "docs" / "operations.md"
SCHEMA_ENV = "DS_DAGSTER_HELM_SCHEMA"
DEFAULT_SCHEMA = ROOT.parent / "shared" / "vendor" / "dagster-helm" / "values.schema.json"

# What the chart's schema refers to (the non-strict set: the chart's own defaults put keys such
# as `enabled` next to probe fields), and a name of ours for the strict set, used for the
# Kubernetes fragments we write ourselves (runK8sConfig, the GPU tag).
KUBERNETES_URL = "https://kubernetesjsonschema.dev/v1.18.0/_definitions.json"
KUBERNETES_STRICT_URL = "urn:datasentinel:kubernetes-strict"
KUBERNETES = "1.30"  # as tests/deploy/test_deploy.py: the oldest version the manifests target


# ------------------------------------------------------------------ schema, resolved offline


@functools.cache
def _kubernetes_definitions(strict: bool) -> dict[str, Any]:
    """kubernetes-validate's `_definitions.json` for KUBERNETES, reachable both as
    ``#/definitions/...`` (the chart schema's pointers) and ``#/$defs/...`` (its own)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    folder = f"v{KUBERNETES}.0-local" + ("-strict" if strict else "")
    path = resources.files(kubernetes_validate) / "kubernetes-json-schema" / folder
    contents = json.loads((path / "_definitions.json").read_text())
    definitions = contents["$defs"]
    # no `$id`: its internal refs resolve against the URL it is served under
    return {"$schema": contents["$schema"], "$defs": definitions, "definitions": definitions}


def _retrieve(uri: str) -> Resource:
    """The only documents the registry serves; anything else is an error, never a fetch."""
    if uri == KUBERNETES_URL:
        return Resource.from_contents(_kubernetes_definitions(strict=False))
    if uri == KUBERNETES_STRICT_URL:
        return Resource.from_contents(_kubernetes_definitions(strict=True))
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


REGISTRY: Registry = Registry(retrieve=_retrieve)  # type: ignore[call-arg]


def _schema_path() -> Path:
    return Path(os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)


@pytest.fixture(scope="module")
def chart_schema() -> dict[str, Any]:
    path = _schema_path()
    if not path.is_file():
        message = (f"the Dagster chart's values schema is not at {path} (vendored in "
                   f"../shared/vendor/dagster-helm; or set {SCHEMA_ENV})")
        if os.environ.get("DS_REQUIRE_SKAB"):  # CI has ../shared: a skip would hide it
            pytest.fail(f"DS_REQUIRE_SKAB is set but {message}")
        pytest.skip(message)
    return json.loads(path.read_text())


def _errors(schema: dict[str, Any], values: Any) -> list[jsonschema.ValidationError]:
    # The chart's schema is Draft 7 (no `$schema` key); its Kubernetes refs, as in Draft 7,
    # replace their sibling keywords.
    validator = jsonschema.Draft7Validator(schema, registry=REGISTRY)
    return sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))


def _describe(errors: list[jsonschema.ValidationError]) -> str:
    return "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                     for e in errors)


def _flatten(errors: list[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    for error in errors:
        yield error
        yield from _flatten(list(error.context or []))


def _external_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield ref
        for value in node.values():
            yield from _external_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _external_refs(value)


# ------------------------------------------------------------------ the files compared


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _deployment(values: dict[str, Any]) -> dict[str, Any]:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


def _launcher(values: dict[str, Any]) -> dict[str, Any]:
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def _queue(values: dict[str, Any]) -> dict[str, Any]:
    return values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]


def _pipeline_stage() -> str:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)
    [stage] = [s for s in stages if re.match(r"\S+ AS pipeline\b", s)]
    return stage


def _pipeline_image_name() -> str:
    """The name docker/Dockerfile's header builds the `pipeline` target as."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    [name] = re.findall(r"--target pipeline -t (\S+)", dockerfile)
    return name


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dagster_pin() -> str:
    [pin] = [d for d in _pyproject()["project"]["optional-dependencies"]["pipeline"]
             if re.match(r"dagster==", d)]
    return pin.split("==")[1]


def _names_read(path: Path) -> set[str]:
    """Environment variables a module reads (``env.get("DS_...")``, ``os.environ.get(...)``)."""
    return set(re.findall(r"""(?:env|environ)\.get\(\s*["'](DS_\w+)["']""", path.read_text()))


def _group(pattern: str, text: str, flags: int = 0) -> str:
    match = re.search(pattern, text, flags)
    assert match, f"{pattern!r} not found"
    return match.group(1)


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


# ------------------------------------------------------------------ (1) the values validate


def test_every_kubernetes_ref_of_the_chart_schema_resolves_offline(
    chart_schema: dict[str, Any],
) -> None:
    refs = sorted(set(_external_refs(chart_schema)))
    assert refs, "the schema was expected to refer to the Kubernetes definitions"
    assert all(ref.startswith(f"{KUBERNETES_URL}#/definitions/") for ref in refs), refs
    resolver = REGISTRY.resolver()
    for ref in refs:
        resolved = resolver.lookup(ref).contents
        assert isinstance(resolved, dict) and resolved, ref  # a real definition, not a stub


def test_the_values_validate_against_the_chart_schema(chart_schema: dict[str, Any]) -> None:
    errors = _errors(chart_schema, _values())
    assert not errors, _describe(errors)
    # every key the chart requires is set here: the file validates without the chart's defaults
    assert set(chart_schema["required"]) <= set(_values())


# ------------------------------------------------------------------ (2) broken values fail

DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(("runLauncher", "type"), "NoSuchLauncher", id="unknown-launcher"),
        pytest.param(("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator",
                      "maxConcurrentRuns"), "eight", id="max-runs-not-a-number"),
        pytest.param(("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator",
                      "tagConcurrencyLimits", 0, "limit"), "4", id="tag-limit-a-string"),
        # K8sRunLauncher selected but its config gone (the schema's if/then)
        pytest.param(("runLauncher", "config", "k8sRunLauncher"), DELETE,
                     id="launcher-config-missing"),
        pytest.param(("postgresql", "postgresqlHost"), DELETE, id="postgres-host-missing"),
        # checked only through the Kubernetes definitions behind the schema's $refs: proves
        # they are resolved, not stubbed out
        pytest.param(("dagster-user-deployments", "deployments", 0, "resources", "limits"),
                     "lots", id="k8s-resources-not-a-map"),
        pytest.param(("runLauncher", "config", "k8sRunLauncher", "volumes", 0,
                      "persistentVolumeClaim", "claimName"), 5, id="k8s-claim-name-a-number"),
    ],
)
def test_a_broken_copy_is_rejected(
    chart_schema: dict[str, Any], path: tuple[str | int, ...], value: Any
) -> None:
    broken = copy.deepcopy(_values())
    parent: Any = broken
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    errors = _errors(chart_schema, broken)
    assert errors, f"{'/'.join(map(str, path))} = {value!r} was accepted"
    # an error (or, under an anyOf, one of its alternatives') points at the broken key, or for
    # a missing one at its parent
    where = list(path) if value is not DELETE else list(path[:-1])
    assert any(list(e.absolute_path) == where for e in _flatten(errors)), _describe(errors)


# ------------------------------------------------------------------ (3) agrees with the repo


def test_the_code_location_is_the_one_the_workspace_and_image_load() -> None:
    deployment = _deployment(_values())
    args = deployment["dagsterApiGrpcArgs"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    [location] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    module = location["python_module"]
    assert options == {"-m": module["module_name"], "-a": module["attribute"]}
    assert options["-m"] == "ds_assets.definitions"
    tool = _pyproject()["tool"]["dagster"]
    assert (tool["module_name"], tool["code_location_name"]) == (options["-m"],
                                                                  deployment["name"])
    # the deployment's name is the location name the chart's workspace gives it
    assert deployment["name"] == module["location_name"]
    # the image's own code server: same module, same port
    cmd = json.loads(_group(r"^CMD (\[.+\])$", _pipeline_stage(), re.M))
    assert cmd[cmd.index("-m") + 1] == options["-m"]
    assert deployment["port"] == int(cmd[cmd.index("-p") + 1])


def test_the_image_is_the_dockerfile_pipeline_target() -> None:
    values = _values()
    image = _deployment(values)["image"]
    name = _pipeline_image_name()
    assert image["repository"].rsplit("/", 1)[-1] == name
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yaml").read_text())
    assert compose["services"]["code-location"]["image"].split(":")[0] == name
    assert image["tag"] == _pyproject()["project"]["version"]
    # Dagster's own images run the dagster version our image pins, the chart the same
    pin = _dagster_pin()
    assert values["dagsterWebserver"]["image"]["tag"] == pin
    assert values["dagsterDaemon"]["image"]["tag"] == pin
    assert f"--version {pin}" in VALUES.read_text()
    assert f"--version {pin}" in _section("Dagster on Kubernetes (Helm)")
    # the image's DAGSTER_HOME (owned by its user) is where the chart mounts the instance
    stage = _pipeline_stage()
    assert re.search(rf"DAGSTER_HOME={re.escape(values['global']['dagsterHome'])}\b", stage)
    uid = int(_group(r"--uid (\d+)", (ROOT / "docker" / "Dockerfile").read_text()))
    assert _launcher(values)["securityContext"]["runAsUser"] == uid
    assert _deployment(values)["podSecurityContext"]["runAsUser"] == uid


def test_env_names_are_ones_the_code_reads_and_match_on_server_and_runs() -> None:
    values = _values()
    server = {e["name"]: e["value"] for e in _deployment(values)["env"]}
    runs = dict(v.split("=", 1) for v in _launcher(values)["envVars"])
    assert server == runs  # both build the definitions from them
    settings = _names_read(ROOT / "ds_assets" / "settings.py")
    anywhere = set().union(*(_names_read(p) for p in (ROOT / "ds_assets").rglob("*.py")))
    assert {"DS_DATA_DIR", "DS_MODELS_DIR", "DS_MLFLOW_TRACKING_URI"} <= settings
    assert set(server) <= anywhere, set(server) - anywhere
    # storage and MLflow: the names ds_assets/settings.py reads
    assert {n for n in server if n != "DS_AUTOMATION"} <= settings
    # the tracking URI (it may hold credentials) comes from the Secret, on both
    assert "DS_MLFLOW_TRACKING_URI" not in server
    assert _deployment(values)["envSecrets"] == _launcher(values)["envSecrets"]
    [secret] = _launcher(values)["envSecrets"]
    doc = _section("Dagster on Kubernetes (Helm)")
    assert re.search(rf"secret generic {secret['name']} .*\n.*DS_MLFLOW_TRACKING_URI=", doc)
    # the data directory is the image's
    assert re.search(rf"DS_DATA_DIR={re.escape(runs['DS_DATA_DIR'])}\b", _pipeline_stage())


def test_the_runs_mount_the_scorers_models_claim_where_the_settings_point() -> None:
    launcher = _launcher(_values())
    runs = dict(v.split("=", 1) for v in launcher["envVars"])
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in launcher["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in launcher["volumeMounts"]}
    assert set(mounts.values()) == set(claims)
    scorer = {d["kind"]: d for d in
              yaml.safe_load_all((ROOT / "deploy" / "k8s" / "scorer.yaml").read_text())}
    pod = scorer["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    scorer_mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    scorer_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                     for v in pod["volumes"] if "persistentVolumeClaim" in v}
    # the runs write models where the scorer reads them: same claim, same path
    models = runs["DS_MODELS_DIR"]
    assert claims[mounts[models]] == scorer_claims["models"]
    assert models == scorer_mounts["models"]
    assert models == container["args"][container["args"].index("--models") + 1]
    assert claims[mounts[runs["DS_DATA_DIR"]]] != scorer_claims["models"]


def test_one_namespace_for_release_runs_and_scorer() -> None:
    namespace = _launcher(_values())["jobNamespace"]
    doc = _section("Dagster on Kubernetes (Helm)")
    install = _group(r"helm install (.+?)(?<!\\)\n", doc, re.S)
    words = shlex.split(install.replace("\\\n", " "))
    assert words[words.index("--namespace") + 1] == namespace
    assert words[words.index("-f") + 1] == str(VALUES.relative_to(ROOT))
    # the scorer shares the models claim, so it runs there too
    assert f"kubectl apply -n {namespace} -f deploy/k8s/scorer.yaml" in doc


def test_postgres_is_external_with_the_production_scheme() -> None:
    values = _values()
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    instance = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    scheme = instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["postgresql"]["postgresqlScheme"] == scheme


# ------------------------------------------------------------------ the instance Dagster loads


def _rendered_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of dagster.yaml the chart (templates/helpers/instance/_run-coordinator.tpl,
    configmap-instance.yaml) writes from these values, storage aside. The chart writes
    max_concurrent_runs always (-1 when unset)."""
    queue = _queue(values)
    config: dict[str, Any] = {
        "max_concurrent_runs": -1 if queue.get("maxConcurrentRuns") is None
        else queue["maxConcurrentRuns"],
    }
    optional = {"tagConcurrencyLimits": "tag_concurrency_limits",
                "dequeueIntervalSeconds": "dequeue_interval_seconds",
                "dequeueUseThreads": "dequeue_use_threads",
                "dequeueNumWorkers": "dequeue_num_workers"}
    config.update({key: queue[name] for name, key in optional.items() if queue.get(name)})
    if queue.get("blockOpConcurrencyLimitedRuns"):
        block = queue["blockOpConcurrencyLimitedRuns"]
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block["enabled"],
            "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"]}
    retries = values["dagsterDaemon"]["runRetries"]
    return {
        "run_coordinator": {"module": "dagster.core.run_coordinator",
                            "class": "QueuedRunCoordinator", "config": config},
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"],
                        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }


def test_dagster_loads_the_instance_with_the_queue_limits_and_the_gpu_pool(
    tmp_path: Path,
) -> None:
    import dagster as dg

    values = _values()
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(_rendered_instance(values)))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.run_coordinator  # noqa: B018  (builds it: its config is validated)
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == _queue(values)["maxConcurrentRuns"]
        assert queue.tag_concurrency_limits == _queue(values)["tagConcurrencyLimits"]
        assert queue.should_block_op_concurrency_limited_runs
        # every pool one step at a time, as the local instance (dagster.yaml)
        local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        assert concurrency.pool_config.default_pool_limit == 1
        assert local["concurrency"]["pools"]["default_limit"] == 1
        assert instance.run_retries_max_retries == values["dagsterDaemon"]["runRetries"][
            "maxRetries"]
        # a failed step (a missing file, a failed check) fails again: only transient failures
        # (a lost worker or pod) are retried, in every instance
        assert not instance.run_retries_retry_on_asset_or_op_failure
    production = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    assert production["run_retries"]["max_retries"] == values["dagsterDaemon"]["runRetries"][
        "maxRetries"]
    for config in (local, production):
        assert config["run_retries"]["retry_on_asset_or_op_failure"] is False


def test_the_gpu_pool_exists_in_the_code(tmp_path: Path) -> None:
    """The pool the limit is for; and why the limit is not written as `pools:`: next to the
    run queue limits the chart writes, Dagster refuses the instance."""
    import dagster as dg

    detector = (ROOT / "ds_assets" / "assets" / "detector.py").read_text()
    assert len(re.findall(r"""pool=["']gpu["']""", detector)) >= 2  # training, TensorRT
    values = copy.deepcopy(_values())
    values["additionalInstanceConfig"] = {"concurrency": {"pools": {"default_limit": 1}}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(_rendered_instance(values)))
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent_runs"):
        dg.DagsterInstance.from_config(str(tmp_path))


# ------------------------------------------------------------------ Kubernetes fragments


def _fragment_errors(definition: str, fragment: dict[str, Any]) -> list[str]:
    """Each field of ``fragment`` against the strict Kubernetes ``definition`` (a fragment is
    merged into what Dagster builds, so the object's own required fields are not asked for)."""
    properties = _kubernetes_definitions(strict=True)["$defs"][definition]["properties"]
    errors = [f"{definition}: no field {key!r}" for key in fragment if key not in properties]
    for key, value in fragment.items():
        if key in properties:
            schema = {"$ref": f"{KUBERNETES_STRICT_URL}#/$defs/{definition}/properties/{key}"}
            validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY)
            errors += [f"{definition}.{key}: {e.message}" for e in validator.iter_errors(value)]
    return errors


CORE = "io.k8s.api.core.v1"


def test_the_run_launchers_kubernetes_config_is_valid() -> None:
    launcher = _launcher(_values())
    config = launcher["runK8sConfig"]
    assert set(config) <= {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                           "jobSpecConfig", "jobMetadata"}
    errors = _fragment_errors(f"{CORE}.PodSpec", config.get("podSpecConfig", {}))
    errors += _fragment_errors(f"{CORE}.Container", config.get("containerConfig", {}))
    errors += _fragment_errors("io.k8s.api.batch.v1.JobSpec", config.get("jobSpecConfig", {}))
    errors += _fragment_errors(f"{CORE}.Container", {
        "resources": launcher["resources"], "securityContext": launcher["securityContext"],
        "volumeMounts": launcher["volumeMounts"]})
    errors += _fragment_errors(f"{CORE}.PodSpec", {"volumes": launcher["volumes"]})
    assert not errors, "\n".join(errors)


def _gpu_run_config() -> dict[str, Any]:
    """DS_GPU_RUN_CONFIG as the values file sets it; the same object on server and runs and in
    the docs."""
    values = _values()
    server = {e["name"]: e["value"] for e in _deployment(values)["env"]}
    runs = dict(v.split("=", 1) for v in _launcher(values)["envVars"])
    config = json.loads(server["DS_GPU_RUN_CONFIG"])
    assert json.loads(runs["DS_GPU_RUN_CONFIG"]) == config
    blocks = re.findall(r"```json\n(.*?)```", _section("Dagster on Kubernetes (Helm)"), re.S)
    assert blocks == [blocks[0]], "one JSON block (the GPU run config) in the section"
    assert json.loads(blocks[0]) == config
    return config


def test_training_runs_land_on_a_gpu_node() -> None:
    k8s = _gpu_run_config()
    assert set(k8s) <= {"container_config", "pod_spec_config", "pod_template_spec_metadata",
                        "job_spec_config", "job_metadata", "merge_behavior"}
    pod, container = k8s["pod_spec_config"], k8s["container_config"]
    errors = _fragment_errors(f"{CORE}.PodSpec", pod)
    errors += _fragment_errors(f"{CORE}.Container", container)
    assert not errors, "\n".join(errors)
    assert pod["nodeSelector"] and pod["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the code turns the values' setting into the training job's run tags, and only its
    settings = Settings.from_env({"DS_DATA_DIR": "/tmp/ds-helm-test",
                                  "DS_GPU_RUN_CONFIG": json.dumps(k8s)})
    defs = build_definitions(settings)
    tags = defs.resolve_job_def("train_detector").run_tags
    assert json.loads(tags["dagster-k8s/config"]) == k8s
    assert defs.resolve_job_def("score_telemetry").run_tags.get("dagster-k8s/config") is None
    # the queue holds a second GPU run: its tag is the one the run queue limits to 1
    limits = _queue(_values())["tagConcurrencyLimits"]
    [gpu] = [t for t in limits if t["key"] in tags and t.get("value") == tags[t["key"]]]
    assert gpu["key"] == GPU_TAG and gpu["limit"] == 1


@pytest.mark.parametrize(("value", "named"), [
    ("{not json", "is not JSON"),
    ('["pod_spec_config"]', "found list"),
    ('{"pod_spec": {}}', "found ['pod_spec']"),
])
def test_a_bad_gpu_run_config_is_refused_by_name(value: str, named: str) -> None:
    settings = Settings.from_env({"DS_GPU_RUN_CONFIG": value})
    with pytest.raises(ValueError, match="DS_GPU_RUN_CONFIG") as caught:
        settings.gpu_run_tags()
    assert named in str(caught.value)
    assert Settings.from_env({}).gpu_run_tags() == {}

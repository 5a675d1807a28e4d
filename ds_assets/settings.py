"""Where things live, from environment variables with embedded local defaults."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PARTITIONS_START = "2026-11-01"
# the run queue lets one run with this tag at a time (deploy/helm/dagster-values.yaml)
GPU_TAG = "datasentinel/gpu"


def _partitions_start() -> str:
    return os.environ.get("DS_PARTITIONS_START", DEFAULT_PARTITIONS_START)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    mlflow_tracking_uri: str
    mlflow_artifacts: Path
    mlflow_experiment: str
    model_name: str
    # first daily partition (UTC) of the default dataset; the environment's when not given
    partitions_start: str = field(default_factory=_partitions_start)
    # Pushgateway for the pipeline metrics (ds_assets.resources.pipeline_metrics); empty: off
    pushgateway_url: str = ""
    # JSON object for the `dagster-k8s/config` tag of training runs (GPU node); empty: none
    gpu_run_config: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data = Path(env.get("DS_DATA_DIR", "data")).resolve()
        return cls(
            data_dir=data,
            models_dir=Path(env.get("DS_MODELS_DIR", str(data / "models"))).resolve(),
            mlflow_tracking_uri=env.get(
                "DS_MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}"
            ),
            mlflow_artifacts=data / "mlartifacts",
            mlflow_experiment=env.get("DS_MLFLOW_EXPERIMENT", "datasentinel"),
            model_name=env.get("DS_MODEL_NAME", "telemetry-ae"),
            partitions_start=env.get("DS_PARTITIONS_START", DEFAULT_PARTITIONS_START),
            pushgateway_url=env.get("DS_PUSHGATEWAY_URL", ""),
            gpu_run_config=env.get("DS_GPU_RUN_CONFIG", ""),
        )

    def gpu_run_tags(self) -> dict[str, str]:
        """Run tags that put a training run on a GPU node under the K8sRunLauncher
        (``DS_GPU_RUN_CONFIG``: the ``dagster-k8s/config`` object as JSON); {} when unset."""
        text = self.gpu_run_config.strip()
        if not text:
            return {}
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"DS_GPU_RUN_CONFIG is not JSON ({exc.msg} at character {exc.pos}); give the "
                "dagster-k8s/config object, e.g. {\"pod_spec_config\": {...}}, or unset it"
            ) from None
        allowed = {"container_config", "pod_spec_config", "pod_template_spec_metadata",
                   "job_spec_config", "job_metadata", "merge_behavior"}
        if not isinstance(config, dict) or not config or set(config) - allowed:
            found = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(
                f"DS_GPU_RUN_CONFIG must be a non-empty JSON object with keys among "
                f"{sorted(allowed)}; found {found}"
            )
        return {GPU_TAG: "true", "dagster-k8s/config": json.dumps(config, sort_keys=True)}

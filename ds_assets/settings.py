"""Where things live, from environment variables with embedded local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PARTITIONS_START = "2026-11-01"


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
        )

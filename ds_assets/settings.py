"""Where things live, from environment variables with embedded local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    mlflow_tracking_uri: str
    mlflow_artifacts: Path
    mlflow_experiment: str
    model_name: str

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
        )

"""The model registry resource: where bundles live and which model name the graph trains."""


from pathlib import Path

import dagster as dg

from ds_serving import bundle as bundles


class ModelRegistry(dg.ConfigurableResource):
    """Local bundle registry (``<models_dir>/<name>/<version>``) used by the asset graph."""

    models_dir: str
    model_name: str = "telemetry-ae"

    @property
    def root(self) -> Path:
        return Path(self.models_dir)

    def champion(self) -> bundles.Bundle:
        return bundles.load_champion(self.models_dir, self.model_name)

    def champion_version(self) -> str | None:
        return bundles.champion_version(self.models_dir, self.model_name)

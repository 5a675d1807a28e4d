"""The model registry resource: local bundles (what serves) mirrored to the MLflow registry.

Logic lives in ``ds_serving.bundle`` (bundle format, champion pointer) and
``ds_assets.training.promotion`` (decision, MLflow logging/registration/alias); this is wiring.
"""


from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from ds_assets.training import promotion
from ds_serving import bundle as bundles


class ModelRegistry(dg.ConfigurableResource):
    """Local bundle registry (``<models_dir>/<name>/<version>``) used by the asset graph; with
    ``mlflow_tracking_uri`` every bundle is also a registered MLflow model version and the
    champion carries the MLflow alias ``champion``."""

    models_dir: str
    model_name: str = "telemetry-ae"
    mlflow_tracking_uri: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.models_dir)

    def champion(self) -> bundles.Bundle:
        return bundles.load_champion(self.models_dir, self.model_name)

    def champion_version(self) -> str | None:
        return bundles.champion_version(self.models_dir, self.model_name)

    def bundle_path(self, version: str) -> Path:
        return bundles.version_dir(self.models_dir, self.model_name, version)

    def register(
        self,
        bundle: bundles.Bundle,
        run_id: str | None,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> str | None:
        """Log the bundle to its MLflow run and register it; returns the MLflow version.

        If that fails the bundle is withdrawn: a local version MLflow does not know could
        never be promoted (promotion sets the MLflow alias too), only clutter the registry."""
        if self.mlflow_tracking_uri is None or run_id is None:
            return None
        try:
            return promotion.log_bundle(
                self.mlflow_tracking_uri, run_id, bundle, self.model_name,
                params=params, metrics=metrics,
            )
        except Exception as exc:
            bundles.withdraw_version(self.models_dir, self.model_name, bundle.manifest.version)
            raise RuntimeError(
                f"registering bundle {self.model_name} v{bundle.manifest.version} in MLflow at "
                f"{self.mlflow_tracking_uri} failed ({type(exc).__name__}: {exc}); the version "
                "was withdrawn from the local registry, fix MLflow and re-run the training"
            ) from exc

    def log_report(self, run_id: str | None, report: Mapping[str, Any]) -> None:
        if self.mlflow_tracking_uri is not None and run_id is not None:
            promotion.log_report(self.mlflow_tracking_uri, run_id, report)

    def log_decision(self, run_id: str | None, decision: promotion.PromotionDecision) -> None:
        if self.mlflow_tracking_uri is not None and run_id is not None:
            promotion.log_decision(self.mlflow_tracking_uri, run_id, decision)

    def promote(
        self, decision: promotion.PromotionDecision, mlflow_version: str | None
    ) -> str | None:
        """champion.json, then the MLflow alias; returns the aliased MLflow version."""
        return promotion.promote_bundle(
            self.models_dir, self.model_name, decision,
            tracking_uri=self.mlflow_tracking_uri, mlflow_version=mlflow_version,
        )

    def champion_alias_version(self) -> str | None:
        if self.mlflow_tracking_uri is None:
            return None
        return promotion.champion_alias_version(self.mlflow_tracking_uri, self.model_name)

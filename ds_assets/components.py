"""A dataset declared in YAML, as a Dagster component: one ``defs.yaml`` per dataset under
``ds_assets/defs/`` (``ds-dataset scaffold`` writes one from a file) becomes that dataset's
slice of the asset graph, side by side with the others in the UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dagster as dg

from ds_assets.dataset import Dataset
from ds_assets.settings import Settings
from ds_assets.telemetry.declaration import (
    DatasetSpec,
    EntitySpec,
    FeatureSpec,
    LabelSpec,
    PartitionSpec,
    SourceSpec,
    TimestampSpec,
)

# per-asset run-config sections a declaration may give defaults for
CONFIG_SECTIONS = {"training": "training_set", "detector": "detector", "policy": "model_bundle",
                   "promotion": "champion"}


class TelemetryDataset(dg.Component, dg.Model, dg.Resolvable):
    """A dataset: its files and what their columns mean, its model, its partitions, and the
    detector and scoring-policy settings it starts from. Without ``source`` it is the
    synthetic generator's dataset (the demo)."""

    name: str
    # the registry/MLflow model name; default ``<name>-ae`` (the generator's: DS_MODEL_NAME)
    model_name: str | None = None
    # prefix of asset keys and names; default the name ("" keeps the unprefixed names)
    key_prefix: str | None = None
    # daily partitions; the generator's default to DS_PARTITIONS_START
    partitions: PartitionSpec | None = None
    source: SourceSpec | None = None
    timestamp: TimestampSpec = TimestampSpec()
    entity: EntitySpec = EntitySpec()
    features: FeatureSpec = FeatureSpec()
    labels: LabelSpec = LabelSpec()
    duplicates: Literal["refuse", "keep_last"] = "refuse"
    # run-config defaults: training window (TrainingWindowConfig), detector (DetectorConfig),
    # scoring policy (BundleConfig: threshold rule, smoothing, alerting)
    training: dict[str, Any] = {}
    detector: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    # promotion (ChampionConfig): shadow_days before a promotion (default: 2 for drift retrains)
    promotion: dict[str, Any] = {}

    def spec(self) -> DatasetSpec | None:
        if self.source is None:
            return None
        return DatasetSpec(source=self.source, timestamp=self.timestamp, entity=self.entity,
                           features=self.features, labels=self.labels,
                           duplicates=self.duplicates)

    def dataset(self, settings: Settings) -> Dataset:
        """The Dataset the graph builders take, with this declaration's choices."""
        spec = self.spec()
        if spec is None:
            start = self.partitions.start if self.partitions else settings.partitions_start
            end = self.partitions.end if self.partitions else None
            model = self.model_name or settings.model_name
        else:
            if self.partitions is None:
                raise ValueError(f"dataset {self.name!r}: declare partitions.start (the first "
                                 "day of its rows, UTC); ds-dataset scaffold writes it")
            start, end = self.partitions.start, self.partitions.end
            model = self.model_name or f"{self.name}-ae"
        return Dataset(
            name=self.name, model_name=model, partitions_start=start, partitions_end=end,
            key_prefix=self.name if self.key_prefix is None else self.key_prefix,
            spec=spec, staging_dir=str(settings.data_dir / "staging" / self.name),
            config_defaults={asset: getattr(self, section)
                             for section, asset in CONFIG_SECTIONS.items()
                             if getattr(self, section)},
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from ds_assets.definitions import build_dataset_definitions

        settings = Settings.from_env()
        return build_dataset_definitions(self.dataset(settings), settings, shared_resources={})


def load_declaration(path: Path) -> TelemetryDataset:
    """A ``defs.yaml`` read outside Dagster's loader (CLI, benchmarks): the same model, the
    same checks. Templates (``{{ ... }}``) are not rendered here; use ``$VARS`` in paths."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:  # the error then names the file, not a string
            document = yaml.safe_load(fh)
    except yaml.YAMLError as exc:  # a hand edit gone wrong: where, and what
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict) or "attributes" not in document:
        raise ValueError(f"{path}: not a component declaration (type: and attributes:)")
    expected = f"{TelemetryDataset.__module__}.{TelemetryDataset.__name__}"
    if document.get("type") != expected:
        raise ValueError(f"{path}: type is {document.get('type')!r}, expected {expected!r}")
    return TelemetryDataset.model_validate(document["attributes"])

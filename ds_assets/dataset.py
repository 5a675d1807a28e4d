"""A dataset: one slice of the asset graph (assets, checks, jobs, schedules, sensors, registry).

Every builder takes a Dataset and names what it builds through it. The default dataset has an
empty key prefix, so its names are today's; another's asset keys are ``<prefix>/<name>`` and its
other names (ops, jobs, schedules, sensors, groups, its registry resource) ``<prefix>__<name>``.
The IO manager (files under the asset keys) and MLflow resources are shared by all datasets.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
import pydantic

from ds_assets.resources.registry import ModelRegistry

if TYPE_CHECKING:
    import pandas as pd

    from ds_assets.settings import Settings
    from ds_assets.telemetry.declaration import DatasetSpec

C = TypeVar("C", bound=dg.Config)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_NAME = "default"
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_identifier(value: str, what: str = "name") -> str:
    """A dataset name or key prefix: it names asset keys, jobs and a folder of declarations."""
    if not _IDENTIFIER.match(value):
        raise ValueError(f"dataset {what} {value!r}: letters, digits and '_' only, starting "
                         "with a letter")
    return value


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its model (registry name) and its daily partitions (UTC, from
    ``partitions_start`` up to, not including, ``partitions_end``; open-ended when None)."""

    name: str
    model_name: str
    partitions_start: str
    key_prefix: str = ""
    partitions_end: str | None = None
    # a declared dataset (ds_assets.components): how its files read; None: the generator
    spec: DatasetSpec | None = field(default=None, compare=False)
    # where its files are staged as Parquet (ds_assets.telemetry.files.stage)
    staging_dir: str = ""
    # run-config defaults per asset (``detector``, ``model_bundle``, ``training_set``)
    config_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict,
                                                             compare=False)

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("key_prefix", self.key_prefix)):
            if value:
                check_identifier(value, what)
        if not self.name:
            raise ValueError("a dataset needs a name")
        if not self.model_name:
            raise ValueError(f"dataset {self.name!r} needs a model_name")
        days = [self.partitions_start, *([self.partitions_end] if self.partitions_end else [])]
        for day in days:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"dataset {self.name!r}: partition date {day!r} is not "
                                 "YYYY-MM-DD") from None
        if self.partitions_end and self.partitions_end <= self.partitions_start:
            raise ValueError(f"dataset {self.name!r}: partitions_end {self.partitions_end} is "
                             f"not after partitions_start {self.partitions_start}")

    def config_class(self, base: type[C], asset: str) -> type[C]:
        """``base`` with this dataset's defaults for ``asset`` (what the declaration chose),
        so the launchpad, schedules and sensors all start from them."""
        overrides = dict(self.config_defaults.get(asset, {}))
        if not overrides:
            return base
        unknown = sorted(set(overrides) - set(base.model_fields))
        if unknown:
            raise ValueError(f"dataset {self.name!r}: {asset} has no setting(s) {unknown}; "
                             f"known: {sorted(base.model_fields)}")
        try:
            checked = base(**overrides)  # the declared values, validated and typed (enums)
        except (pydantic.ValidationError, ValueError) as exc:
            raise ValueError(f"dataset {self.name!r}: {asset} settings {overrides}: "
                             f"{exc}") from None
        fields: dict[str, Any] = {k: (base.model_fields[k].annotation, getattr(checked, k))
                                  for k in overrides}
        return pydantic.create_model(f"{base.__name__}_{self.name}", __base__=base, **fields)

    def retrain_window(self, default: int) -> int:
        """Days a scheduled or drift-requested retrain trains on: the declared ``training``
        ``n_partitions`` when the declaration sets it (what the launchpad starts from too),
        else ``default``."""
        declared = self.config_defaults.get("training_set", {}).get("n_partitions")
        return default if declared is None else int(declared)

    def with_defaults(self, asset: str) -> Callable[[F], F]:
        """Decorate an asset function (under ``@dg.asset``) so its ``config`` parameter's class
        carries this dataset's defaults for ``asset``."""
        def apply(fn: F) -> F:
            base = fn.__annotations__["config"]
            fn.__annotations__["config"] = self.config_class(base, asset)
            return fn
        return apply

    def validation_features(self, frame: pd.DataFrame) -> list[str]:
        """The columns the blocking checks require: the declared list, else the frame's."""
        from ds_assets.telemetry.schema import feature_columns

        if self.spec is not None and self.spec.features.columns is not None:
            return list(self.spec.features.columns)
        return feature_columns(frame)

    def feature_ranges(self) -> dict[str, tuple[float, float]]:
        """Value ranges the blocking range check holds features to."""
        if self.spec is not None:
            return dict(self.spec.features.ranges)
        from ds_assets.telemetry.generator import FEATURE_RANGES

        return dict(FEATURE_RANGES)

    @classmethod
    def default(cls, settings: Settings) -> Dataset:
        """The code location's own dataset (DS_PARTITIONS_START, DS_MODEL_NAME), unprefixed."""
        return cls(name=DEFAULT_NAME, model_name=settings.model_name,
                   partitions_start=settings.partitions_start)

    def key(self, name: str) -> dg.AssetKey:
        """This dataset's asset key for an asset name of the graph."""
        return dg.AssetKey([self.key_prefix, name] if self.key_prefix else [name])

    def keys(self, *names: str) -> list[dg.AssetKey]:
        return [self.key(name) for name in names]

    def scoped(self, name: str) -> str:
        """This dataset's name for a job, schedule, sensor, group, op or resource key."""
        return f"{self.key_prefix}__{name}" if self.key_prefix else name

    def op_name(self, asset: str) -> str:
        """The op of an asset (run config ``ops`` keys): ``<prefix>__<asset>``."""
        return self.key(asset).to_python_identifier()

    def ins(self, *names: str) -> dict[str, dg.AssetIn]:
        """Asset inputs named after the upstream assets, read from this dataset's keys."""
        return {name: dg.AssetIn(self.key(name)) for name in names}

    @cached_property
    def partitions_def(self) -> dg.DailyPartitionsDefinition:
        """The daily partitioning of every per-day asset, check and job of this dataset."""
        return dg.DailyPartitionsDefinition(
            start_date=self.partitions_start, end_date=self.partitions_end, timezone="UTC")

    @property
    def registry_key(self) -> str:
        return self.scoped("registry")

    def registry(self, context: dg.AssetExecutionContext) -> ModelRegistry:
        """This dataset's model registry resource (declare it: ``required_resource_keys``)."""
        registry = getattr(context.resources, self.registry_key)
        if not isinstance(registry, ModelRegistry):
            raise TypeError(f"resource {self.registry_key!r} is a {type(registry).__name__}, "
                            "not a ModelRegistry")
        return registry

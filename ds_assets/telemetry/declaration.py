"""What a user declares about a dataset: where its rows are and what their columns mean.

The declaration is plain data (YAML -> these models); ``ds_assets.telemetry.files`` reads files
with it and ``ds_assets.components`` turns it into a slice of the asset graph. Every field has
a default that fits a single CSV with a ``timestamp`` column, so a declaration names only what
differs.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ds_assets.telemetry.schema import RESERVED


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Spec):
    """Where the rows are: a file, a glob or a directory (every CSV/Parquet file under it).
    ``$VAR``/``${VAR}`` in the path expand from the environment when it is read."""

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    # None: detected from the file's first lines (',', ';', tab or '|'; ',' as decimal mark
    # when the separator is not ',' and numbers are written 0,25)
    separator: str | None = None
    decimal: str | None = None
    # glob patterns (on the path relative to the declared directory) left out, e.g. a folder of
    # reference recordings
    exclude: list[str] = Field(default_factory=list)


class TimestampSpec(_Spec):
    column: str = "timestamp"
    # strftime format; None: ISO 8601 and what pandas infers from the first value
    format: str | None = None
    # the zone of timestamps written without an offset (those with one keep theirs)
    timezone: str = "UTC"
    # numeric timestamps (a sample index, epoch seconds): the unit of the numbers, counted from
    # ``origin`` (in ``timezone``); None: timestamps are written as dates and times
    unit: Literal["s", "ms", "us", "ns"] | None = None
    origin: str = "1970-01-01"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import pandas as pd  # the reader localizes with it: accept exactly what it accepts

        try:
            pd.Timestamp("2000-01-01").tz_localize(value)
        except Exception:  # pytz, zoneinfo and dateutil each raise their own
            raise ValueError(f"timestamp.timezone {value!r} is not a time zone name, e.g. UTC "
                             "or Europe/Berlin (IANA names)") from None
        return value

    @model_validator(mode="after")
    def _one_form(self) -> TimestampSpec:
        if self.unit and self.format:
            raise ValueError("timestamp: give either format (written dates) or unit (numbers "
                             "counted from origin), not both")
        if self.unit:
            try:
                dt.datetime.fromisoformat(self.origin)
            except ValueError:
                raise ValueError(f"timestamp.origin {self.origin!r} is not an ISO 8601 date "
                                 "or time") from None
        return self


class EntitySpec(_Spec):
    """Which rows belong to one machine/sensor/series: a column, one entity per file, or (both
    unset) one entity for the whole dataset, named after it."""

    column: str | None = None
    per_file: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> EntitySpec:
        if self.column and self.per_file:
            raise ValueError("entity: give either column or per_file, not both")
        return self


class FeatureSpec(_Spec):
    """The model's inputs: an explicit list (any names), or every numeric column that is not
    the timestamp, entity or label column, minus ``exclude``. ``groups`` names sets of features
    (plant stages, subsystems) whose errors explanations add up (``ds_serving.groups``)."""

    columns: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    # declared value ranges, checked by the blocking `feature_values_in_range` check
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # ranges learned from the champion's training rows, for features without a declared one:
    # [min - f * span, max + f * span] with f this factor (gross errors: units, dead sensors)
    learn_ranges: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.columns is not None:
            if not self.columns:
                raise ValueError("features.columns is empty; list at least one column or drop "
                                 "it to use every numeric column")
            repeated = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if repeated:
                raise ValueError(f"features.columns lists {repeated} more than once")
            both = [c for c in self.exclude if c in self.columns]
            if both:  # exclude applies to "every numeric column", never to an explicit list
                raise ValueError(f"features.exclude names {both}, which features.columns "
                                 f"lists: remove {'it' if len(both) == 1 else 'them'} from "
                                 "features.columns (exclude only trims the columns taken when "
                                 "no list is given)")
        reserved = sorted(set(self.columns or []) & RESERVED)
        if reserved:
            raise ValueError(f"features.columns {reserved} are names the platform reserves "
                             f"({sorted(RESERVED)}); rename them in the file")
        if self.learn_ranges is not None and not self.learn_ranges > 0:
            raise ValueError(f"features.learn_ranges {self.learn_ranges} must be > 0 (spans "
                             "added on each side of the training range)")
        for name, (low, high) in self.ranges.items():
            if not low < high:
                raise ValueError(f"features.ranges[{name!r}]: low {low} is not below high {high}")
        return self


def _one() -> list[str | float]:
    return [1.0]


class LabelSpec(_Spec):
    """Known anomalies: none; a per-row column whose ``positive`` values mark an anomaly; or a
    windows file (CSV with ``start`` and ``end`` columns, inclusive, optionally ``entity`` or
    ``file`` naming whom a window belongs to) that marks every row inside a window."""

    kind: Literal["none", "column", "windows"] = "none"
    column: str | None = None
    positive: list[str | float] = Field(default_factory=_one)
    windows: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> LabelSpec:
        if self.kind == "column" and not self.column:
            raise ValueError("labels.kind 'column' needs labels.column (the 0/1 or "
                             "positive-valued column)")
        if self.kind == "windows" and not self.windows:
            raise ValueError("labels.kind 'windows' needs labels.windows (a CSV of start,end)")
        if self.kind == "column" and not self.positive:
            raise ValueError("labels.positive is empty; list the values that mark an anomaly")
        return self


class PartitionSpec(_Spec):
    """The dataset's daily partitions (UTC): the days its rows cover, ``end`` excluded."""

    start: str
    end: str | None = None

    @model_validator(mode="after")
    def _dates(self) -> PartitionSpec:
        for day in (self.start, *([self.end] if self.end else [])):
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"partitions: {day!r} is not a YYYY-MM-DD date") from None
        if self.end and self.end <= self.start:
            raise ValueError(f"partitions: end {self.end} is not after start {self.start}")
        return self


class DatasetSpec(_Spec):
    """How to read a declared dataset's files into the platform's row layout."""

    source: SourceSpec
    timestamp: TimestampSpec = TimestampSpec()
    entity: EntitySpec = EntitySpec()
    features: FeatureSpec = FeatureSpec()
    labels: LabelSpec = LabelSpec()
    # rows of one entity with the same timestamp: refused (naming the lines), or the last kept
    duplicates: Literal["refuse", "keep_last"] = "refuse"

    @model_validator(mode="after")
    def _no_overlap(self) -> DatasetSpec:
        used = {c for c in (self.timestamp.column, self.entity.column, self.labels.column) if c}
        clash = sorted(used & set(self.features.columns or []))
        if clash:
            raise ValueError(f"features.columns {clash} are also the timestamp, entity or "
                             "label column")
        grouped = {c for cols in self.features.groups.values() for c in cols}
        if self.features.columns is not None:
            unknown = sorted(grouped - set(self.features.columns))
            if unknown:
                raise ValueError(f"features.groups name {unknown}, which are not in "
                                 "features.columns")
        return self

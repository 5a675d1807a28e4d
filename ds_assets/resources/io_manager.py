"""Local artifact storage: Parquet for tables, JSON for reports, ONNX/npz for models.

Every write goes to a temp file and is renamed into place, so a crash never leaves a half-written
partition. Partitioned assets live at ``<base_dir>/<asset>/<partition>.<ext>``.
"""


import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from ds_assets.training.detectors import TrainedDetector
from ds_serving import jsonio
from ds_serving.atomic import atomic_write_bytes, atomic_write_with


@dataclass(frozen=True)
class OnnxGraph:
    """Serialized ONNX model bytes, stored as a ``.onnx`` file."""

    data: bytes


@dataclass(frozen=True)
class StoredTable:
    """A Parquet table passed by path instead of loaded: an asset that streams a day (10M rows
    would take gigabytes as a frame) asks for its input as ``StoredTable`` and returns one for
    a file it wrote, which the IO manager moves into place atomically."""

    path: Path


def stored_partition(table: StoredTable, partition: str) -> Path | None:
    """The stored file of another partition of the asset ``table`` was loaded from (the same
    ``<asset>/<partition>.parquet`` layout), or None where that partition is not stored."""
    path = Path(table.path).with_name(f"{partition}.parquet")
    return path if path.is_file() else None


def _place(path: Path, table: StoredTable) -> None:
    """Move a finished file into place: a rename where it can, else a copy then a rename."""
    src = Path(table.path)
    if src.resolve() == path.resolve():
        return
    try:  # readable first: a partial or corrupt file never replaces the stored partition
        pq.read_metadata(src)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others
        raise ValueError(f"{src}: not a complete Parquet file ({exc}); the stored {path.name} "
                         "is kept") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise

        def copy(tmp: Path) -> None:
            shutil.copyfile(src, tmp)

        atomic_write_with(path, copy)
        src.unlink()


@dataclass(frozen=True)
class _Codec:
    ext: str
    type_: type
    write: Callable[[Path, Any], None]
    read: Callable[[Path], Any]


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_with(path, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))


CODECS: tuple[_Codec, ...] = (
    _Codec("parquet", pd.DataFrame, _write_parquet, pd.read_parquet),
    _Codec("parquet", StoredTable, _place, StoredTable),
    _Codec(
        "json",
        dict,
        # numpy numbers stay numbers (jsonio); anything else JSON cannot hold, as its text
        lambda p, v: atomic_write_bytes(p, jsonio.dumps(v, indent=2, default=str).encode()),
        lambda p: json.loads(p.read_text("utf-8")),
    ),
    _Codec("onnx", OnnxGraph, lambda p, v: atomic_write_bytes(p, v.data),
           lambda p: OnnxGraph(p.read_bytes())),
    _Codec(
        "npz",
        TrainedDetector,
        lambda p, v: atomic_write_bytes(p, v.to_bytes()),
        lambda p: TrainedDetector.from_bytes(p.read_bytes()),
    ),
)


class MissingArtifactError(FileNotFoundError):
    pass


class PartitionFrames(Mapping[str, pd.DataFrame]):
    """Materialized partitions of an upstream asset, read from disk only when accessed.

    Lets a downstream asset depend on a whole partitioned asset (keeping lineage) while loading
    only the window of partitions it actually uses.
    """

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self._paths = dict(sorted(paths.items()))

    def __getitem__(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self._paths[key])

    def stored(self, key: str) -> StoredTable:
        """A partition's file, to stream or to find its neighbours by (``stored_partition``)."""
        return StoredTable(self._paths[key])

    def columns(self, key: str) -> list[str]:
        """A partition's column names, from its Parquet schema alone (no rows read)."""
        return list(pq.read_schema(self._paths[key]).names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _wants_stored_table(context: dg.InputContext) -> bool:
    try:
        return context.dagster_type.typing_type is StoredTable
    except dg.DagsterInvariantViolationError:  # a context built without a type (tests, tools)
        return False


def not_a_partition(partitions: dg.PartitionsDefinition, key: str) -> str | None:
    """Why ``key`` is not one of ``partitions``, naming those that exist; None when it is."""
    if partitions.has_partition_key(key):
        return None
    keys = partitions.get_partition_keys()
    span = f"{keys[0]}..{keys[-1]}" if keys else "none yet"
    open_ended = (isinstance(partitions, dg.TimeWindowPartitionsDefinition)
                  and partitions.end is None)  # time windows up to the last complete one
    why = (" (they end with the last complete one)"
           if open_ended and keys and key > keys[-1] else "")
    return f"{key!r} is not one of its partitions ({span}){why}"


def _refuse_outside_partitions(context: dg.InputContext | dg.OutputContext) -> None:
    """Fail when the run's partition key is not one of the asset's partitions (a run launched
    by hand for today: daily partitions end with the last complete day)."""
    if not context.has_partition_key:
        return
    try:
        partitions = context.asset_partitions_def
    except dg.DagsterInvariantViolationError:  # an unpartitioned asset
        return
    why = None if partitions is None else not_a_partition(partitions, context.partition_key)
    if why is not None:
        raise MissingArtifactError(
            f"asset {context.asset_key.to_user_string()!r}: partition {why}; launch the run for "
            "a partition in that range")


class LocalArtifactIOManager(dg.ConfigurableIOManager):
    """Stores asset values under ``base_dir`` with atomic writes."""

    base_dir: str

    def _stem(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        root = Path(self.base_dir).joinpath(*asset_key.path)
        return root / partition if partition is not None else root

    @staticmethod
    def _codec_for(value: Any) -> _Codec:
        for codec in CODECS:
            if isinstance(value, codec.type_):
                return codec
        raise TypeError(
            f"cannot store a {type(value).__name__}; supported: "
            + ", ".join(c.type_.__name__ for c in CODECS)
        )

    @staticmethod
    def _existing(stem: Path) -> tuple[Path, _Codec] | None:
        for codec in CODECS:
            path = stem.with_name(f"{stem.name}.{codec.ext}")
            if path.is_file():
                return path, codec
        return None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        _refuse_outside_partitions(context)  # nothing written for a day that is not a partition
        partition = context.partition_key if context.has_asset_partitions else None
        codec = self._codec_for(obj)
        stem = self._stem(context.asset_key, partition)
        path = stem.with_name(f"{stem.name}.{codec.ext}")
        codec.write(path, obj)
        meta: dict[str, Any] = {"path": dg.MetadataValue.path(str(path))}
        if isinstance(obj, pd.DataFrame):
            meta["rows"] = len(obj)
        elif isinstance(obj, StoredTable):
            meta["rows"] = pq.ParquetFile(path).metadata.num_rows
        context.add_output_metadata(meta)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        # a run for a day the partitions do not hold (today, launched by hand): Dagster
        # resolves it to no partitions, which read as an empty mapping and failed a type check
        _refuse_outside_partitions(context)
        # An unpartitioned consumer of a partitioned asset (a window of days) always gets a
        # mapping of partitions, even when the partitions definition holds a single day so far.
        if context.has_asset_partitions and (
            not context.has_partition_key or len(context.asset_partition_keys) != 1
        ):
            return self._load_partitions(context, key)
        partition = context.asset_partition_key if context.has_asset_partitions else None
        stem = self._stem(key, partition)
        found = self._existing(stem)
        if found is None:
            what = f"partition {partition} of asset" if partition else "asset"
            raise MissingArtifactError(
                f"{what} {key.to_user_string()!r} has not been materialized (nothing at "
                f"{stem}.*); materialize it first"
            )
        path, codec = found
        if _wants_stored_table(context):
            if codec.ext != "parquet":
                raise TypeError(f"{key.to_user_string()!r} is stored as .{codec.ext}, not a "
                                "Parquet table: declare the input with its own type")
            return StoredTable(path)
        return codec.read(path)

    def _load_partitions(self, context: dg.InputContext, key: dg.AssetKey) -> PartitionFrames:
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        paths: dict[str, Path] = {}
        missing: list[str] = []
        for partition in context.asset_partition_keys:
            path = self._stem(key, partition)
            parquet = path.with_name(f"{path.name}.parquet")
            if parquet.is_file():
                paths[partition] = parquet
            else:
                missing.append(partition)
        if missing and not allow_missing:
            raise MissingArtifactError(
                f"asset {key.to_user_string()!r} lacks partitions {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}; materialize them first"
            )
        return PartitionFrames(paths)

"""Each entity's last rows of a stored day, kept beside it when the day is scored.

The next day's scoring continues from them (a ``LeadIn``) instead of reading the day again: in a
day file sorted by host every row group holds some host's last rows, and reading them back cost
the next day's scoring 14-33 % more time (docs/benchmarks.md). Kept rows stand for the day only
while its file is the one they were kept from (same size, modification time, inode and Parquet
footer), hold at least the rows asked for and every column the model reads; otherwise the
caller reads the day itself, as before. A cache, never a source of truth: any doubt is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ds_assets.training.dataset_scoring import ENTITY, EntityTails
from ds_serving.atomic import atomic_path

METADATA_KEY = b"datasentinel.lead_in"
FOLDER = ".lead_in"  # beside the day's file; hidden, so nothing lists it as a partition
_FOOTER_BYTES = 1 << 20  # hash at most the last MiB (the footer names every column chunk)


def kept_path(source: str | os.PathLike[str]) -> Path:
    """Where the rows kept from ``source`` live."""
    source = Path(source)
    return source.parent / FOLDER / source.name


def file_stamp(source: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies one version of a file: take it before reading the file, so rows kept
    from it never vouch for a file that replaced it meanwhile."""
    source = Path(source)
    stat = source.stat()
    with open(source, "rb") as fh:
        fh.seek(max(0, stat.st_size - _FOOTER_BYTES))
        footer = hashlib.sha256(fh.read()).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino,
            "footer_sha256": footer}


def keep(tails: EntityTails, source: str | os.PathLike[str], stamp: dict[str, Any]) -> Path | None:
    """Write the rows ``tails`` kept from ``source`` (whose ``file_stamp`` was ``stamp`` when
    it was read) beside it, atomically; None when there were none."""
    table = tails.table()
    if table is None:
        return None
    meta = {"source": Path(source).name, "stamp": stamp, "entity_rows": tails.rows}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    path = kept_path(source)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def kept_for(source: str | os.PathLike[str], rows: int, features: Sequence[str]
             ) -> pa.Table | None:
    """The rows kept from ``source``, read, where they can stand for ``source``'s last
    ``rows`` rows of each entity with ``features``, else None (not kept, kept from another
    version of the file, too few rows, a column missing, unreadable). Read once and checked on
    what was read: a kept file that another run replaces meanwhile is never half-trusted."""
    path = kept_path(source)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[METADATA_KEY])
        if meta.get("stamp") != file_stamp(source) or int(meta.get("entity_rows", 0)) < rows:
            return None
        if (ENTITY in table.schema.names) != (ENTITY in pq.read_schema(source).names):
            return None
    except Exception:  # pyarrow raises ArrowInvalid, OSError and others: read the day instead
        return None
    return table if all(f in table.schema.names for f in features) else None

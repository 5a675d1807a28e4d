"""Where a bench writes its JSON: ``--out``, or a new timestamped file in ``bench/results``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def write_results(document: Any, stem: str, out: Path | None = None,
                  default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``document`` as indented JSON to ``out`` or ``results/<stem>-<UTC time>.json``,
    say where, and return the path."""
    out = out or RESULTS / f"{stem}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(document, indent=2, default=default) + "\n")
    print(f"results: {out}")
    return out

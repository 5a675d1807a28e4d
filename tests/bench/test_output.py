"""bench.output writes a bench's JSON where asked, or to a new timestamped file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import output


def test_results_go_where_asked_or_to_a_timestamped_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = tmp_path / "asked.json"
    assert output.write_results({"a": 1}, "stem", asked) == asked
    assert json.loads(asked.read_text()) == {"a": 1}
    monkeypatch.setattr(output, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    written = output.write_results({"x": np.float32(0.5)}, "my-bench", default=float)
    assert written.parent == tmp_path / "results"
    assert written.name.startswith("my-bench-") and written.suffix == ".json"
    assert json.loads(written.read_text()) == {"x": 0.5}

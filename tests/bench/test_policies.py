"""bench.policies: every flag policy timed on the same scores beside the graph's run."""

from __future__ import annotations

import json
from pathlib import Path

from bench.policies import POLICIES, main, run


def test_each_policy_is_timed_on_the_same_scores_beside_the_graph() -> None:
    result = run(rows=5_000, entities=3, repeats=2)
    assert set(result["policies"]) == {*POLICIES, "onnxruntime"}
    for r in result["policies"].values():
        assert len(r["seconds"]) == 2 and r["seconds_per_million_rows"] > 0
    assert result["policies"]["onnxruntime"]["vs_onnxruntime"] == 1.0


def test_main_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["--rows", "2000", "--repeats", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == 2000

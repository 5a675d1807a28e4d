"""Prometheus rules: valid, unit-tested with promtool, and naming only metrics the scorer has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ds_serving.metrics import ScorerMetrics

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture
def promtool() -> str:
    """promtool (Debian's prometheus package); CI sets DS_REQUIRE_PROMETHEUS so it cannot skip."""
    exe = shutil.which("promtool")
    if exe is None:
        message = "promtool not found (apt-get install prometheus)"
        if os.environ.get("DS_REQUIRE_PROMETHEUS"):
            pytest.fail(f"DS_REQUIRE_PROMETHEUS is set but {message}")
        pytest.skip(message)
    return exe


@pytest.mark.parametrize("command", [["check", "rules", "rules.yml"],
                                     ["test", "rules", "rules_test.yml"]])
def test_promtool_accepts_the_rules_and_their_unit_tests(promtool: str, command: list[str]) -> None:
    done = subprocess.run([promtool, *command], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_in_the_rules_is_exposed_by_the_scorer() -> None:
    registry = CollectorRegistry()
    ScorerMetrics(registry)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "info": ["_info"], "gauge": [""]}
    exposed = {family.name + suffix for family in registry.collect()
               for suffix in suffixes[family.type]}
    rules = yaml.safe_load((RULES_DIR / "rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bds_scorer_[a-z_]+", expr)}
    assert used and used <= exposed, sorted(used - exposed)
    runbook = (RULES_DIR.parents[1] / "docs" / "operations.md").read_text()
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for alert in alerts:  # each has words for a human and a runbook section that exists
        notes, name = alert["annotations"], alert["alert"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook"] == f"docs/operations.md#{name.lower()}"
        assert f"\n### {name}\n" in runbook, name

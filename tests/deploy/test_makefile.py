"""The Makefile from a checkout whose path has a space: nothing split, nothing written outside."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_instance_set_up_and_clean_stay_inside_a_path_with_spaces(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    checkout = parent / "ncx sp"
    checkout.mkdir(parents=True)
    for name in ("Makefile", "dagster.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, checkout / name)
    before = sorted(p.name for p in parent.iterdir())

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        # DS_DATA_DIR unset so the Makefile's default (inside the checkout) applies
        return subprocess.run(["make", "--no-print-directory", *args], cwd=checkout,
                              capture_output=True, text=True, check=False,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    done = make(".dagster_home/dagster.yaml")
    assert done.returncode == 0, done.stderr
    assert (checkout / ".dagster_home" / "dagster.yaml").read_text() == (
        REPO / "dagster.yaml").read_text()
    assert sorted(p.name for p in parent.iterdir()) == before  # no "ncx" beside the checkout
    # the recipes see the whole path: skab's dry run passes it quoted as one argument
    dry = make("-n", "skab")
    assert '--skab-dir "$SKAB_DIR"' in dry.stdout, dry.stdout
    (checkout / "data").mkdir()
    assert make("clean").returncode == 0
    assert not (checkout / ".dagster_home").exists() and not (checkout / "data").exists()
    assert sorted(p.name for p in parent.iterdir()) == before
    assert (checkout / "Makefile").exists()

"""The demo's drift episode with and without labels, side by side (issue 18's target).

Runs `python -m ds_assets.demo` twice on fresh instances (``--drift-labels labeled`` and
``unlabeled``) and compares the retrained models on the out-of-sample drifted day: the
false-alarm fall of the unlabeled retrain (target >= 10x) and its event recall on injected
anomalies against the labeled retrain's (target within 0.05). Labels of the unlabeled episode
are regenerated for this comparison only; training and promotion never see them.

    .venv/bin/python -m bench.drift_labels [--out bench/results/drift-labels-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def episode(labels: str, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"ds-drift-{labels}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DS_")}
        env.update(DAGSTER_HOME=str(home), DS_DATA_DIR=str(Path(tmp) / "data"))
        summary = Path(tmp) / "summary.json"
        subprocess.run([sys.executable, "-m", "ds_assets.demo", "--drift-labels", labels,
                        "--summary", str(summary), *extra], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        return dict(json.loads(summary.read_text()))


def compare(labeled: dict[str, Any], unlabeled: dict[str, Any]) -> dict[str, Any]:
    lab, unl = labeled["drift"]["out_of_sample"], unlabeled["drift"]["out_of_sample"]
    old, new = unl["old"]["false_alarm_rate"], unl["new"]["false_alarm_rate"]
    fall = old / new if new else float("inf")
    recall_gap = unl["new"]["injected_recall"] - lab["new"]["injected_recall"]
    return {
        "day": unl["day"],
        "unlabeled_gate": {k: unlabeled["drift"]["decision"][k]
                           for k in ("promote", "evidence", "reason")},
        "false_alarm_rate": {"old": old, "unlabeled_retrain": new,
                             "labeled_retrain": lab["new"]["false_alarm_rate"]},
        "false_alarm_fall_x": fall,
        "injected_recall": {"old": unl["old"]["injected_recall"],
                            "unlabeled_retrain": unl["new"]["injected_recall"],
                            "labeled_retrain": lab["new"]["injected_recall"]},
        "injected_recall_gap": recall_gap,
        "f1": {"old": unl["old"]["f1"], "unlabeled_retrain": unl["new"]["f1"],
               "labeled_retrain": lab["new"]["f1"]},
        "targets": {"false_alarm_fall_at_least_10x": fall >= 10,
                    "recall_within_0.05_of_labeled": abs(recall_gap) <= 0.05},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("demo_args", nargs="*", help="passed to the demo (e.g. --hosts 5)")
    args = parser.parse_args(argv)
    runs = {labels: episode(labels, args.demo_args) for labels in ("labeled", "unlabeled")}
    result = {"date": dt.date.today().isoformat(), "demo_args": args.demo_args,
              "runs": runs, "comparison": compare(runs["labeled"], runs["unlabeled"])}
    text = json.dumps(result, indent=2, default=str)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(json.dumps(result["comparison"], indent=2, default=str))
    return 0 if all(result["comparison"]["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

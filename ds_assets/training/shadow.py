"""Shadow scoring: a candidate that passed the gate scores the next days beside the champion,
without serving, before it is promoted.

The candidate waits in ``<models>/<name>/candidate.json`` (written atomically; the champion
pointer is untouched, so the scorer keeps serving the champion). Each day after the candidate's
training window, ``shadow_report`` scores the day with both models and compares flags, alerts,
drift and detection of injected anomalies. Once ``days`` such days exist, the verdict re-runs the
promotion gate (:func:`ds_assets.training.gate.judge`) on those days' rows, which neither model
was fitted on, and promotes or drops the candidate.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.drift import comparable_rows, compare
from ds_assets.monitoring.reference import load_reference
from ds_assets.telemetry.schema import ENTITY, LABEL
from ds_assets.training.gate import ModelRun, injected_test_rows, known_labels, measure
from ds_serving import bundle as bundles
from ds_serving import jsonio
from ds_serving.atomic import atomic_write_bytes

CANDIDATE_FILE = "candidate.json"


@dataclass(frozen=True)
class Candidate:
    """A bundle version waiting for its shadow days before promotion."""

    version: str
    champion_version: str  # the champion it was judged against
    after: str  # shadow days are the days after this one (its training window's last day)
    days: int
    gate: dict[str, Any]  # the gate's decision on its test split
    opened_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidate_file(models_dir: str | Path, name: str) -> Path:
    return bundles.model_dir(models_dir, name) / CANDIDATE_FILE


def open_candidate(models_dir: str | Path, name: str, version: str, champion_version: str,
                   after: str, days: int, gate: Mapping[str, Any]) -> Candidate:
    """Put ``version`` in shadow (replacing any earlier candidate: the newest one is judged)."""
    if days < 1:
        raise ValueError(f"shadow days={days} must be >= 1")
    candidate = Candidate(version, champion_version, after, days, dict(gate),
                          dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    atomic_write_bytes(candidate_file(models_dir, name),
                       jsonio.dumps(candidate.to_dict(), indent=2, default=str).encode())
    return candidate


def pending_candidate(models_dir: str | Path, name: str) -> Candidate | None:
    path = candidate_file(models_dir, name)
    if not path.is_file():
        return None
    return Candidate(**json.loads(path.read_text()))


def close_candidate(models_dir: str | Path, name: str) -> None:
    candidate_file(models_dir, name).unlink(missing_ok=True)


def _side(run: ModelRun, bundle_path: Path, raw: pd.DataFrame, numbers: dict[str, Any]
          ) -> dict[str, Any]:
    """One model's day: flags, alerts, drift against its own reference, injected detection."""
    bundle = bundles.load_bundle(bundle_path)
    rows = comparable_rows(raw)
    scores = run.scores[rows]
    flags = bundle.manifest.policy.raw_flags(
        scores, raw.loc[rows, ENTITY].to_numpy() if ENTITY in raw.columns else None)
    drift = compare(load_reference(bundle_path), raw[rows], scores, flags,
                    labeled=LABEL in raw.columns).summary()
    return {"version": run.version, "flag_rate": numbers["flag_rate"],
            "alerts": len(run.alerts_start),
            "alerts_per_entity_day": numbers["alerts_per_entity_day"],
            "drift_score": float(drift["drift_score"]), "drifted": bool(drift["drifted"]),
            "injected_event_recall": numbers["injected_event_recall"],
            "injected_pr_auc": numbers["injected_pr_auc"]}


def shadow_day(candidate_path: Path, champion_path: Path, raw: pd.DataFrame,
               before: pd.DataFrame | None = None) -> dict[str, Any]:
    """Both models on one day of raw rows (time-ordered within each entity), each continuing
    from the day ``before`` where given, as the day's scored_telemetry does."""
    features = list(bundles.load_bundle(candidate_path).manifest.features)
    injected = injected_test_rows(raw, features)
    known = known_labels(raw)
    anomalous = known & (raw[LABEL].to_numpy() == 1) if LABEL in raw else np.zeros(len(raw), bool)
    out: dict[str, Any] = {"rows": len(raw)}
    for side, path in (("candidate", candidate_path), ("champion", champion_path)):
        run = ModelRun.of(path, raw, injected, before)
        numbers = measure(run, raw, injected, np.isfinite(run.scores), anomalous)
        out[side] = _side(run, path, raw, numbers)
    return out


def shadow_rows(frames: Mapping[str, pd.DataFrame], days: list[str]) -> pd.DataFrame:
    """The shadow days' rows, time-ordered within each entity."""
    rows = pd.concat([frames[d] for d in days], ignore_index=True)
    order = [c for c in ("timestamp", "host_id") if c in rows.columns]
    return rows.sort_values(order, kind="stable", ignore_index=True)


def verdict(candidate_path: Path, champion_path: Path, rows: pd.DataFrame,
            before: pd.DataFrame | None = None) -> Any:
    """The promotion gate again, on the shadow days' rows (after both models' fit windows),
    both models continuing from the day ``before`` the first where given, as the days'
    shadow reports did."""
    from ds_assets.training.gate import judge

    features = list(bundles.load_bundle(candidate_path).manifest.features)
    injected = injected_test_rows(rows, features)
    return judge(ModelRun.of(candidate_path, rows, injected, before),
                 ModelRun.of(champion_path, rows, injected, before), rows, injected)

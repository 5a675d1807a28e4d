"""How the temporal AE's per-feature window errors become one score: mean (shipped) against max,
mean of the top two and a power mean (p = 3), on the three sources of ``bench.cross_dataset``.

Built to test one idea from the cached evaluation: an anomaly in one or two of eight features
(most of the generator's spikes, level shifts and stuck sensors) is diluted by the mean over
features as much as by the mean over the window. Each series is fitted once (temporal AE with
``error_scale: validation``, so features are in comparable units), scored with its feature
errors, and every reduction is judged on the same errors: VUS-PR, F1 at the shipped 0.999
quantile, each tuned on its own source (optimistic), and leave-one-source-out selection over
the reductions x the global flag policies without re-baselining. Feature errors are cached
under ``--cache`` (numbers only, .npz).

    .venv/bin/python -m bench.feature_reduce [--cache DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench import cross_dataset as cd
from bench.output import write_results

REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda e: e.mean(axis=1),
    "max": lambda e: e.max(axis=1),
    "top2": lambda e: np.sort(e, axis=1)[:, -2:].mean(axis=1) if e.shape[1] > 1 else e[:, 0],
    "p3": lambda e: np.cbrt((np.maximum(e, 0.0) ** 3).mean(axis=1)),
}


def feature_errors(args: tuple[cd.Series, Path]) -> Path:
    """The series' per-feature errors of its calibration and test rows (cached)."""
    from ds_assets.training.detectors import DetectorParams, train_detector
    from ds_assets.training.export import export_onnx
    from ds_serving.scoring import Scorer, score_rows

    series, folder = args
    path = folder / f"{series.source}-{series.fingerprint()}-temporal_ae-error_scale.npz"
    if path.is_file():
        return path
    fit, cal = series.fit_and_calibration()
    features = list(series.features)
    trained = train_detector(DetectorParams(family="temporal_ae", error_scale="validation"),
                             series.train[fit], series.train[cal], features,
                             train_entities=series.train_entities[fit],
                             val_entities=series.train_entities[cal], threads=1)
    scorer = Scorer(export_onnx(trained), features=features, threshold=float("inf"),
                    label="temporal_ae", window=trained.window, backend="cpu",
                    intra_op_threads=1)
    offset = 0 if series.continuous else int(series.train_entities.max()) + 1
    rows = np.concatenate([series.train, series.test])
    keys = np.concatenate([series.train_entities, series.test_entities + offset])
    order = np.argsort(keys, kind="stable")
    errors = np.empty((len(rows), len(features)), np.float32)
    errors[order] = score_rows(scorer, rows[order], keys[order], explain=True).feature_errors
    n = len(series.train)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, calibration=errors[:n][cal], test=errors[n:])
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("DS_DATA_DIR", "data"))
    parser.add_argument("--cache", type=Path, default=data / "eval" / "feature_errors")
    parser.add_argument("--skab-dir", type=Path, default=Path(os.environ.get(
        "SKAB_DIR", "../shared/datasets/skab")))
    parser.add_argument("--gutentag-dir", type=Path, default=Path(os.environ.get(
        "GUTENTAG_DIR", "../shared/datasets/gutentag")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    series = cd.load_sources(cd.SOURCES, args.skab_dir, args.gutentag_dir)
    with ProcessPoolExecutor(args.workers) as pool:
        paths = list(pool.map(feature_errors, [(s, args.cache) for s in series], chunksize=1))
    scored: dict[tuple[str, str, str], cd.Scored] = {}
    for s, path in zip(series, paths, strict=True):
        _, cal = s.fit_and_calibration()
        with np.load(path) as errors, np.errstate(invalid="ignore"):
            for name, reduce in REDUCTIONS.items():
                scored[(s.source, s.name, name)] = cd.Scored(
                    reduce(errors["calibration"]).astype(np.float64), s.train_entities[cal],
                    reduce(errors["test"]).astype(np.float64))
    policies = [p for p in cd.POLICIES if p.scope == "global" and p.smoothing.rebaseline is None]
    counts: dict[tuple[str, int, str], np.ndarray] = {}
    for name in REDUCTIONS:
        for i, policy in enumerate(policies):
            for s in series:
                flags = cd.policy_flags(scored[(s.source, s.name, name)], s.test_entities, policy)
                key = (name, i, s.source)
                counts[key] = counts.get(key, 0) + cd.series_counts(s, flags)

    def summary(name: str, i: int, source: str) -> dict[str, float]:
        return cd.summarize(counts[(name, i, source)])

    shipped = next(i for i, p in enumerate(policies) if p == cd.FlagPolicy("quantile", 0.999))
    result: dict[str, Any] = {"date": dt.date.today().isoformat(), "reductions": {}}
    for name in REDUCTIONS:
        row: dict[str, Any] = {}
        for source in cd.SOURCES:
            of_source = [s for s in series if s.source == source]
            tuned = max(range(len(policies)), key=lambda i: summary(name, i, source)["f1"])
            row[source] = {
                **cd.vus(of_source, scored, cd.DetectorConfig(name, "temporal_ae")),
                "shipped_policy": summary(name, shipped, source),
                "tuned": {"policy": policies[tuned].describe(),
                          **summary(name, tuned, source)},
            }
        generator = [s for s in series if s.source == "generator"]
        row["generator_kind_recall"] = cd.kind_recall(generator, lambda s, n=name: cd.policy_flags(
            scored[(s.source, s.name, n)], s.test_entities, policies[shipped]))
        result["reductions"][name] = row
        print(f"{name:5s} " + "  ".join(
            f"{src}: VUS-PR {row[src]['vus_pr']:.3f}, F1 at q 0.999 "
            f"{row[src]['shipped_policy']['f1']:.3f}, tuned {row[src]['tuned']['f1']:.3f}"
            for src in cd.SOURCES), flush=True)
    held_out = {}
    candidates = [(name, i) for name in REDUCTIONS for i in range(len(policies))]
    for held in cd.SOURCES:
        others = [s for s in cd.SOURCES if s != held]
        name, i = max(candidates, key=lambda c: np.mean([summary(*c, o)["f1"] for o in others]))
        held_out[held] = {"reduction": name, "policy": policies[i].describe(),
                          **summary(name, i, held)}
        print(f"held out {held}: {name}, {policies[i].describe()}: F1 "
              f"{held_out[held]['f1']:.3f}", flush=True)
    result["held_out"] = held_out
    result["mean_held_out_f1"] = float(np.mean([v["f1"] for v in held_out.values()]))
    print(f"mean held-out F1 {result['mean_held_out_f1']:.3f}")
    write_results(result, "feature-reduce", args.out, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`ds-dataset`: from a user's file to a declared dataset and its champion.

    ds-dataset scaffold data/pump.csv --name pump      # inspect, print, write the declaration
    ds-dataset materialize pump                        # ingest, check, train, score, alert

Both work on the declarations under ``ds_assets/defs/`` (the code location loads the same
ones, so `make dev` shows every run afterwards).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ds_assets.components import TelemetryDataset, load_declaration
from ds_assets.dataset import check_identifier
from ds_assets.job_outcome import (
    CHECKS_FAILED,
    failed_checks,
    interrupted,
    run_in_process,
    step_failures,
)
from ds_assets.notices import quiet_notices
from ds_assets.telemetry.sources import SourceError
from ds_assets.training.detectors import FAMILIES, UNIVARIATE_REFUSALS

DEFS_DIR = Path(__file__).parent / "defs"
COMPONENT_TYPE = f"{TelemetryDataset.__module__}.{TelemetryDataset.__name__}"
FAMILY_CHOICES = list(FAMILIES)


def _in_code_location(defs_dir: str | Path) -> bool:
    """Whether declarations there are the ones the code location (and so `make dev`) loads."""
    return Path(defs_dir).resolve() == DEFS_DIR.resolve()


def declaration_path(name: str, defs_dir: Path = DEFS_DIR) -> Path:
    return defs_dir / name / "defs.yaml"


def scaffold(args: argparse.Namespace) -> int:
    from ds_assets.telemetry.inspection import inspect_source
    from ds_assets.training import evaluated_default

    try:
        check_identifier(args.name)  # before anything is read or written: it names a folder
    except ValueError as exc:
        print(f"ds-dataset scaffold: --name: {exc}", file=sys.stderr)
        return 2
    target = declaration_path(args.name, Path(args.defs_dir))
    if target.exists() and not args.force:
        print(f"{target} exists; --force replaces it", file=sys.stderr)
        return 2
    found = inspect_source(
        args.path, args.name, timestamp=args.timestamp, entity=args.entity,
        label_column=args.label_column, windows=args.label_windows,
        exclude=args.exclude or [], timestamp_format=args.timestamp_format,
        timestamp_unit=args.timestamp_unit, timestamp_origin=args.timestamp_origin,
        label_positive=args.label_positive)
    family = args.family or evaluated_default.FAMILY
    # training would refuse it, after ingest and checks
    if len(found.features) == 1 and family in UNIVARIATE_REFUSALS:
        print(f"ds-dataset scaffold: --family {family} on the one feature "
              f"{found.features[0]!r}: {UNIVARIATE_REFUSALS[family]}; leave --family out "
              f"({evaluated_default.FAMILY} learns windows of the series)", file=sys.stderr)
        return 2
    attributes = found.attributes(family)
    if family == evaluated_default.FAMILY:  # the policy was chosen together with the family
        attributes["policy"] = dict(evaluated_default.POLICY)
    TelemetryDataset.model_validate(attributes)  # what the code location will load
    print(f"inspected {len(found.files)} file(s), {found.rows_sampled:,} rows sampled from "
          f"{found.files[0]}")
    print(f"  columns   : {', '.join(f'{c} ({t})' for c, t in found.columns.items())}")
    print(f"  timestamp : {found.timestamp}, {found.first} .. {found.last}")
    interval = f"{found.interval_seconds:g}s" if found.interval_seconds else "unknown"
    print(f"  interval  : {interval} (median), {found.gaps} gap(s) longer than twice it")
    print(f"  entity    : {found.entity or 'one entity (the dataset)'}")
    print(f"  features  : {found.features}")
    print(f"  labels    : {found.labels}")
    print(f"  partitions: {attributes['partitions']['start']} .. "
          f"{attributes['partitions']['end']} (daily, UTC, end excluded)")
    policy = attributes.get("policy")
    print(f"  detector  : {family}" + (f", policy {policy} (make eval's default)"
                                       if policy else ""))
    for note in found.notes:
        print(f"  note      : {note}")
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Declared by `ds-dataset scaffold {args.path} --name {args.name}`; edit freely.\n"
              "# Reference: docs/datasets.md\n")
    body = yaml.safe_dump({"type": COMPONENT_TYPE, "attributes": attributes}, sort_keys=False,
                          allow_unicode=True)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(header + body)
    tmp.replace(target)
    where = "" if _in_code_location(args.defs_dir) else f"--defs-dir {args.defs_dir} "
    print(f"\nwrote {target}\nnext: ds-dataset {where}materialize {args.name}")
    return 0


class _EpochLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"        {record.getMessage()}", flush=True)


def materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    from ds_assets.definitions import build_dataset_definitions
    from ds_assets.settings import Settings
    from ds_assets.telemetry.files import days_with_rows

    path = declaration_path(args.name, Path(args.defs_dir))
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(args.defs_dir).glob("*/defs.yaml"))
        print(f"no declaration {path}; declared: {known}. Write one with `ds-dataset "
              f"scaffold FILE --name {args.name}`", file=sys.stderr)
        return 2
    declared = load_declaration(path)
    settings = Settings.from_env()
    ds = declared.dataset(settings)
    if ds.spec is None:
        print(f"{args.name} is the synthetic generator's dataset; `make demo` runs it",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    staging = Path(ds.staging_dir)
    print(f"[stage] reading {ds.spec.source.path} into {staging}", flush=True)
    days = days_with_rows(ds.spec, staging, ds.name)
    outside = [d for d in days if d < ds.partitions_start
               or (ds.partitions_end is not None and d >= ds.partitions_end)]
    if outside:
        print(f"rows fall on day(s) {outside[:5]}{'...' if len(outside) > 5 else ''} outside "
              f"the declared partitions [{ds.partitions_start}, {ds.partitions_end}); widen "
              f"partitions in {path}", file=sys.stderr)
        return 2
    defs = build_dataset_definitions(ds, settings)
    instance = dg.DagsterInstance.get()

    def run(job: str, label: str, checks_may_fail: bool = False, **kwargs: Any) -> bool:
        """Run a job; False when only its blocking checks failed and ``checks_may_fail``,
        else any failure ends the command."""
        t0 = time.perf_counter()
        print(f"[{label}]", flush=True)
        result = run_in_process(defs.resolve_job_def(ds.scoped(job)), instance, args.log_level,
                                **kwargs)
        if not result.success:
            steps, checks = step_failures(result.all_events), failed_checks(result.all_events)
            if checks_may_fail and checks and all(CHECKS_FAILED in s for s in steps):
                print(f"  left out: {label}", *checks, sep="\n  ", file=sys.stderr)
                return False
            if interrupted(steps):
                print(f"  interrupted: {label}; what finished before it is kept, nothing "
                      "half-written; run materialize again", file=sys.stderr)
                raise SystemExit(130)
            print(f"  failed: {label}", *steps, *checks, sep="\n  ", file=sys.stderr)
            raise SystemExit(1)
        print(f"  done in {time.perf_counter() - t0:.1f}s", flush=True)
        return True

    print(f"{len(days)} day(s) with rows: {days[0]} .. {days[-1]}", flush=True)
    # a day whose data fails a blocking check is left out of training and scoring, as the
    # graph leaves it out; the other days go on
    failed = [day for day in days if not run("ingest_telemetry", f"ingest + checks {day}",
                                             checks_may_fail=True, partition_key=day)]
    if failed == days:
        print(f"every day failed its blocking checks (above); fix the source in {path} or its "
              "declared ranges and run materialize again", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(failed)} day(s) failed their blocking checks and are left out of training "
              f"and scoring: {failed}; fix them at the source and run materialize again to "
              "bring them in", file=sys.stderr)
    unlabeled = ds.spec.labels.kind == "none"
    if unlabeled:
        print(f"{args.name} declares no labels: training screens its rows for anomalies and "
              "the gate and report judge on anomalies injected into the test rows", flush=True)
    training_log = logging.getLogger("ds_assets.training")
    handler = _EpochLines()
    training_log.addHandler(handler)
    training_log.setLevel(logging.INFO)
    assets = settings.data_dir / "assets" / ds.key_prefix if ds.key_prefix else (
        settings.data_dir / "assets")
    try:
        window = {"n_partitions": len(days), "end_partition": days[-1]}
        run("train_detector", "train -> ONNX -> parity -> bundle -> evaluate -> champion",
            run_config={"ops": {ds.op_name("training_set"): {"config": window}}})
    except SystemExit:
        refused = _refused_first_model(assets / "champion.json")
        if refused:  # the failures above follow from it: say it last, where it is read
            print(f"  no champion: {refused}", file=sys.stderr)
        raise
    finally:
        training_log.removeHandler(handler)
    for day in days:
        if day not in failed:
            run("rescore_telemetry", f"score + drift + alerts {day}", partition_key=day)
    champion = json.loads((assets / "champion.json").read_text())
    report = json.loads((assets / "evaluation_report.json").read_text())
    print(f"\nDone in {time.perf_counter() - started:.1f}s.")
    trained = str(report["model"]["version"])
    print(*_champion_lines(champion, trained), sep="\n")
    print(f"  bundle   : {report['model']['path']}")
    print(f"  report   : {assets / 'evaluation_report.json'}"
          + (f", {report['report_html']}" if report.get("report_html") else ""))
    kind = "injected anomalies" if unlabeled else "anomalies"
    if report["n_anomalies"]:
        metrics = " ".join(f"{k}={report[k]:.3f}" for k in ("precision", "recall", "f1",
                                                             "pr_auc")
                           if isinstance(report.get(k), int | float))
    else:  # precision and recall of nothing to find are no figures
        metrics = ("(no anomaly in the test split, the last days: precision and recall "
                   "undefined; the report's false-alarm figures still hold)")
    print(f"  test v{trained}: rows={report['n_rows']:,} {kind}={report['n_anomalies']:,} "
          f"{metrics}")
    if failed:
        print(f"  left out : {failed} (failed blocking checks)")
    if _in_code_location(args.defs_dir):
        print("  UI       : `make dev`, then http://127.0.0.1:3000 (asset group "
              f"{ds.scoped('training')})")
    else:  # the code location loads ds_assets/defs/ only
        print(f"  UI       : move {path.parent} into {DEFS_DIR} to see it in `make dev`")
    return 0


def _champion_lines(champion: dict[str, Any], trained: str) -> list[str]:
    """Which model serves after this run (``champion.json``), and what became of the one it
    trained when that is another."""
    reason = champion["decision"]["reason"]
    if trained == str(champion["version"]):
        return [f"  champion : {champion['name']} v{trained} ({reason})"]
    lines = [f"  champion : {champion['name']} v{champion['version']}, still serving"]
    candidate = champion.get("candidate") or {}
    if str(candidate.get("version")) == trained:
        return [*lines, f"  trained  : v{trained}, passed the gate ({reason}); in shadow for "
                        f"the {candidate['days']} day(s) after {candidate['after']} before its "
                        "verdict"]
    return [*lines, f"  trained  : v{trained}, not promoted ({reason})"]


def _refused_first_model(decision_file: Path) -> str | None:
    """Why the gate made no champion of the first model, when that is what happened."""
    try:
        champion = json.loads(decision_file.read_text())
    except (OSError, ValueError):
        return None
    decision = champion.get("decision") or {}
    if champion.get("version") is None and decision.get("promote") is False:
        return str(decision.get("reason", ""))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ds-dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defs-dir", default=os.environ.get("DS_DEFS_DIR", str(DEFS_DIR)),
                        help="where declarations live (default: the code location's)")
    commands = parser.add_subparsers(dest="command", required=True)
    sc = commands.add_parser("scaffold", help="inspect a file, write its declaration")
    sc.add_argument("path", help="a CSV/Parquet file, a glob or a directory")
    sc.add_argument("--name", required=True, help="dataset name (letters, digits, _)")
    sc.add_argument("--timestamp", help="timestamp column (default: detected)")
    sc.add_argument("--timestamp-format", help="strftime format when not ISO 8601")
    sc.add_argument("--timestamp-unit", choices=["s", "ms", "us", "ns"],
                    help="numeric timestamps: their unit (epoch time, or a sample index)")
    sc.add_argument("--timestamp-origin",
                    help="numeric timestamps count from this date/time (default 1970-01-01)")
    sc.add_argument("--entity", help="entity column (default: detected, else per file)")
    sc.add_argument("--label-column", help="per-row label column (default: detected)")
    sc.add_argument("--label-windows", help="CSV of start,end[,entity|file] anomaly windows")
    sc.add_argument("--label-positive", nargs="+",
                    help="label values that mark an anomaly (default: 1, or words such as "
                         "anomaly, attack, fault in a text column)")
    sc.add_argument("--exclude", nargs="*", help="columns that are not features")
    sc.add_argument("--family", choices=FAMILY_CHOICES)
    sc.add_argument("--force", action="store_true", help="replace an existing declaration")
    mat = commands.add_parser("materialize", help="run a declared dataset end to end")
    mat.add_argument("name")
    mat.add_argument("--log-level", default="CRITICAL",
                     help="Dagster's own console log level (default: none of it, only this "
                          "command's summary with the steps' warnings and errors; ERROR adds "
                          "stack traces, DEBUG every step event)")
    args = parser.parse_args(argv)
    if args.command == "materialize" and "DAGSTER_HOME" not in os.environ:
        print("DAGSTER_HOME is not set; `make dataset NAME=...` sets it up", file=sys.stderr)
        return 2
    quiet_notices()
    try:
        return scaffold(args) if args.command == "scaffold" else materialize(args)
    except KeyboardInterrupt:  # between steps, or while reading the source
        print(f"ds-dataset {args.command}: interrupted; nothing half-written is kept, run it "
              "again", file=sys.stderr)
        return 130
    except (SourceError, ValueError) as exc:
        print(f"ds-dataset {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

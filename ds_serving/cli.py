"""``ds-scorer``: serve the champion model over gRPC, and the client side (score, replay, info).

Every flag has an environment variable (shown in ``--help``) so a container needs no arguments;
the bearer token is read from ``DS_SCORER_TOKEN`` or ``--token-file``, never from the command line
(where ``ps`` would show it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ds_serving import jsonio
from ds_serving.alerting import epoch_seconds
from ds_serving.client import DEFAULT_TARGET, ScorerClient, encode_request
from ds_serving.event_loop import run_event_loop
from ds_serving.groups import FeatureGroups
from ds_serving.telemetry import START_EPOCH, synthetic_batches

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


def _number(convert: Any, env: str | None, low: float | None = None,
            high: float | None = None) -> Any:
    """An argparse ``type`` for a number flag whose default comes from ``env``: argparse parses
    a string default with it too, so a bad environment value is an error naming the variable
    (exit 2), not a traceback, and only for the command that uses it; out-of-range values are
    refused (gRPC wraps port 70000 to 4464 silently)."""
    source = f"(the flag, or {env})" if env else "(the flag)"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if convert is int else 'a number'} "
                f"{source}") from None
        if value != value or (low is not None and value < low) or (
                high is not None and value > high):
            bounds = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is outside {bounds} {source}")
        return value
    return parse


def _choice(options: Sequence[str], env: str, upper: bool = False) -> Any:
    """An argparse ``type`` checking a choice: argparse checks ``choices`` on the command line
    only, so a bad environment default started a scorer that never serves."""
    def parse(text: str) -> str:
        text = text.upper() if upper else text
        if text not in options:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not one of {', '.join(options)} (the flag, or {env})")
        return text
    return parse


def _env_flag(name: str) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off/empty; anything else is
    an error rather than a guess (``DS_SCORER_TLS=0`` must not turn TLS on)."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise SystemExit(f"error: {name}={os.environ[name]!r}: use 1/true/yes/on or 0/false/no/off")


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        token = Path(args.token_file).read_text("utf-8").strip()
        if not token:
            raise SystemExit(f"error: token file {args.token_file} is empty")
        return token
    return os.environ.get("DS_SCORER_TOKEN") or None


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=_env("DS_SCORER_TARGET", DEFAULT_TARGET),
                   help="scorer address host:port (env DS_SCORER_TARGET; default %(default)s)")
    p.add_argument("--token-file", default=_env("DS_SCORER_TOKEN_FILE", None),
                   help="file holding the bearer token (env DS_SCORER_TOKEN_FILE, or the token "
                        "itself in DS_SCORER_TOKEN)")
    p.add_argument("--tls", action="store_true", default=_env_flag("DS_SCORER_TLS"),
                   help="use TLS with the system roots (env DS_SCORER_TLS=1)")
    p.add_argument("--tls-ca", default=_env("DS_SCORER_TLS_CA", None),
                   help="CA bundle that signed the server certificate (implies TLS)")
    p.add_argument("--tls-cert", default=_env("DS_SCORER_TLS_CLIENT_CERT", None),
                   help="client certificate for mutual TLS")
    p.add_argument("--tls-key", default=_env("DS_SCORER_TLS_CLIENT_KEY", None),
                   help="client private key for mutual TLS")
    p.add_argument("--server-name", default=_env("DS_SCORER_SERVER_NAME", None),
                   help="expected server certificate name when it differs from the target host")
    p.add_argument("--timeout", type=_number(float, None, 0.001, 86400),
                   default=30.0, help="per-RPC deadline in seconds (default %(default)s)")


def _client(args: argparse.Namespace) -> ScorerClient:
    if args.server_name and not (args.tls or args.tls_ca or args.tls_cert):
        raise ValueError("--server-name checks the server's certificate name: it needs TLS "
                         "(--tls or --tls-ca)")
    return ScorerClient(
        args.target, token=_token(args), timeout=args.timeout, tls=args.tls,
        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        server_name=args.server_name,
    )


def _add_column_flag(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--column", action="append", default=None, metavar="FEATURE=COLUMN",
                   help=f"read the model's FEATURE from the {what}file's COLUMN when their names "
                        "differ; repeat the flag or comma-separate pairs (--column "
                        "cpu=cpu_pct,memory=mem_used). host_id=COLUMN and timestamp=COLUMN name "
                        "the entity and time columns. `ds-scorer info` lists the model's features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds-scorer", description="DataSentinel gRPC scorer and its client."
    )
    parser.add_argument("--log-level", default=_env("DS_SCORER_LOG_LEVEL", "INFO"),
                        type=_choice(LOG_LEVELS, "DS_SCORER_LOG_LEVEL", upper=True),
                        help="DEBUG, INFO, WARNING, ERROR (env DS_SCORER_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the champion of a model, hot-reloading on promotion")
    s.add_argument("--models", default=_env("DS_MODELS_DIR", "data/models"),
                   help="models directory (env DS_MODELS_DIR; default %(default)s)")
    s.add_argument("--name", default=_env("DS_MODEL_NAME", "telemetry-ae"),
                   help="model name (env DS_MODEL_NAME; default %(default)s)")
    s.add_argument("--host", default=_env("DS_SCORER_HOST", "[::]"),
                   help="bind address (env DS_SCORER_HOST; default %(default)s)")
    s.add_argument("--port", type=_number(int, "DS_SCORER_PORT", 0, 65535),
                   default=_env("DS_SCORER_PORT", "50051"),
                   help="gRPC port, 0 = any free port (env DS_SCORER_PORT; default %(default)s)")
    s.add_argument("--metrics-port", type=_number(int, "DS_SCORER_METRICS_PORT", -1, 65535),
                   default=_env("DS_SCORER_METRICS_PORT", "8001"),
                   help="Prometheus /metrics port, -1 disables (env DS_SCORER_METRICS_PORT; "
                        "default %(default)s)")
    s.add_argument("--metrics-host", default=_env("DS_SCORER_METRICS_HOST", "0.0.0.0"),
                   help="bind address of the metrics endpoint (env DS_SCORER_METRICS_HOST; "
                        "default %(default)s)")
    s.add_argument("--backend", default=_env("DS_SCORER_BACKEND", "auto"),
                   type=_choice(BACKENDS, "DS_SCORER_BACKEND"), choices=BACKENDS,
                   help="execution backend (env DS_SCORER_BACKEND; default %(default)s)")
    s.add_argument("--threads", type=_number(int, "DS_SCORER_THREADS", 0, 1024),
                   default=_env("DS_SCORER_THREADS", "1"),
                   help="onnxruntime intra-op threads per graph run, 0 = one per core "
                        "(env DS_SCORER_THREADS; default %(default)s)")
    s.add_argument("--gil-switch-ms", type=_number(float, "DS_SCORER_GIL_SWITCH_MS"),
                   default=_env("DS_SCORER_GIL_SWITCH_MS", "0.5"),
                   help="how often a thread holding the GIL hands it over (Python's switch "
                        "interval): short, so a large request decoded on a worker thread "
                        "delays other clients' small calls by less (env "
                        "DS_SCORER_GIL_SWITCH_MS; default %(default)s; Python's own is 5)")
    s.add_argument("--workers", type=_number(int, "DS_SCORER_WORKERS", 0, 1024),
                   default=_env("DS_SCORER_WORKERS", "0"),
                   help="graph runs in parallel for large batches, 0 = one per core; with "
                        "--processes, each process's share of the cores, and none (runs on "
                        "the event loop thread) at one core or less (env DS_SCORER_WORKERS)")
    s.add_argument("--coalesce-ms", type=_number(float, "DS_SCORER_COALESCE_MS", 0, 10000),
                   default=_env("DS_SCORER_COALESCE_MS", "4.0"),
                   help="longest wait of a small request for others to share its graph run; "
                        "only while that pays (concurrent traffic), 0 = never wait (env "
                        "DS_SCORER_COALESCE_MS; default %(default)s)")
    s.add_argument("--max-rows", type=_number(int, "DS_SCORER_MAX_ROWS", 1, 100_000_000),
                   default=_env("DS_SCORER_MAX_ROWS", "65536"),
                   help="max rows per request message (env DS_SCORER_MAX_ROWS; default "
                        "%(default)s)")
    s.add_argument("--max-message-mb", type=_number(float, "DS_SCORER_MAX_MESSAGE_MB", 0.001, 2000),
                   default=_env("DS_SCORER_MAX_MESSAGE_MB", "64"),
                   help="max gRPC message size in MiB (env DS_SCORER_MAX_MESSAGE_MB; default "
                        "%(default)s)")
    s.add_argument("--max-entities", type=_number(int, "DS_SCORER_MAX_ENTITIES", 1, 1_000_000_000),
                   default=_env("DS_SCORER_MAX_ENTITIES", "100000"),
                   help="entities whose window/alert state is kept (least recent evicted)")
    s.add_argument("--max-entity-id-bytes",
                   type=_number(int, "DS_SCORER_MAX_ENTITY_ID_BYTES", 1, 1_000_000),
                   default=_env("DS_SCORER_MAX_ENTITY_ID_BYTES", "256"),
                   help="longest entity id in UTF-8 bytes; longer is INVALID_ARGUMENT (env "
                        "DS_SCORER_MAX_ENTITY_ID_BYTES; default %(default)s)")
    s.add_argument("--max-request-metadata-mb",
                   type=_number(float, "DS_SCORER_MAX_REQUEST_METADATA_MB", 0.001, 2000),
                   default=_env("DS_SCORER_MAX_REQUEST_METADATA_MB", "16"),
                   help="most MiB of entity ids and model name in one request message; "
                        "more is RESOURCE_EXHAUSTED (env DS_SCORER_MAX_REQUEST_METADATA_MB; "
                        "default %(default)s)")
    s.add_argument("--poll-interval", type=_number(float, "DS_SCORER_POLL_INTERVAL", 0.01, 86400),
                   default=_env("DS_SCORER_POLL_INTERVAL", "1.0"),
                   help="seconds between checks of champion.json (env DS_SCORER_POLL_INTERVAL)")
    s.add_argument("--grace", type=_number(float, "DS_SCORER_GRACE", 0, 86400),
                   default=_env("DS_SCORER_GRACE", "10.0"),
                   help="seconds in-flight RPCs get to finish on SIGTERM (env DS_SCORER_GRACE)")
    s.add_argument("--processes", type=_number(int, "DS_SCORER_PROCESSES", 1, 256),
                   default=_env("DS_SCORER_PROCESSES", "1"),
                   help="scorer processes sharing the port (SO_REUSEPORT); more than 1 is the "
                        "stateless tier: no entity ids, no per-entity state (env "
                        "DS_SCORER_PROCESSES; default %(default)s)")
    s.add_argument("--event-loop", default=_env("DS_SCORER_EVENT_LOOP", "auto"),
                   type=_choice(EVENT_LOOPS, "DS_SCORER_EVENT_LOOP"), choices=EVENT_LOOPS,
                   help="asyncio event loop implementation: auto = uvloop where installed "
                        "(cheaper per RPC), else the standard loop (env DS_SCORER_EVENT_LOOP)")
    s.add_argument("--tls-cert", default=_env("DS_SCORER_TLS_CERT", None),
                   help="server certificate (PEM) to serve TLS (env DS_SCORER_TLS_CERT)")
    s.add_argument("--tls-key", default=_env("DS_SCORER_TLS_KEY", None),
                   help="server private key (PEM) (env DS_SCORER_TLS_KEY)")
    s.add_argument("--tls-client-ca", default=_env("DS_SCORER_TLS_CLIENT_CA", None),
                   help="require client certificates signed by this CA: mutual TLS "
                        "(env DS_SCORER_TLS_CLIENT_CA)")
    s.add_argument("--token-file", default=_env("DS_SCORER_TOKEN_FILE", None),
                   help="require 'authorization: Bearer <token>' with the token in this file "
                        "(or the token itself in env DS_SCORER_TOKEN)")

    sc = sub.add_parser("score", help="score a CSV or Parquet file through the server")
    sc.add_argument("file", help="CSV or Parquet file with the model's feature columns (see "
                                 "`ds-scorer info`; --column maps differently named ones)")
    sc.add_argument("--out", help="write the scored rows here (.csv or .parquet)")
    sc.add_argument("--batch-rows", type=int, default=4096, help="rows per request")
    sc.add_argument("--entity-column", default=None,
                    help="entity id column (default: host_id when present)")
    sc.add_argument("--time-column", default=None,
                    help="timestamp column (default: timestamp when present)")
    sc.add_argument("--sep", default=",", help="CSV separator (SKAB files use ';')")
    _add_column_flag(sc)
    sc.add_argument("--explain", action="store_true", help="add the top contributing feature")
    _add_client_flags(sc)

    r = sub.add_parser("replay", help="stream synthetic telemetry or a CSV at a given rate")
    r.add_argument("--csv", default=None,
                   help="replay this CSV (or .parquet) file instead of synthetic telemetry")
    r.add_argument("--sep", default=",", help="CSV separator")
    r.add_argument("--entity-column", default=None, help="entity column of --csv")
    r.add_argument("--time-column", default=None, help="timestamp column of --csv")
    _add_column_flag(r, "--csv ")
    r.add_argument("--rate", type=float, default=1000.0,
                   help="rows per second, 0 = as fast as the server goes (default %(default)s)")
    r.add_argument("--rows", type=int, default=10_000, help="rows to send (default %(default)s)")
    r.add_argument("--batch", type=int, default=64, help="rows per stream message")
    r.add_argument("--entities", type=int, default=8, help="synthetic entities (hosts)")
    r.add_argument("--seed", type=int, default=0, help="synthetic telemetry seed")
    r.add_argument("--start", type=_epoch_arg, default=START_EPOCH,
                   help="time of the first synthetic row: epoch seconds or ISO-8601 (default "
                        "2026-11-01T00:00:00Z). The scorer refuses an entity's rows older than "
                        "its last one, so replaying to the same server again needs a later start")
    r.add_argument("--anomaly-rate", type=float, default=0.01,
                   help="chance per row that a synthetic anomaly burst starts")
    r.add_argument("--progress-every", type=float, default=2.0, help="seconds between lines")
    _add_client_flags(r)

    i = sub.add_parser("info", help="print the served model (with the features it needs, in "
                                    "order) and the server's health")
    _add_client_flags(i)
    return parser


def _epoch_arg(text: str) -> float:
    """Epoch seconds from ``1793491200`` or ``2026-11-01T00:00:00Z`` (naive times are UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither epoch seconds nor an ISO-8601 time such as 2026-11-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


# -- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from ds_serving.server import ServerConfig, serve

    if not 0 < args.gil_switch_ms <= 100:
        print(f"--gil-switch-ms {args.gil_switch_ms} (the flag, or DS_SCORER_GIL_SWITCH_MS): "
              "use a value in (0, 100] milliseconds", file=sys.stderr)
        return 2
    # measured (bench.scorer phase d, 2 cores): a 1-row probe's p99 beside the largest accepted
    # requests fell from 30-33 ms to 9-14 ms at 0.5 ms, with phases a-c unchanged
    sys.setswitchinterval(args.gil_switch_ms / 1000.0)

    config = ServerConfig(
        models_dir=Path(args.models),
        name=args.name,
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host,
        backend=args.backend,
        intra_op_threads=args.threads,
        workers=args.workers,
        coalesce_window=args.coalesce_ms / 1000,
        max_rows=args.max_rows,
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        max_entities=args.max_entities,
        max_entity_id_bytes=args.max_entity_id_bytes,
        max_request_metadata_bytes=int(args.max_request_metadata_mb * 1024 * 1024),
        poll_interval=args.poll_interval,
        grace=args.grace,
        tls_cert=_path_or_none(args.tls_cert),
        tls_key=_path_or_none(args.tls_key),
        tls_client_ca=_path_or_none(args.tls_client_ca),
        token=_token(args),
    )
    if args.processes != 1:
        from ds_serving.processes import serve_processes

        return serve_processes(config, args.processes, args.event_loop)
    run_event_loop(serve(config), args.event_loop)
    return 0


# -- client commands ---------------------------------------------------------------------------


def _read_table(path: str, sep: str) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas ships with the project
        raise SystemExit("error: reading CSV/Parquet needs pandas and pyarrow: pip install "
                         "'datasentinel[files]' (the slim scorer install leaves them out)") from exc
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {path} does not exist")
    if _is_parquet(path):
        return pd.read_parquet(p)
    return pd.read_csv(p, sep=sep)


def _is_parquet(path: str) -> bool:
    """Read or write as Parquet (else as CSV, whose rows are numbered by line)."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


ENTITY_COLUMN = "host_id"  # the entity id column read by default, and --column's name for it
TIME_COLUMN = "timestamp"  # likewise for the row times
_MAPPING_EXAMPLE = "--column FEATURE=COLUMN (repeat it, or comma-separate: --column a=x,b=y)"


class ScoreFileError(RuntimeError):
    """The server refused a batch of ``ds-scorer score``: which rows of the file, and why."""


class ColumnError(ValueError):
    """A file's columns do not fit the served model, or a ``--column`` mapping is wrong: a usage
    error (``main`` prints it and exits 2) whose message lists the model's features, the file's
    columns and the fix."""


def _parse_column_mapping(values: Sequence[str] | None) -> tuple[dict[str, str], list[str]]:
    """``--column`` values (each ``FEATURE=COLUMN`` or a comma-separated list of them) as
    {feature: column}, and what is wrong with them."""
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for value in values or []:
        items = [item.strip() for item in value.split(",")]
        if not any(items):
            problems.append(f"--column {value!r} is empty: give FEATURE=COLUMN")
            continue
        for item in filter(None, items):
            feature, eq, column = (part.strip() for part in item.partition("="))
            if not (eq and feature and column):
                problems.append(f"--column {item!r} is not FEATURE=COLUMN (e.g. cpu=cpu_pct)")
            elif feature in mapping:
                problems.append(f"--column maps {feature!r} twice ({mapping[feature]!r} and "
                                f"{column!r}): map each feature to one column")
            else:
                mapping[feature] = column
    return mapping, problems


def _names(names: Sequence[Any], most: int = 60) -> str:
    shown = [str(n) for n in names[:most]]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"{shown}{more}"


def _column_help(features: Sequence[str], frame: Any, path: str) -> str:
    return (f"\n  the served model needs feature columns (in order): {_names(features)}, and "
            f"reads an entity id ({ENTITY_COLUMN}) and a time ({TIME_COLUMN}) column when present"
            f"\n  {path} has columns: {_names(list(frame.columns))}"
            f"\n  name the file's column for each feature it calls differently: {_MAPPING_EXAMPLE}")


def _closest(name: str, candidates: Sequence[Any]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return match[0] if match else None


def _columns(
    frame: Any, features: Sequence[str], path: str, *, column_map: Sequence[str] | None = None,
    entity: str | None = None, time_col: str | None = None,
) -> tuple[Any, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The file's rows in the model's feature order, its entity ids and times (or None), read
    through the ``--column`` mappings; returns the frame too, with mapped columns under the
    model's names. Raises ColumnError when the columns do not fit."""
    import pandas as pd

    features = list(features)
    mapping, problems = _parse_column_mapping(column_map)
    targets = [*features, ENTITY_COLUMN, TIME_COLUMN]
    for feature, column in mapping.items():
        if feature not in targets:
            near = _closest(feature, targets)
            problems.append(f"--column {feature}={column}: the model has no feature {feature!r}"
                            + (f" (did you mean {near!r}?)" if near else ""))
        if column not in frame.columns:
            near = _closest(column, list(frame.columns))
            problems.append(f"--column {feature}={column}: {path} has no column {column!r}"
                            + (f" (did you mean {near!r}?)" if near else ""))
    for flag, given, name in (("--entity-column", entity, ENTITY_COLUMN),
                              ("--time-column", time_col, TIME_COLUMN)):
        if given and name in mapping:
            problems.append(f"{flag} {given} and --column {name}={mapping[name]} both name the "
                            f"{name} column: give one")
        if given and given not in frame.columns:
            problems.append(f"{flag} {given}: {path} has no column {given!r}")
    if problems:
        raise ColumnError(f"the columns of {path} do not fit the served model:\n  - "
                          + "\n  - ".join(problems) + _column_help(features, frame, path))
    if mapping:  # copy each COLUMN under its FEATURE name (a same-named column is replaced)
        sources = {feature: frame[column] for feature, column in mapping.items()}
        for feature, values in sources.items():
            frame[feature] = values
    missing = [f for f in features if f not in frame.columns]
    if missing:
        spare = [c for c in frame.columns if c not in features and c not in mapping.values()]
        pairs = ",".join(f"{f}={_closest(f, spare) or 'COLUMN'}" for f in missing)
        raise ColumnError(
            f"{path} lacks feature column(s) {missing} that the served model needs"
            + (" after the --column mappings" if mapping else "")
            + f"; if the file names them differently, map them: --column {pairs}"
            + _column_help(features, frame, path)
        )

    def named(feature: str) -> str:
        source = mapping.get(feature, feature)
        return repr(feature) + (f" (file column {source!r})" if source != feature else "")

    try:
        rows = frame[features].to_numpy(np.float32)
    except (ValueError, TypeError) as exc:
        bad = [named(f) for f in features if not pd.api.types.is_numeric_dtype(frame[f])]
        raise ColumnError(f"{path}: feature column(s) {', '.join(bad) or features} must hold "
                          f"numbers ({exc})" + _column_help(features, frame, path)) from None
    def at(row: int) -> str:  # as an editor numbers a CSV's lines (header = 1), else from 1
        return f"row {row + 1}" if _is_parquet(path) else f"line {row + 2}"

    bad = ~np.isfinite(rows)
    if bad.any():  # the server refuses them, after every row before them was scored
        r, j = (int(v[0]) for v in np.nonzero(bad))
        value = frame[features[j]].iloc[r]
        value = value.item() if isinstance(value, np.generic) else value
        raise ColumnError(f"{path}: {at(r)}: feature {named(features[j])} holds "
                          f"{value!r}, not a finite number (float32); "
                          f"{int(bad.any(axis=1).sum()):,} row(s) do; the server refuses them, "
                          "so fill or drop them first (nothing was sent)")
    entity = entity or (ENTITY_COLUMN if ENTITY_COLUMN in frame.columns else None)
    entities = None
    if entity:
        ids = frame[entity]
        missing = ids.isna().to_numpy()
        if missing.any():  # astype(str) made them one host called 'nan'
            r = int(np.flatnonzero(missing)[0])
            raise ColumnError(f"{path}: {at(r)}: entity column {named(entity)} is empty; "
                              f"{int(missing.sum()):,} row(s) are; each row needs its "
                              "entity's id (nothing was sent)")
        entities = ids.astype(str).to_numpy()
    time_col = time_col or (TIME_COLUMN if TIME_COLUMN in frame.columns else None)
    times = None
    if time_col:
        col = frame[time_col]
        try:
            if pd.api.types.is_numeric_dtype(col):
                times = col.to_numpy(np.float64)
            else:
                times = epoch_seconds(
                    pd.to_datetime(col, utc=True).dt.tz_localize(None).to_numpy())
        except (ValueError, TypeError) as exc:
            raise ColumnError(f"{path}: time column {named(time_col)} holds neither epoch "
                              f"seconds nor dates and times ({exc})") from None
    return frame, rows, entities, times


def _score_file(args: argparse.Namespace) -> int:
    if args.batch_rows < 1:
        raise SystemExit(f"error: --batch-rows must be >= 1, got {args.batch_rows}")
    frame = _read_table(args.file, args.sep)
    with _client(args) as client:
        info = client.info()
        features = list(info.features)
        frame, rows, entities, times = _columns(
            frame, features, args.file, column_map=args.column, entity=args.entity_column,
            time_col=args.time_column)
        n = len(rows)
        scores = np.full(n, np.nan, np.float32)
        flags = np.zeros(n, bool)
        top: list[str | None] = [None] * n
        groups = FeatureGroups.build(features, json.loads(info.feature_groups_json or "{}"))
        top_group = np.full(n, None, dtype=object)
        versions = np.full(n, info.version, dtype=object)  # the model that answered each row
        opened = closed = 0
        start = time.perf_counter()
        for lo in range(0, n, args.batch_rows):
            hi = min(n, lo + args.batch_rows)
            try:
                result = client.score(
                    rows[lo:hi],
                    None if entities is None else entities[lo:hi],
                    None if times is None else times[lo:hi],
                    explain=args.explain,
                )
            except grpc.RpcError as exc:  # its row numbers count within the batch
                details = exc.details() if hasattr(exc, "details") else str(exc)
                raise ScoreFileError(
                    f"{args.file}: the batch of file rows {lo + 1:,}..{hi:,} was refused: "
                    f"{details} (row numbers there count from the batch's first row); the "
                    f"{lo:,} rows before it were scored and nothing was written") from exc
            versions[lo:hi] = result.model_version
            scores[lo:hi] = result.scores
            flags[lo:hi] = result.flags
            if result.feature_errors is not None:
                errs = np.nan_to_num(result.feature_errors, nan=-1.0)
                best = np.argmax(errs, axis=1)
                for k, j in enumerate(best):
                    top[lo + k] = features[j] if not np.isnan(result.scores[k]) else None
                if groups.any_declared:
                    top_group[lo:hi] = groups.top(result.feature_errors)
            opened += sum(a.kind == "open" for a in result.alerts)
            closed += sum(a.kind == "close" for a in result.alerts)
        seconds = time.perf_counter() - start
    answered = sorted(set(versions.tolist()))  # a promotion mid-file: more than one
    summary = {
        "file": args.file, "model": info.name,
        "version": answered[0] if len(answered) == 1 else answered, "rows": n,
        "scored": int(np.count_nonzero(~np.isnan(scores))), "anomalies": int(flags.sum()),
        "alerts_opened": opened, "alerts_closed": closed,
        "rows_per_second": round(n / seconds) if seconds > 0 else None,
    }
    if args.out:
        keep = [c for c in ("timestamp", "host_id", "region", "project_id", "label",
                            "anomaly_type") if c in frame.columns]
        out = frame[keep].reset_index(drop=True)
        out["score"] = scores
        out["is_anomaly"] = flags
        if args.explain:
            out["top_feature"] = top
            if groups.any_declared:  # the declared feature group contributing most
                out["top_group"] = top_group
        out["model_version"] = versions
        from ds_serving.atomic import atomic_write_with

        if _is_parquet(args.out):
            atomic_write_with(args.out, lambda p: out.to_parquet(p, index=False))
        else:
            atomic_write_with(args.out, lambda p: out.to_csv(p, index=False))
        summary["out"] = args.out
    print(jsonio.dumps(summary))
    return 0


Batch = tuple[np.ndarray, Any, Any, Any]  # rows, entities, timestamps, injected (or None)


def _replay_batches(args: argparse.Namespace, info: Any) -> tuple[int, Iterator[Batch]]:
    """The rows to replay (``--rows``, or fewer when the file has fewer) and their batches;
    a file is read and checked before the first batch is sent."""
    if not args.csv:
        return args.rows, (
            (batch.rows, batch.entities, batch.timestamps, batch.injected)
            for batch in synthetic_batches(
                len(info.features), batch_rows=args.batch, n_entities=args.entities,
                seed=args.seed, start=args.start, anomaly_rate=args.anomaly_rate,
                mean=list(info.feature_mean), std=list(info.feature_std),
            )
        )
    frame = _read_table(args.csv, args.sep)
    _, rows, entities, times = _columns(
        frame, list(info.features), args.csv, column_map=args.column, entity=args.entity_column,
        time_col=args.time_column)

    def from_file() -> Iterator[Batch]:
        for lo in range(0, len(rows), args.batch):
            hi = lo + args.batch
            yield (rows[lo:hi], None if entities is None else entities[lo:hi],
                   None if times is None else times[lo:hi], None)

    return min(args.rows, len(rows)), from_file()


def _replay(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.rows < 1 or args.rate < 0:
        raise SystemExit("error: --batch and --rows must be >= 1 and --rate >= 0")
    if args.column and not args.csv:
        raise ColumnError("--column maps the columns of a --csv file; without --csv, replay "
                          "sends synthetic telemetry that already has the model's features")
    with _client(args) as client:
        info = client.info()
        sent_at: dict[str, float] = {}
        injected_by_id: dict[str, np.ndarray] = {}
        latencies: list[float] = []
        total, batches = _replay_batches(args, info)  # a file is read before the clock starts
        start = time.perf_counter()

        def requests() -> Iterator[Any]:
            sent = 0
            for i, (rows, entities, times, injected) in enumerate(batches):
                rows = rows[: total - sent]
                k = len(rows)
                if k == 0:
                    return
                if args.rate > 0:  # pace: row `sent` is due at sent / rate seconds
                    delay = start + sent / args.rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                rid = str(i)
                if injected is not None:
                    injected_by_id[rid] = injected[:k]
                sent_at[rid] = time.perf_counter()
                yield encode_request(
                    rows, None if entities is None else entities[:k],
                    None if times is None else times[:k], request_id=rid,
                )
                sent += k
                if sent >= total:
                    return

        done = anomalies = opened = closed = n_injected = injected_flagged = 0
        open_now: set[str] = set()
        last = start
        for result in client.score_stream(requests()):
            latencies.append(time.perf_counter() - sent_at.pop(result.request_id, start))
            done += len(result.scores)
            anomalies += int(result.flags.sum())
            injected_rows = injected_by_id.pop(result.request_id, None)
            if injected_rows is not None:
                n_injected += int(injected_rows.sum())
                injected_flagged += int((injected_rows & result.flags).sum())
            for alert in result.alerts:
                _print_alert(alert)
                if alert.kind == "open":
                    opened += 1
                    open_now.add(alert.entity)
                else:
                    closed += 1
                    open_now.discard(alert.entity)
            now = time.perf_counter()
            if now - last >= args.progress_every:
                last = now
                _progress(now - start, done, total, anomalies, open_now, latencies)
        elapsed = time.perf_counter() - start
        _progress(elapsed, done, total, anomalies, open_now, latencies)
        print(jsonio.dumps({
            "model": info.name, "version": info.version, "rows": done,
            "seconds": round(elapsed, 3), "rows_per_second": round(done / elapsed),
            "anomalies": anomalies, "alerts_opened": opened, "alerts_closed": closed,
            "open_alerts": len(open_now), **_percentiles(latencies),
            **({"injected_rows": n_injected, "injected_rows_flagged": injected_flagged}
               if not args.csv else {}),
        }))
    return 0


def _print_alert(alert: Any) -> None:
    print(f"alert {alert.kind:<5} {alert.entity} at {_when(alert.at)} "
          f"(opened {_when(alert.opened_at)}, peak score {alert.peak_score:.3g})", flush=True)


def _when(at: float) -> str:
    """Alert times are epoch seconds when rows carry timestamps, else entity row counts."""
    if at < 1e8:
        return f"row {at:.0f}"
    return _dt.datetime.fromtimestamp(at, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def _progress(elapsed: float, done: int, total: int, anomalies: int, open_now: set[str],
              latencies: list[float]) -> None:
    pct = _percentiles(latencies[-2000:])
    print(f"[{elapsed:7.1f}s] {done}/{total} rows ({100 * done / total:5.1f}%), "
          f"{done / max(elapsed, 1e-9):,.0f} rows/s, anomalies {anomalies}, open alerts "
          f"{len(open_now)}, latency p50 {pct.get('p50_ms', 0):.2f} ms "
          f"p99 {pct.get('p99_ms', 0):.2f} ms", file=sys.stderr, flush=True)


def _info(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        health = client.health()
        try:
            info = MessageToDict(client.info(), preserving_proto_field_name=True)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            # up but serving nothing: its health and the reason, not only an error line
            print(jsonio.dumps({"health": health, "reason": exc.details()}, indent=2))
            return 1
    print(jsonio.dumps({"health": health, **info}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands = {"serve": _serve, "score": _score_file, "replay": _replay, "info": _info}
    try:
        return commands[args.command](args)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"error: {getattr(code, 'name', code)}: {details}", file=sys.stderr)
        return 1
    except ScoreFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

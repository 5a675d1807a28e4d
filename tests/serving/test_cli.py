"""``ds-scorer`` end to end: serve (a real subprocess, SIGTERM drains), info, score, replay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ds_serving.bundle import load_bundle, promote
from ds_serving.cli import main
from ds_serving.client import ScorerClient, encode_request
from ds_serving.event_loop import run_event_loop
from ds_serving.proto import scoring_pb2
from ds_serving.scoring import Scorer, score_rows
from ds_serving.server import ServerConfig, ServerThread
from tests.support.serving import FEATURES, free_port, normal_rows, write_point_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    models = tmp_path / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    config = ServerConfig(models_dir=models, name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, token="tok")
    with ServerThread(config) as server:
        yield f"127.0.0.1:{server.port}", path


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_SCORER_TOKEN", "tok")


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def test_info(served: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target, path = served
    assert main(["info", "--target", target]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["health"] == "SERVING" and info["name"] == "ae"
    assert info["version"] == path.name and info["features"] == FEATURES
    # the features the model needs, in the order of its manifest (not sorted, not the file's)
    assert info["features"] == list(load_bundle(path).manifest.features) != sorted(FEATURES)


def test_info_of_a_server_serving_nothing_gives_its_health_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ServerConfig(models_dir=tmp_path / "models", name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, token="tok")
    with ServerThread(config) as server:
        assert main(["info", "--target", f"127.0.0.1:{server.port}"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["health"] == "NOT_SERVING"
    assert info["reason"].startswith("no model loaded yet: waiting for a valid ")


def test_score_csv_writes_the_same_scores_as_dataset_scoring(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, path = served
    rows = normal_rows(250, 3)
    rows[10:14] += 90
    frame = pd.DataFrame(rows, columns=FEATURES)
    frame.insert(0, "host_id", [f"h{i % 2}" for i in range(len(frame))])
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=len(frame), freq="min",
                                               tz="UTC"))
    source, out = tmp_path / "rows.csv", tmp_path / "scored.parquet"
    frame.to_csv(source, index=False)
    code = main(["score", str(source), "--target", target, "--out", str(out),
                 "--batch-rows", "64", "--explain"])
    assert code == 0
    summary = _json_out(capsys)
    scored = pd.read_parquet(out)
    reference = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"),
                           rows, frame["host_id"].to_numpy())
    np.testing.assert_allclose(scored["score"].to_numpy(), reference.scores, atol=1e-6)
    assert scored["is_anomaly"].tolist() == reference.flags.tolist()
    assert summary["rows"] == 250 and summary["anomalies"] == int(reference.flags.sum())
    assert summary["alerts_opened"] >= 1  # type: ignore[operator]
    assert set(scored["top_feature"].dropna()) <= set(FEATURES)

    frame.drop(columns=["cpu"]).to_csv(source, index=False)
    assert main(["score", str(source), "--target", target]) == 2
    assert "lacks feature column(s) ['cpu']" in capsys.readouterr().err


def test_replay_is_deterministic(served: tuple[str, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    target, _ = served
    args = ["replay", "--target", target, "--rows", "500", "--batch", "32", "--rate", "0",
            "--entities", "4", "--seed", "7", "--anomaly-rate", "0.05"]
    assert main(args) == 0
    first = _json_out(capsys)
    # the same hosts at the same times again would rewind their alert state: refused, clearly
    assert main(args) == 1
    assert "is earlier than its previous row" in capsys.readouterr().err
    # a later start replays the same rows (timestamps shifted) with the same scores and flags
    assert main([*args, "--start", "2026-12-01T00:00:00Z"]) == 0
    second = _json_out(capsys)
    assert first["rows"] == second["rows"] == 500
    assert first["anomalies"] == second["anomalies"] and first["anomalies"] > 0  # type: ignore[operator]
    assert "p99_ms" in first
    # the injected bursts are far outside the training distribution: the model flags most
    assert first["injected_rows"] > 0  # type: ignore[operator]
    assert first["injected_rows_flagged"] >= 0.5 * first["injected_rows"]  # type: ignore[operator]


def test_replay_of_a_parquet_file_shorter_than_rows_scores_it_all(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The producer replays a recorded file (CSV or Parquet): every row once, in order, with
    progress reaching 100 % of the file even when --rows asks for more, alert lines as they
    open, and the flags dataset scoring gives the same rows."""
    target, path = served
    rows = normal_rows(300, 5)
    rows[100:130] += 90  # one long burst on host h0: opens (and closes) an alert
    frame = pd.DataFrame(rows, columns=FEATURES)
    frame.insert(0, "host_id", "h0")
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=300, freq="min", tz="UTC"))
    recorded = tmp_path / "recorded.parquet"
    frame.to_parquet(recorded)
    assert main(["replay", "--target", target, "--csv", str(recorded), "--rows", "10000",
                 "--batch", "64", "--rate", "0", "--entity-column", "host_id",
                 "--time-column", "timestamp"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    reference = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"), rows,
                           frame["host_id"].to_numpy())
    assert summary["rows"] == 300 and summary["anomalies"] == int(reference.flags.sum())
    assert "300/300 rows (100.0%)" in err.splitlines()[-1]
    assert summary["alerts_opened"] == 1 and "alert open  h0 at 2026-11-01T01:" in out


def _telemetry(n: int, seed: int, hosts: str = "h") -> tuple[np.ndarray, pd.DataFrame]:
    """Rows with the model's column names, two hosts, a burst on rows 10-13 and 40-69."""
    rows = normal_rows(n, seed)
    rows[10:14] += 90
    rows[40:70] += 90
    frame = pd.DataFrame(rows, columns=FEATURES)
    frame.insert(0, "host_id", [f"{hosts}{i % 2}" for i in range(n)])
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC"))
    return rows, frame


# the file's names for the model's: cpu and host_id renamed, memory and latency swapped (so a
# mapping applied one column at a time, or not at all, gives other scores), timestamp renamed
RENAMED = {"cpu": "cpu_pct", "memory": "latency", "latency": "memory", "host_id": "machine",
           "timestamp": "ts"}
MAPPING = ["--column", "cpu=cpu_pct", "--column", "memory=latency,latency=memory",
           "--column", " host_id = machine ,timestamp=ts"]


def test_score_maps_the_files_column_names_to_the_models_features(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--column FEATURE=COLUMN`` reads a file that names the model's features (and the entity
    and time columns) differently: the same scores, flags and alerts as the same rows under the
    model's names, and --out carries the entity and times under the model's names."""
    target, path = served
    rows, frame = _telemetry(200, 11)
    named, renamed = tmp_path / "named.csv", tmp_path / "renamed.parquet"
    frame.to_csv(named, index=False)
    # other hosts (the server keeps each host's alert state; the same host again would rewind it)
    other = frame.assign(host_id=frame["host_id"].str.replace("h", "m"))
    other.rename(columns=RENAMED).to_parquet(renamed)
    out_named, out_renamed = tmp_path / "named-scored.csv", tmp_path / "renamed-scored.csv"
    assert main(["score", str(named), "--target", target, "--out", str(out_named),
                 "--batch-rows", "64"]) == 0
    expected = _json_out(capsys)
    assert main(["score", str(renamed), "--target", target, "--out", str(out_renamed),
                 "--batch-rows", "64", *MAPPING]) == 0
    got = _json_out(capsys)
    reference = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"), rows,
                           frame["host_id"].to_numpy())
    a, b = pd.read_csv(out_named), pd.read_csv(out_renamed)
    np.testing.assert_array_equal(b["score"].to_numpy(), a["score"].to_numpy())
    np.testing.assert_allclose(b["score"].to_numpy(), reference.scores, atol=1e-6)
    assert b["is_anomaly"].tolist() == a["is_anomaly"].tolist() == reference.flags.tolist()
    assert b["host_id"].tolist() == other["host_id"].tolist()
    assert b["timestamp"].tolist() == a["timestamp"].tolist()
    assert expected["alerts_opened"] == got["alerts_opened"] >= 1  # type: ignore[operator]
    for key in ("rows", "scored", "anomalies", "alerts_closed"):
        assert got[key] == expected[key], key


def test_replay_of_a_file_maps_its_column_names(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, path = served
    rows, frame = _telemetry(200, 12, hosts="r")
    renamed = tmp_path / "renamed.csv"
    frame.rename(columns=RENAMED).to_csv(renamed, sep=";", index=False)
    assert main(["replay", "--target", target, "--csv", str(renamed), "--sep", ";",
                 "--batch", "32", "--rate", "0", *MAPPING]) == 0
    out = capsys.readouterr().out
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    reference = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"), rows,
                           frame["host_id"].to_numpy())
    assert summary["rows"] == 200 and summary["anomalies"] == int(reference.flags.sum()) > 0
    # alerts name the mapped entity column's hosts, at the mapped time column's times
    assert "alert open  r0 at 2026-11-01T00:" in out


MODEL_NEEDS = "needs feature columns (in order): ['cpu', 'memory', 'latency', 'errors']"

BAD_MAPPINGS = [
    (["--column", "cpux=cpu_pct"], "the model has no feature 'cpux' (did you mean 'cpu'?)"),
    (["--column", "disk=cpu_pct"], "--column disk=cpu_pct: the model has no feature 'disk'"),
    (["--column", "cpu=cpu_pc"], "has no column 'cpu_pc' (did you mean 'cpu_pct'?)"),
    (["--column", "cpu=cpu_pct", "--column", "cpu=memory"],
     "--column maps 'cpu' twice ('cpu_pct' and 'memory'): map each feature to one column"),
    (["--column", "cpu=cpu_pct,cpu=cpu_pct"], "--column maps 'cpu' twice"),
    (["--column", "cpu:cpu_pct"], "--column 'cpu:cpu_pct' is not FEATURE=COLUMN"),
    (["--column", "=cpu_pct"], "--column '=cpu_pct' is not FEATURE=COLUMN"),
    (["--column", "cpu="], "--column 'cpu=' is not FEATURE=COLUMN"),
    (["--column", " , "], "--column ' , ' is empty: give FEATURE=COLUMN"),
    (["--column", "cpu=cpu_pct", "--column", "host_id=machine", "--entity-column", "machine"],
     "--entity-column machine and --column host_id=machine both name the host_id column"),
    (["--column", "cpu=cpu_pct", "--time-column", "when"], "has no column 'when'"),
    (["--column", "cpu=machine,host_id=machine"],
     "feature column(s) 'cpu' (file column 'machine') must hold numbers"),
]


@pytest.mark.parametrize("command", ["score", "replay"])
def test_each_bad_column_mapping_is_a_usage_error_that_says_what_to_fix(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A FEATURE the model lacks, a COLUMN the file lacks, a feature mapped twice, malformed
    text: exit 2, no traceback, the problem named with the model's features, the file's columns
    and the --column syntax."""
    target, _ = served
    _, frame = _telemetry(20, 13)
    source = tmp_path / "renamed.csv"
    frame.rename(columns={"cpu": "cpu_pct", "host_id": "machine"}).to_csv(source, index=False)
    base = (["score", str(source)] if command == "score"
            else ["replay", "--csv", str(source), "--rate", "0"])
    for flags, problem in BAD_MAPPINGS:
        assert main([*base, "--target", target, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and problem in err, (flags, err)
        assert MODEL_NEEDS in err and "Traceback" not in err, (flags, err)
        assert f"{source} has columns: ['timestamp', 'machine', 'cpu_pct', 'memory'" in err
        assert "--column FEATURE=COLUMN" in err, (flags, err)
    # every problem at once, not one per try
    assert main([*base, "--target", target, "--column", "cpux=cpu_pct,memory=mem,oops"]) == 2
    err = capsys.readouterr().err
    for problem in ("no feature 'cpux'", "has no column 'mem'", "'oops' is not FEATURE=COLUMN"):
        assert problem in err, err


def test_missing_features_without_a_mapping_suggest_one(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, _ = served
    _, frame = _telemetry(20, 14)
    source = tmp_path / "renamed.csv"
    frame.rename(columns={"cpu": "cpu_pct", "errors": "5xx"}).to_csv(source, index=False)
    for base in (["score", str(source)], ["replay", "--csv", str(source), "--rate", "0"]):
        assert main([*base, "--target", target]) == 2
        err = capsys.readouterr().err
        assert f"{source} lacks feature column(s) ['cpu', 'errors']" in err
        # a close name is suggested, else a placeholder
        assert "map them: --column cpu=cpu_pct,errors=COLUMN" in err
        assert MODEL_NEEDS in err and "Traceback" not in err
        assert f"{source} has columns: ['timestamp', 'host_id', 'cpu_pct', 'memory', " \
               "'latency', '5xx']" in err
        # a partial mapping names what is still missing
        assert main([*base, "--target", target, "--column", "cpu=cpu_pct"]) == 2
        err = capsys.readouterr().err
        assert "lacks feature column(s) ['errors'] that the served model needs after the " \
               "--column mappings" in err
        assert "--column errors=COLUMN" in err
    # --column reads a file's columns: replaying synthetic telemetry has none to map
    assert main(["replay", "--target", target, "--column", "cpu=cpu_pct"]) == 2
    assert "--column maps the columns of a --csv file" in capsys.readouterr().err


def test_replay_paces_at_the_requested_rate(served: tuple[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    target, _ = served
    start = time.perf_counter()
    assert main(["replay", "--target", target, "--rows", "200", "--batch", "20",
                 "--rate", "400"]) == 0
    assert time.perf_counter() - start >= 0.4  # 200 rows at 400 rows/s: ~0.5 s
    assert _json_out(capsys)["rows"] == 200


def test_client_errors_exit_nonzero(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    target, _ = served
    monkeypatch.setenv("DS_SCORER_TOKEN", "wrong")
    assert main(["info", "--target", target]) == 1
    assert "error: UNAUTHENTICATED" in capsys.readouterr().err



@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_serve_drains_in_flight_streams_on_sigterm(tmp_path: Path, event_loop: str) -> None:
    models = tmp_path / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    port = free_port()
    env = {**os.environ, "DS_SCORER_TOKEN": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "serve", "--models", str(models), "--name",
         "ae", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
         "--grace", "10", "--event-loop", event_loop], env=env, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = ScorerClient(f"127.0.0.1:{port}", timeout=5)
        deadline = time.time() + 60
        while True:
            try:
                if client.health() == "SERVING":
                    break
            except Exception:
                pass
            assert time.time() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        go_on = threading.Event()

        def messages() -> Iterator[scoring_pb2.ScoreRequest]:
            yield encode_request(normal_rows(2), request_id="before")
            go_on.wait(20)
            yield encode_request(normal_rows(2), request_id="after-sigterm")

        stream = client.score_stream(messages())
        assert next(stream).request_id == "before"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still draining the open stream
        go_on.set()
        assert next(stream).request_id == "after-sigterm"
        assert list(stream) == []
        assert proc.wait(15) == 0
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert "draining in-flight requests" in stderr
    assert f"serving ae v{path.name}" in stderr
    assert f"event loop: {event_loop}" in stderr


def test_event_loop_choice_errors_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(ValueError, match="must be auto, uvloop or asyncio"):
        run_event_loop(coro, "trio")
    coro.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    coro = nothing()
    with pytest.raises(ValueError, match="uvloop is not installed"):
        run_event_loop(coro, "uvloop")
    coro.close()
    ran: list[str] = []

    async def record() -> None:
        ran.append(type(asyncio.get_running_loop()).__module__)

    run_event_loop(record(), "auto")  # falls back to the standard loop
    assert ran == ["asyncio.unix_events"]


@pytest.mark.parametrize(("field", "value", "match"), [
    ("poll_interval", 0.0, "poll_interval must be > 0"),
    ("max_entities", 0, "max_entities must be >= 1"),
    ("workers", -1, "workers and intra_op_threads must be >= 0"),
    ("grace", -1.0, "grace must be >= 0"),
    ("coalesce_window", -0.001, "coalesce window must be 0-1000 ms, got -1 ms"),
])
def test_server_config_names_a_value_that_cannot_work(
    tmp_path: Path, field: str, value: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ServerConfig(models_dir=tmp_path, name="ae", **{field: value})  # type: ignore[arg-type]


def test_bad_client_values_are_named(served: tuple[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target, _ = served
    source = tmp_path / "rows.csv"
    pd.DataFrame(normal_rows(3), columns=FEATURES).to_csv(source, index=False)
    with pytest.raises(SystemExit, match="--batch-rows must be >= 1, got 0"):
        main(["score", str(source), "--target", target, "--batch-rows", "0"])
    # DS_SCORER_TLS=0 means no TLS (it used to mean yes: any non-empty string was true)
    monkeypatch.setenv("DS_SCORER_TLS", "0")
    assert main(["info", "--target", target]) == 0
    monkeypatch.setenv("DS_SCORER_TLS", "maybe")
    with pytest.raises(SystemExit, match=r"DS_SCORER_TLS='maybe': use 1/true/yes/on"):
        main(["info", "--target", target])


def test_serve_refuses_a_gil_switch_interval_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys as _sys

    before = _sys.getswitchinterval()
    assert main(["serve", "--models", str(tmp_path), "--gil-switch-ms", "0"]) == 2
    assert ("--gil-switch-ms 0.0 (the flag, or DS_SCORER_GIL_SWITCH_MS): use a value in (0, 100] "
            "milliseconds") in capsys.readouterr().err
    assert _sys.getswitchinterval() == before  # nothing changed before the refusal


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"DS_SCORER_PORT": "abc"}, [], r"argument --port: 'abc' is not an integer \(the flag, or "
                                    r"DS_SCORER_PORT\)"),
    ({"DS_SCORER_BACKEND": "gpu"}, [], r"argument --backend: 'gpu' is not one of auto, "
                                       r"tensorrt, cuda, cpu \(the flag, or DS_SCORER_BACKEND\)"),
    ({}, ["--port", "70000"], r"argument --port: '70000' is outside 0\.\.65535"),
    ({}, ["--metrics-port", "70000"], r"argument --metrics-port: '70000' is outside -1\.\.65535"),
    ({}, ["--max-message-mb", "2048"], r"argument --max-message-mb: '2048' is outside"),
    ({}, ["--threads", "100000"], r"argument --threads: '100000' is outside 0\.\.1024"),
    ({"DS_SCORER_LOG_LEVEL": "verbose"}, [], r"argument --log-level: 'VERBOSE' is not one of "
                                             r"DEBUG, INFO"),  # was INFO, silently
])
def test_serve_refuses_a_bad_number_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    env: dict[str, str], args: list[str], message: str,
) -> None:
    """Environment defaults were converted while the parser was built (a traceback for every
    command, --help included), --backend's choices were not checked for them (a scorer that
    never serves), and ports or sizes out of range were wrapped (70000 served on 4464) or
    crashed in gRPC."""
    import re

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--models", "/nonexistent", *args])
    assert exited.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    monkeypatch.setenv("DS_SCORER_PORT", "abc")  # a serve variable never breaks info
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    assert "usage: ds-scorer info" in capsys.readouterr().out


def test_a_client_certificate_without_its_key_is_an_error_not_an_abort(tmp_path: Path) -> None:
    """gRPC's C core aborted the interpreter (SIGABRT) for a client cert without a key; a key
    without a cert was ignored and the client connected in plaintext."""
    from ds_serving.client import make_channel

    cert = tmp_path / "cert.pem"
    cert.write_text("not read")
    for kwargs in ({"tls_cert": str(cert)}, {"tls_key": str(cert)}):
        with pytest.raises(ValueError, match="mutual TLS needs both a client certificate and "
                                             "its key"):
            make_channel("127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


def test_an_explain_answer_larger_than_the_request_limit_is_still_sent(tmp_path: Path) -> None:
    """The send limit equalled the request limit: an explain answer (scores, flags and every
    feature error) outgrows its request, so a request under the limit was scored, its state
    committed, and the answer refused with RESOURCE_EXHAUSTED, which promises no state
    changed."""
    models = tmp_path / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    limit = 64 * 1024
    config = ServerConfig(models_dir=models, name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, max_message_bytes=limit)
    n = int(limit * 0.9) // (4 * len(FEATURES))  # the request fits, its answer does not
    with ServerThread(config) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", max_message_bytes=limit)
        result = client.score(normal_rows(n), explain=True)
    assert len(result.scores) == n and result.feature_errors is not None
    assert result.feature_errors.shape == (n, len(FEATURES))


def test_client_flags_that_cannot_work_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout 0 gave a bare DEADLINE_EXCEEDED; --server-name without TLS was ignored."""
    with pytest.raises(SystemExit) as exited:
        main(["info", "--timeout", "0"])
    assert exited.value.code == 2
    assert "argument --timeout: '0' is outside 0.001..86400 (the flag)" in capsys.readouterr().err
    assert main(["info", "--target", "127.0.0.1:1", "--server-name", "scorer"]) == 2
    assert "--server-name checks the server's certificate name: it needs TLS" in (
        capsys.readouterr().err)


def test_score_refuses_a_file_the_server_would_refuse_halfway_before_sending_any_row(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN at file line 22 was sent in the first batch and refused by the server as 'row
    20' of it; an empty id became one host 'nan'. Both are named by line, nothing is sent, so
    the fixed file then scores (no host of it is ahead of its rows on the server)."""
    target, _ = served
    frame = pd.DataFrame(normal_rows(100, 4), columns=FEATURES)
    frame.insert(0, "host_id", [f"h{i % 2}" for i in range(len(frame))])
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=len(frame), freq="min",
                                               tz="UTC"))
    source = tmp_path / "rows.csv"
    broken = frame.copy()
    broken.loc[20, "cpu"] = np.nan
    broken.to_csv(source, index=False)
    assert main(["score", str(source), "--target", target, "--batch-rows", "16"]) == 2
    assert ("rows.csv: line 22: feature 'cpu' holds nan, not a finite number (float32); 1 "
            "row(s) do") in capsys.readouterr().err
    broken = frame.astype({"host_id": object})
    broken.loc[[5, 9], "host_id"] = None
    broken.to_csv(source, index=False)
    assert main(["score", str(source), "--target", target]) == 2
    assert ("rows.csv: line 7: entity column 'host_id' is empty; 2 row(s) are"
            in capsys.readouterr().err)
    frame.to_csv(source, index=False)
    assert main(["score", str(source), "--target", target, "--batch-rows", "16"]) == 0
    assert _json_out(capsys)["rows"] == 100


def test_a_batch_the_server_refuses_is_named_by_its_rows_in_the_file(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, _ = served
    frame = pd.DataFrame(normal_rows(40, 5), columns=FEATURES)
    frame.insert(0, "host_id", "h0")
    times = pd.date_range("2026-11-01", periods=len(frame), freq="min", tz="UTC").to_series()
    times.iloc[25] = times.iloc[0]  # back in time, in the second batch
    frame.insert(0, "timestamp", times.to_numpy())
    frame.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["score", str(tmp_path / "rows.csv"), "--target", target,
                 "--batch-rows", "16"]) == 1
    said = capsys.readouterr().err
    assert "rows.csv: the batch of file rows 17..32 was refused: " in said
    assert "the 16 rows before it were scored and nothing was written" in said

"""The stateless multi-process tier (``ds-scorer serve --processes N``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from ds_serving.bundle import load_bundle, promote
from ds_serving.client import ScorerClient
from ds_serving.processes import process_configs
from ds_serving.scoring import Scorer
from ds_serving.server import ServerThread
from tests.support.serving import (
    free_port,
    model_loaded,
    normal_rows,
    server_config,
    status_counts,
    write_point_bundle,
)

ROOT = Path(__file__).resolve().parents[2]


def _free_consecutive_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free right now (each process of a
    ``--processes`` scorer serves its metrics on ``--metrics-port + i``)."""
    for _ in range(100):
        first = free_port()
        sockets = []
        try:
            for offset in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def test_process_configs_share_the_port_and_keep_no_state(tmp_path: Path) -> None:
    base = server_config(tmp_path, port=50051, metrics_port=8001)
    assert process_configs(base, 1) == [base]
    configs = process_configs(base, 3)
    assert [c.metrics_port for c in configs] == [8001, 8002, 8003]
    assert all(c.port == 50051 and c.reuse_port and c.stateless for c in configs)
    assert not base.reuse_port and not base.stateless
    with pytest.raises(ValueError, match="needs a fixed --port"):
        process_configs(server_config(tmp_path, port=0), 2)
    with pytest.raises(ValueError, match=">= 1"):
        process_configs(base, 0)


def test_process_configs_split_the_cores_between_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auto workers: each process's share of the cores as threads, and no thread hop at all
    (large runs on the event loop) once a process has a core or less; explicit workers stay."""
    base = server_config(tmp_path, port=50051)
    assert not base.inline_runs and base.workers == 0
    monkeypatch.setattr("ds_serving.processes.usable_cores", lambda: 2)
    assert all(c.inline_runs for c in process_configs(base, 2))
    assert all(c.inline_runs for c in process_configs(base, 3))
    monkeypatch.setattr("ds_serving.processes.usable_cores", lambda: 8)
    assert [(c.inline_runs, c.workers) for c in process_configs(base, 2)] == [(False, 4)] * 2
    explicit = server_config(tmp_path, port=50051, workers=1)
    assert [(c.inline_runs, c.workers) for c in process_configs(explicit, 2)] == [(False, 1)] * 2
    assert process_configs(base, 1) == [base]


def test_stateless_scorer_refuses_entity_ids_and_stateful_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    promote(models, "ae", write_point_bundle(models).name)
    with ServerThread(server_config(models, stateless=True)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        assert len(client.score(normal_rows(3)).scores) == 3  # stateless rows are served
        with pytest.raises(grpc.RpcError) as info:
            client.score(normal_rows(2), entities=["h1", "h2"])
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "--processes 1" in info.value.details()  # type: ignore[attr-defined]
        client.close()

    smoothed = tmp_path / "smoothed"
    promote(smoothed, "ae", write_point_bundle(smoothed, smoothing={"k": 2, "n": 3}).name)
    thread = ServerThread(server_config(smoothed, stateless=True, poll_interval=3600))
    server = thread.start()
    try:
        assert server.runtime is None
        assert server.last_failure is not None
        assert "2-of-3 flag smoothing" in server.last_failure
        assert "--processes 1" in server.last_failure
        refusals = server.metrics.reload_failures
        assert refusals.labels("stateful_model")._value.get() == 1
    finally:
        thread.stop()


def test_processes_share_one_port_and_stop_together_on_sigterm(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    port, metrics_port = free_port(), _free_consecutive_ports(2)
    while port in (metrics_port, metrics_port + 1):
        metrics_port = _free_consecutive_ports(2)
    env = {**os.environ, "DS_SCORER_TOKEN": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "serve", "--models", str(models), "--name",
         "ae", "--host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1",
         "--metrics-port", str(metrics_port), "--processes", "2", "--grace", "5"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    rows = normal_rows(5, seed=3)
    expected = Scorer.from_bundle(load_bundle(path), backend="cpu").score(rows).scores
    try:
        deadline = time.time() + 60
        while True:  # both processes up, each with its model (its own metrics endpoint says)
            try:
                if not all(model_loaded(metrics_port + i) for i in (0, 1)):
                    raise RuntimeError("a process has no model yet")
                probe = ScorerClient(f"127.0.0.1:{port}", timeout=5)
                ready = probe.health() == "SERVING"
                probe.close()
                if ready:
                    break
            except Exception:
                pass
            if proc.poll() is not None:
                pytest.fail(f"scorer exited with {proc.returncode}: {proc.communicate()[1]}")
            assert time.time() < deadline, "scorer did not start within 60 s"
            time.sleep(0.2)
        connections = 24
        got = []
        for _ in range(connections):  # a new channel is a new connection: the kernel spreads
            client = ScorerClient(f"127.0.0.1:{port}", timeout=10)
            got.append(client.score(rows).scores)
            client.close()
        for scores in got[1:]:
            np.testing.assert_array_equal(scores, got[0])
        np.testing.assert_allclose(got[0], expected, rtol=1e-6)
        per_process = [status_counts(metrics_port + i, "Score").get("OK", 0) for i in (0, 1)]
        assert sum(per_process) == connections
        assert min(per_process) > 0, per_process  # 24 connections all on one: p = 2**-23
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert "started 2 scorer processes" in stderr
    assert stderr.count("scorer stopped") == 2
    assert stderr.count("start-up objects frozen") == 2


def test_the_processes_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """After kill -9 of the supervisor its children kept serving the port, beside those of the
    next supervisor started on it."""
    import re

    models = tmp_path / "models"
    promote(models, "ae", write_point_bundle(models).name)
    env = {**os.environ, "DS_SCORER_TOKEN": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "serve", "--models", str(models), "--name",
         "ae", "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "-1",
         "--processes", "2"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        pids: list[int] = []
        assert proc.stderr is not None
        for line in proc.stderr:  # "started 2 scorer processes on port P (pids [a, b])"
            found = re.search(r"started 2 scorer processes .* \(pids \[(\d+), (\d+)\]\)", line)
            if found:
                pids = [int(found.group(1)), int(found.group(2))]
                break
        assert pids, "the supervisor never reported its processes"
        proc.kill()
        proc.wait(10)

        def alive(pid: int) -> bool:
            try:
                state = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                return False
            return "State:\tZ" not in state

        deadline = time.time() + 30
        while any(alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in pids), pids
    finally:
        if proc.poll() is None:
            proc.kill()

"""Coalescing of small graph runs: grouping, per-request slices, adaptivity, failures, and the
live server answering concurrent single-row requests from shared runs with unchanged scores."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ds_serving.client import ScorerClient
from ds_serving.coalescing import RunCoalescer
from ds_serving.scoring import Scorer, score_rows
from ds_serving.server import ServerThread
from tests.support.models import dense_autoencoder
from tests.support.serving import (
    FEATURES,
    MEAN,
    STD,
    normal_rows,
    server_config,
    write_point_bundle,
)

F = len(FEATURES)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


class CountingScorer:
    """A real scorer that records the batch size of every graph run."""

    def __init__(self, fail: bool = False) -> None:
        model = dense_autoencoder(F, (8, 2), mean=MEAN, std=STD, seed=0)
        self.inner = Scorer(model, features=FEATURES, threshold=1.0, backend="cpu")
        self.batches: list[int] = []
        self.fail = fail

    def run(self, inputs: np.ndarray, *, explain: bool = False) -> Any:
        self.batches.append(len(inputs))
        if self.fail:
            raise RuntimeError("graph exploded")
        return self.inner.run(inputs, explain=explain)


async def _concurrently(
    coalescer: RunCoalescer, scorer: Any, parts: list[np.ndarray], explain: bool = False
) -> list[Any]:
    return await asyncio.gather(
        *(coalescer.run(scorer, p, explain) for p in parts), return_exceptions=True
    )


def test_concurrent_runs_share_one_graph_run_and_get_their_own_rows() -> None:
    scorer = CountingScorer()
    rows = normal_rows(7, seed=3)
    parts = [rows[:1], rows[1:4], rows[4:5], rows[5:]]
    coalescer = RunCoalescer(window=0.05)
    results = asyncio.run(_concurrently(coalescer, scorer, parts, explain=True))
    assert scorer.batches == [7]  # one run for all four requests
    alone_scores, alone_errors = scorer.inner.run(rows, explain=True)
    start = 0
    for part, (scores, errors) in zip(parts, results, strict=True):
        end = start + len(part)
        np.testing.assert_allclose(scores, alone_scores[start:end], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(errors, alone_errors[start:end], rtol=1e-6, atol=1e-7)
        assert scores.shape == (len(part),) and errors.shape == (len(part), F)
        start = end
    assert coalescer.requests == 4 and coalescer.runs == 1


def test_explain_and_plain_runs_are_grouped_separately() -> None:
    scorer = CountingScorer()
    rows = normal_rows(4, seed=4)
    coalescer = RunCoalescer(window=0.05)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            coalescer.run(scorer, rows[:2], True), coalescer.run(scorer, rows[2:], False),
            coalescer.run(scorer, rows[:1], True),
        )

    (s1, e1), (s2, e2), (s3, e3) = asyncio.run(scenario())
    assert s2.shape == (2,)
    assert sorted(scorer.batches) == [2, 3]
    assert e1 is not None and e3 is not None and e2 is None
    np.testing.assert_allclose(s3, s1[:1], rtol=1e-6)


def test_a_group_runs_early_once_full() -> None:
    scorer = CountingScorer()
    rows = normal_rows(8, seed=5)
    coalescer = RunCoalescer(window=10.0, max_values=3 * F)  # 3 rows fill a group

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await _concurrently(coalescer, scorer, [rows[i:i + 1] for i in range(6)])
        return loop.time() - start

    elapsed = asyncio.run(scenario())
    assert scorer.batches == [3, 3]
    assert elapsed < 5.0  # neither group waited out its 10 s window


def test_sequential_traffic_stops_waiting_and_runs_inline() -> None:
    """A lone caller gains nothing from waiting: after a few lone groups runs execute at once,
    a probe now and then checks for company."""
    scorer = CountingScorer()
    row = normal_rows(1, seed=6)
    coalescer = RunCoalescer(window=0.002, probe_every=10)

    async def scenario() -> list[bool]:
        waited = []
        for _ in range(40):
            task = asyncio.ensure_future(coalescer.run(scorer, row, False))
            await asyncio.sleep(0)  # one step: an inline run has finished by now
            waited.append(not task.done())
            await task
        return waited

    waited = asyncio.run(scenario())
    assert all(waited[:7])  # optimistic start: the mean group size decays from 3 to < 1.5
    assert not any(waited[7:16])  # then inline ...
    assert [i for i, w in enumerate(waited) if i >= 7 and w] == [16, 26, 36]  # one probe per 10
    assert coalescer.mean_group < coalescer.min_group


def test_a_probe_that_finds_company_switches_waiting_back_on() -> None:
    """Runs execute at once under sequential traffic; a probe that collects a second request
    restores waiting immediately instead of nudging the average."""
    scorer = CountingScorer()
    row = normal_rows(1, seed=6)
    coalescer = RunCoalescer(window=0.01, probe_every=5)
    coalescer.mean_group = 1.0  # sequential traffic: inline, probing

    async def company() -> list[int]:
        first = asyncio.ensure_future(coalescer.run(scorer, row, False))
        await asyncio.sleep(0)  # the probe's group is formed and waits
        second = coalescer.run(scorer, row, False)
        await asyncio.gather(first, second)
        return scorer.batches[-1:]

    coalescer._since_probe = coalescer.probe_every - 1  # the next run probes
    assert asyncio.run(company()) == [2]
    assert coalescer.mean_group >= coalescer.min_group  # an average would give 1.2
    assert RunCoalescer().probe_every == 1024


def test_a_lock_holder_does_not_wait_and_takes_the_waiting_group_along() -> None:
    scorer = CountingScorer()
    rows = normal_rows(3, seed=7)
    coalescer = RunCoalescer(window=10.0)

    async def scenario() -> list[Any]:
        waiting = asyncio.ensure_future(coalescer.run(scorer, rows[:2], False))
        await asyncio.sleep(0)  # the first request is queued, waiting for company
        assert scorer.batches == []
        locked = await coalescer.run(scorer, rows[2:], False, may_wait=False)
        return [await waiting, locked]

    (first, _), (second, _) = asyncio.run(scenario())
    assert scorer.batches == [3]
    assert first.shape == (2,) and second.shape == (1,)


def test_window_zero_never_waits() -> None:
    scorer = CountingScorer()
    rows = normal_rows(4, seed=8)
    coalescer = RunCoalescer(window=0.0)
    asyncio.run(_concurrently(coalescer, scorer, [rows[i:i + 1] for i in range(4)]))
    assert scorer.batches == [1, 1, 1, 1]


def test_a_failed_run_fails_every_request_of_its_group_and_a_cancelled_one_is_dropped() -> None:
    rows = normal_rows(3, seed=9)
    coalescer = RunCoalescer(window=0.05)
    results = asyncio.run(
        _concurrently(coalescer, CountingScorer(fail=True), [rows[:1], rows[1:]])
    )
    assert [str(r) for r in results] == ["graph exploded"] * 2

    scorer = CountingScorer()

    async def cancel_one() -> Any:
        doomed = asyncio.ensure_future(coalescer.run(scorer, rows[:1], False))
        kept = asyncio.ensure_future(coalescer.run(scorer, rows[1:], False))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept

    scores, _ = asyncio.run(cancel_one())
    assert scores.shape == (2,) and scorer.batches == [3]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window must be >= 0"):
        RunCoalescer(window=-1)


def test_live_server_coalesces_concurrent_single_rows_without_changing_scores(
    models: Path,
) -> None:
    path = write_point_bundle(models)
    from ds_serving.bundle import load_bundle, promote

    promote(models, "ae", load_bundle(path).manifest.version)
    rows = normal_rows(64, seed=11)
    with ServerThread(server_config(models, coalesce_window=0.02)) as server:
        target = f"127.0.0.1:{server.port}"
        with ScorerClient(target) as client, ThreadPoolExecutor(16) as pool:
            for _ in range(3):  # a few rounds so groups form
                results = list(pool.map(lambda i: client.score(rows[i:i + 1]), range(len(rows))))
        coalescer = server.coalescer
        assert coalescer.runs < coalescer.requests  # some requests shared a graph run
        expected = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"), rows)
        got = np.concatenate([r.scores for r in results])
        np.testing.assert_allclose(got, expected.scores, rtol=1e-6, atol=1e-7)
        assert [bool(r.flags[0]) for r in results] == expected.flags.tolist()


def test_live_entity_keyed_rows_share_runs_and_keep_per_entity_order(models: Path) -> None:
    """Producers sending entity ids (alerts, smoothing) also share graph runs; each entity's
    flags and alerts equal the dataset path's on that entity's rows in time order."""
    from ds_serving.alerting import AlertPolicy, AlertTracker
    from ds_serving.bundle import load_bundle, promote
    from ds_serving.smoothing import Smoothing, smooth_flags

    path = write_point_bundle(models, smoothing={"k": 2, "n": 3})
    promote(models, "ae", load_bundle(path).manifest.version)
    bundle = load_bundle(path)
    per_entity = 24
    rows = {f"host-{e}": normal_rows(per_entity, seed=20 + e) for e in range(12)}
    for e, block in enumerate(rows.values()):
        block[8 + e % 5: 14 + e % 5] *= 3.0  # a burst per entity: flags and alerts

    def produce(entity: str) -> list[Any]:
        with ScorerClient(target) as client:
            return [client.score(rows[entity][i:i + 1], [entity], [float(i)])
                    for i in range(per_entity)]

    with ServerThread(server_config(models, coalesce_window=0.02)) as server:
        target = f"127.0.0.1:{server.port}"
        with ThreadPoolExecutor(len(rows)) as pool:
            results = dict(zip(rows, pool.map(produce, rows), strict=True))
        assert server.coalescer.runs < server.coalescer.requests

    scorer = Scorer.from_bundle(bundle, backend="cpu")
    smoothing = Smoothing.from_dict(bundle.manifest.smoothing)
    policy = AlertPolicy.from_dict(bundle.manifest.alerting)
    opened = 0
    for entity, block in rows.items():
        reference = score_rows(scorer, block)
        flags = smooth_flags(reference.flags, smoothing)
        got = results[entity]
        np.testing.assert_allclose(np.concatenate([r.scores for r in got]), reference.scores,
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.concatenate([r.flags for r in got]), flags)
        expected = AlertTracker(policy).update(
            np.array([entity] * per_entity), flags, reference.scores,
            np.arange(per_entity, dtype=np.float64))
        events = [(a.kind, a.at) for r in got for a in r.alerts]
        assert events == [(e.kind, e.at) for e in expected]
        opened += sum(kind == "open" for kind, _ in events)
    assert opened >= len(rows) // 2  # the bursts did open alerts

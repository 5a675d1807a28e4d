"""The compute thread policy: the affinity mask's CPUs per process, or DS_THREADS."""

from __future__ import annotations

import os

import pytest

from ds_serving.threads import ThreadPolicyError, available_cpus, thread_policy


def test_defaults_one_training_thread_and_the_affinity_masks_cpus_for_scoring() -> None:
    training = thread_policy("training", {})
    assert training.threads == 1 and "default for training" in training.source
    scoring = thread_policy("scoring", {})
    assert scoring.threads == len(os.sched_getaffinity(0)) and "auto" in scoring.source
    with pytest.raises(ValueError, match="kind='gpu'"):
        thread_policy("gpu", {})


def test_a_number_or_auto() -> None:
    assert thread_policy("training", {"DS_THREADS": "3"}).threads == 3
    assert thread_policy("training", {"DS_THREADS": "auto"}).threads == len(
        os.sched_getaffinity(0))
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus() == cpus
    assert thread_policy("scoring", {"DS_THREADS": "auto"}).threads == cpus
    shared = thread_policy("scoring", {"DS_THREADS": "auto", "DS_PROCESSES": str(cpus * 4)})
    assert shared.threads == 1  # never below one
    assert f"{cpus} CPU(s)" in shared.source


@pytest.mark.parametrize(("env", "message"), [
    ({"DS_THREADS": "0"}, "DS_THREADS='0': use a whole number >= 1 or 'auto'"),
    ({"DS_THREADS": "many"}, "DS_THREADS='many'"),
    ({"DS_THREADS": "auto", "DS_PROCESSES": "-2"}, "DS_PROCESSES='-2': use a whole number"),
])
def test_a_bad_setting_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ThreadPolicyError, match=message.replace("(", r"\(")):
        thread_policy("scoring", env)


def test_training_uses_the_threads_and_restores_torchs() -> None:
    import torch

    from ds_assets.training.detectors import DetectorParams, train_detector
    from tests.support.training import FEATURES, correlated_rows

    before = torch.get_num_threads()
    trained = train_detector(DetectorParams(hidden=(8, 2), epochs=1), correlated_rows(256),
                             correlated_rows(64, 1), FEATURES, threads=1)
    assert trained.training_summary["threads"] == 1
    assert torch.get_num_threads() == before

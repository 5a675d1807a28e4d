"""bench.contention's measured tasks run under each thread setting."""

from __future__ import annotations

import torch

from bench.contention import SETTINGS, child


def test_each_setting_trains_and_scores_with_its_threads() -> None:
    before = torch.get_num_threads()
    for setting, (threads, ort_threads, _) in SETTINGS.items():
        trained = child("train", setting, rows=2_000, epochs=1)
        assert trained["seconds"] > 0
        assert trained["threads"] == (before if threads is None else threads)
        scored = child("score", setting, rows=10_000, epochs=1)
        assert scored["seconds"] > 0 and scored["threads"] == ort_threads
    assert torch.get_num_threads() == before

"""Long per-entity loops cede the GIL between slices, and see every item exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from ds_serving import ceding, decoding
from ds_serving.alerting import AlertPolicy, AlertTracker
from ds_serving.windows import entity_groups


@pytest.fixture
def cedes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(ceding.time, "sleep", lambda s: calls.append(s))
    return calls


@pytest.mark.parametrize("n", [0, 1, 2048, 2049, 10_000])
def test_ceding_yields_every_item_and_cedes_between_slices(n: int, cedes: list[int]) -> None:
    items = list(range(n))
    assert list(ceding.ceding(items)) == items
    assert len(cedes) == max(0, -(-n // ceding.CEDE_EVERY) - 1)
    assert all(s == 0 for s in cedes)


def test_a_batch_of_many_entities_cedes_while_it_groups_and_alerts(cedes: list[int]) -> None:
    ids = [f"host-{i}" for i in range(20_000)]
    groups = entity_groups(np.array(ids, dtype=object))
    grouping = len(cedes)
    assert grouping >= 2 * (20_000 // ceding.CEDE_EVERY)  # numbering and building the groups
    AlertTracker(AlertPolicy()).update(ids, np.zeros(20_000, bool), np.zeros(20_000), None)
    assert len(cedes) > 2 * grouping  # grouping again, checking times and advancing state
    assert [key for key, _ in groups] == ids


def test_long_id_lists_are_read_with_cedes_between_slices(cedes: list[int]) -> None:
    ids = tuple(f"{i:064d}" for i in range(3 * decoding._ID_SLICE))
    assert decoding.id_list(ids) == list(ids)
    assert len(cedes) == 2

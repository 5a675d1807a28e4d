"""The drift sensor's decisions: drift episodes and when to request a retrain.

A run of consecutive drifted days against one reference version is one episode, and an episode
requests a retrain once, when it reaches k days, however long it then lasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ds_assets.monitoring.sketches import DriftError


def consecutive_drift(statuses: Mapping[str, bool], keys_in_order: Sequence[str]) -> list[str]:
    """The run of drifted partitions ending at the last key (a missing partition breaks it)."""
    run: list[str] = []
    for key in reversed(keys_in_order):
        if not statuses.get(key, False):
            break
        run.append(key)
    return run[::-1]


@dataclass(frozen=True)
class DriftEpisode:
    """A drift episode already requested: the reference version and the drifted days it covers.

    The sensor keeps it in its cursor so a run that keeps going (or grows backwards when days
    are re-scored out of order) is recognised as the same episode however long it lasts.
    """

    reference_version: str
    first: str  # first drifted partition seen in the episode
    last: str  # last drifted partition seen in the episode

    @property
    def key(self) -> str:
        """The episode id (and the run key's suffix): ``<reference version>:<first day>``."""
        return f"{self.reference_version}:{self.first}"

    def continued_by(self, reference_version: str, run: Sequence[str]) -> bool:
        """True if ``run`` (consecutive drifted days) overlaps this episode's days."""
        return (bool(run) and reference_version == self.reference_version
                and run[0] <= self.last and run[-1] >= self.first)

    def widened(self, run: Sequence[str]) -> DriftEpisode:
        """The same episode (same key), its span stretched to cover ``run``."""
        return DriftEpisode(self.reference_version, self.first,
                            max(self.last, run[-1]) if run else self.last)

    def to_dict(self) -> dict[str, str]:
        return {"reference_version": self.reference_version, "first": self.first,
                "last": self.last}

    @classmethod
    def from_cursor(cls, value: Any) -> DriftEpisode | None:
        """From a sensor cursor entry: a dict from :meth:`to_dict`, or the older bare
        ``"<version>:<first day>"`` string (its span is then just the first day)."""
        if not value:
            return None
        if isinstance(value, str):
            version, sep, first = value.rpartition(":")
            if not sep:
                raise DriftError(f"drift sensor cursor episode {value!r}: expected "
                                 "'<version>:<first day>'")
            return cls(version, first, first)
        if isinstance(value, Mapping) and {"reference_version", "first", "last"} <= set(value):
            return cls(str(value["reference_version"]), str(value["first"]), str(value["last"]))
        raise DriftError(f"drift sensor cursor episode {value!r}: expected a dict with "
                         "reference_version, first and last")


@dataclass(frozen=True)
class RetrainPlan:
    """What the drift sensor should do for the latest drift statuses."""

    episode: str | None  # "<reference version>:<first drifted partition>", None = no episode
    drifted_run: list[str]  # the consecutive drifted partitions ending at the latest one
    request: bool  # True only the first time an episode reaches k partitions
    reason: str
    # the requested episode to remember (new, widened or the previous one unchanged)
    requested: DriftEpisode | None = None


def plan_retrain(
    statuses: Mapping[str, bool],
    keys_in_order: Sequence[str],
    reference_version: str,
    k: int,
    requested: DriftEpisode | str | None,
) -> RetrainPlan:
    """One retrain request per drift episode: k consecutive drifted partitions, same reference.

    A run of drifted days that overlaps the episode already requested (same reference version)
    is that episode, however long it goes on and even if it grew backwards (days re-scored out
    of order), so it never requests twice; drift after a non-drifted day, or against a newly
    promoted model, is a new episode. ``keys_in_order`` should reach back past the start of the
    run (the sensor scans back to a non-drifted day), so a new episode is named by its real
    first day and a lost cursor yields the same run key.
    """
    if k < 1:
        raise DriftError(f"k={k}: drift must persist for at least 1 partition")
    previous = (DriftEpisode.from_cursor(requested) if isinstance(requested, str)
                else requested)
    run = consecutive_drift(statuses, keys_in_order)
    if not run:
        return RetrainPlan(None, [], False, "latest partition shows no drift", previous)
    if previous is not None and previous.continued_by(reference_version, run):
        same = previous.widened(run)
        return RetrainPlan(same.key, run, False,
                           f"retrain already requested for episode {same.key} "
                           f"({len(run)} consecutive drifted days)", same)
    episode = DriftEpisode(reference_version, run[0], run[-1])
    if len(run) < k:
        return RetrainPlan(episode.key, run, False,
                           f"drift for {len(run)} of the {k} consecutive partitions needed",
                           previous)
    return RetrainPlan(episode.key, run, True,
                       f"drift persisted for {len(run)} partitions ({run[0]}..{run[-1]}) "
                       f"against model v{reference_version}", episode)

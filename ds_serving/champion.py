"""Which model version the scorer should serve next: the champion pointer, read and loaded.

``champion.json`` names the version to serve. ``ChampionLoader.candidate`` reads it and, when
it names something new (another version, or an engine added to the served one), loads, verifies
and warms up that version on a worker thread. A version that cannot serve here (a broken bundle,
per-entity state on the stateless tier, another feature set) is refused: logged and counted once
per pointer and manifest of the version it names, while the old model keeps serving. A pointer
that cannot be read at all (not JSON, not UTF-8, nested too deep, no version, or a version that
does not exist) is refused as ``pointer``, once per change of the file. The server swaps a
verified candidate in (``ScorerServer.reload``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds_serving.bundle import (
    CHAMPION_FILE,
    MANIFEST_FILE,
    BundleError,
    champion_version,
    model_dir,
    version_dir,
)
from ds_serving.metrics import ScorerMetrics
from ds_serving.runtime import ModelRuntime

log = logging.getLogger(__name__)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why the pointer at ``path`` cannot be read, in one short line."""
    if isinstance(exc, BundleError):
        return str(exc)
    return f"{path}: not a readable champion pointer ({type(exc).__name__}: {str(exc)[:200]})"


def file_stamp(path: Path) -> Any:
    """What changes when a file is replaced (atomic rename: a new inode) or rewritten."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _what_is_there(models_dir: Path) -> str:
    """What a models directory holds, for a server waiting on a name it does not have: a
    typo in --models or --name otherwise waits in silence."""
    if not models_dir.is_dir():
        return f"{models_dir} does not exist: is --models right?"
    names = sorted(p.parent.name for p in models_dir.glob(f"*/{CHAMPION_FILE}"))
    if names:
        return f"models with a champion there: {names}; is --name right?"
    return f"no model under {models_dir} has a champion yet"


def files_stamp(directory: Path) -> Any:
    """``file_stamp`` of every file in a version's directory: a file repaired in place (the
    model copied back over a damaged one) is a change to retry the load on."""
    try:
        return tuple(sorted((p.name, file_stamp(p)) for p in directory.iterdir() if p.is_file()))
    except OSError:
        return None


@dataclass(frozen=True)
class Candidate:
    """A loaded, verified model the pointer names, ready to be swapped in."""

    runtime: ModelRuntime
    manifest_stamp: Any  # of its version's manifest, to notice a change to the served version


class ChampionLoader:
    """Reads the champion pointer of model ``name`` and loads what it names with ``load``
    (``candidate``); remembers what serves (``served``) and the last refusal
    (``last_failure``). ``stateless``: refuse models that keep per-entity state."""

    def __init__(
        self,
        models_dir: Path,
        name: str,
        metrics: ScorerMetrics,
        *,
        load: Callable[[Path], ModelRuntime],
        stateless: bool = False,
    ) -> None:
        self.models_dir = models_dir
        self.name = name
        self.metrics = metrics
        self._load = load
        self._stateless = stateless
        self.path = model_dir(models_dir, name) / CHAMPION_FILE
        # ((pointer stamp, manifest stamp or None), reason) of the last refused reload
        self._last_failure: tuple[Any, str] | None = None
        self._served_manifest: Any = None  # stamp of the served version's manifest

    @property
    def last_failure(self) -> str | None:
        """Why the last load was refused; None when none was (waiting for a first champion
        is no refusal)."""
        if self._last_failure is None or self._last_failure[0] is None:
            return None
        return self._last_failure[1]

    async def candidate(self, current: ModelRuntime | None) -> Candidate | str:
        """The model to serve instead of ``current``, or why there is none: 'unchanged',
        'failure' (refused now or before) or 'no-champion'."""
        stamp = file_stamp(self.path)
        if stamp is None:
            if current is None and self._last_failure != (None, "no-champion"):
                log.warning("no champion yet at %s; waiting for one (%s)", self.path,
                            _what_is_there(self.models_dir))
                self._last_failure = (None, "no-champion")
            return "no-champion"
        # a refusal is remembered per (pointer, the files of the version it names): retried
        # only after a new promotion or a change to that version (an engine added, a file
        # repaired in place)
        if self._last_failure is not None and self._last_failure[0] == (stamp, None):
            return "failure"  # an unreadable pointer; wait for a new promotion
        try:
            version = champion_version(self.models_dir, self.name)
            path = version_dir(self.models_dir, self.name, str(version))
        except Exception as exc:  # BundleError, but also bytes that are not UTF-8
            # (UnicodeDecodeError), JSON nested too deep to parse (RecursionError), a file
            # that cannot be read (OSError): whatever the pointer is, it names nothing to serve
            return self._refuse((stamp, None), _unreadable(self.path, exc), "pointer", current)
        if not path.is_dir():
            return self._refuse((stamp, None), f"{self.path}: names version {version!r}, which "
                                f"{path} does not hold", "pointer", current)
        # the same version is reloaded only when its manifest changed: an engine added to
        # the served version (tensorrt_engine can finish after the promotion) is picked up
        manifest_stamp = file_stamp(path / MANIFEST_FILE)
        if (current is not None and version == current.version
                and manifest_stamp == self._served_manifest):
            return "unchanged"
        key = (stamp, manifest_stamp, files_stamp(path))
        if self._last_failure is not None and self._last_failure[0] == key:
            return "failure"  # already refused; wait for a new promotion or a change
        loop = asyncio.get_running_loop()
        try:
            runtime = await loop.run_in_executor(None, self._load, path)
        except Exception as exc:  # BundleError, onnxruntime errors, warm-up failures
            return self._refuse(key, str(exc), "bundle", current)
        if runtime.version != str(version):  # a copied or renamed version directory
            return self._refuse(
                key, f"{path / MANIFEST_FILE}: names version {runtime.version!r} but lies at "
                f"version {version!r}; restore the directory or promote another version",
                "bundle", current)
        if self._stateless and runtime.keeps_state:
            return self._refuse(
                key,
                f"{path}: the model keeps per-entity state ({runtime.state_description}), "
                "which a multi-process scorer cannot share between its processes; serve it "
                "with --processes 1",
                "stateful_model",
                current,
            )
        if current is not None and runtime.features != current.features:
            return self._refuse(
                key,
                f"{path}: features {list(runtime.features)} differ from the served model's "
                f"{list(current.features)}; clients would send the wrong columns (restart "
                "the scorer to change the feature set)",
                "features",
                current,
            )
        return Candidate(runtime, manifest_stamp)

    def served(self, candidate: Candidate) -> None:
        """``candidate`` serves now; the last refusal no longer stands."""
        self._served_manifest = candidate.manifest_stamp
        self._last_failure = None

    def _refuse(self, key: Any, reason: str, kind: str, current: ModelRuntime | None) -> str:
        """Keep serving what serves; remember the refusal under ``key`` (pointer and manifest
        stamps) and count it by ``kind`` (RELOAD_FAILURE_KINDS)."""
        self._last_failure = (key, reason)
        self.metrics.reloads.labels("failure").inc()
        self.metrics.reload_failures.labels(kind).inc()
        serving = f"v{current.version} keeps serving" if current else "no model is serving"
        log.error("model reload refused: %s; %s", reason, serving)
        return "failure"

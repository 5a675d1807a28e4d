"""Atomic file writes: write to a temp file in the target directory, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a half-written file, and
no stray temp files survive a failed write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc``): setting
    it to 0 even briefly would give files other threads create meanwhile mode 0666."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o077)  # elsewhere: the briefly set mask is the strictest, never 0
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """Permissions a plain ``open()`` would give (0666 minus the umask); mkstemp uses 0600."""
    return 0o666 & ~current_umask()


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable, where the filesystem can."""
    with contextlib.suppress(OSError):  # not supported on every filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``target``; on clean exit it replaces ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temp path (e.g. a Parquet writer), then move it into place."""
    with atomic_path(target) as tmp:
        writer(tmp)

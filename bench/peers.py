"""Throwaway, pinned environments for the peers `make bench` measures us against.

Each peer lives in its own venv under ``bench/results/peers/<name>/`` (not in git), created on
first use and re-created when its pins change, so no peer ever enters the platform's
dependencies (MLServer and PyOD pin versions of numpy, uvloop and torch we do not want).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "results" / "peers"


def ensure_env(name: str, pins: Sequence[str]) -> Path:
    """The python of peer ``name``'s environment, created with exactly ``pins`` when missing
    or pinned differently."""
    env = PEERS / name
    python = env / "bin" / "python"
    marker = env / "pins.txt"
    wanted = "\n".join(pins)
    if not python.exists() or not marker.exists() or marker.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
        marker.write_text(wanted)
    return python

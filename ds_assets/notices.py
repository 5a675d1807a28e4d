"""Notices nobody can act on, off: Dagster's about the beta and preview APIs this code location
uses (dagster-mlflow's hook, its resource, asset execution types) and MLflow's about its database
set-up. Called before they are imported, by the code location (so the step processes it forks
inherit it), ``ds-dataset`` and ``make demo``; ``dagster dev`` showed ~27 such warnings a
session, one set per step process.
"""

from __future__ import annotations

import os
import warnings


def quiet_notices() -> None:
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported

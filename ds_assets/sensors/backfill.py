"""The one place that decides how "re-run these partitions" is submitted.

Today: one run per partition, each with a run key, so the daemon de-duplicates them and each
day retries and shows up on its own. Switching to a native partition-range backfill later
(``RunRequest.for_asset_graph_subset``) changes only this module.
"""


from collections.abc import Mapping, Sequence

import dagster as dg


def partition_backfill(
    job_name: str,
    partition_keys: Sequence[str],
    run_key_prefix: str,
    tags: Mapping[str, str] | None = None,
) -> list[dg.RunRequest]:
    """Requests that re-materialize ``job_name`` for each partition, de-duplicated by run key."""
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{key}",
            job_name=job_name,
            partition_key=key,
            tags={**dict(tags or {}), "datasentinel/backfill": run_key_prefix},
        )
        for key in sorted(partition_keys)
    ]

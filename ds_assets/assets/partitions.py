"""The daily partitioning shared by every per-day asset."""


import os

import dagster as dg

PARTITIONS_START = os.environ.get("DS_PARTITIONS_START", "2026-11-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

"""The production instance configuration (docker/dagster.yaml) against a real PostgreSQL server.

Creates a fresh database, points a Dagster instance at it through the same dagster.yaml the
containers use (credentials from env vars), materializes partitions with real runs (ingest,
training and promotion, scoring), evaluates drift and promotion sensor ticks against that
instance (the promotion sensor on records the runs wrote), checks run and event records, and
drops the database.

Needs a server: DS_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres);
the user must be allowed to create databases. Run only these tests with `pytest -m postgres`.
Without a server they skip, unless DS_REQUIRE_POSTGRES is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.sensors.drift import build_drift_sensor
from ds_assets.sensors.promotion import build_promotion_sensor
from ds_assets.settings import Settings
from tests.conftest import DAYS, TINY_SOURCE
from tests.support.training import TRAIN_CONFIG

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DOCKER_INSTANCE = Path(__file__).resolve().parents[2] / "docker" / "dagster.yaml"


def _server_url() -> str:
    return os.environ.get("DS_TEST_POSTGRES_URL", DEFAULT_URL)


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, uniquely named database on the server; dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")  # ships with dagster-postgres
    url = _server_url()
    try:
        admin = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {url} ({str(exc).strip().splitlines()[0]}). "
            "Start a server (e.g. `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust "
            "postgres:16`) or point DS_TEST_POSTGRES_URL at one, then run `pytest -m postgres`."
        )
        if os.environ.get("DS_REQUIRE_POSTGRES"):  # CI has the server: a skip would hide it
            pytest.fail(f"DS_REQUIRE_POSTGRES is set but {message}")
        pytest.skip(message)
    admin.autocommit = True
    name = f"ds_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(url)
    for key, value in {
        "DAGSTER_PG_USERNAME": parsed.username or "postgres",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_HOST": parsed.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_DB": name,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() is None
        admin.close()


def _tables(name: str) -> set[str]:
    import psycopg2

    url = urlparse(_server_url())._replace(path=f"/{name}").geturl()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def test_partitions_runs_and_a_sensor_tick_on_postgres(
    database: str, settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER_INSTANCE, home / "dagster.yaml")
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert {"runs", "event_logs", "jobs", "job_ticks"} <= _tables(database)

        for day in DAYS:
            result = defs.resolve_job_def("ingest_telemetry").execute_in_process(
                instance=instance, partition_key=day,
                run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}},
            )
            assert result.success

        runs = instance.get_run_records(dg.RunsFilter(job_name="ingest_telemetry"))
        assert len(runs) == len(DAYS)
        assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in runs) == DAYS
        raw = dg.AssetKey("raw_telemetry")
        assert instance.get_materialized_partitions(raw) == set(DAYS)
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=raw, asset_partitions=[DAYS[1]]), limit=1
        ).records[0]
        assert record.asset_materialization is not None
        assert record.asset_materialization.metadata["rows"].value == 3 * 288
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(raw, "label_domain")]
        )
        assert checks[dg.AssetCheckKey(raw, "label_domain")].status.value == "SUCCEEDED"

        # drift reports land in Postgres; the drift sensor reads them from there
        for day in DAYS:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                "drift_report", partition=day,
                metadata={"drifted": True, "reference_version": "1"}))
        sensor = build_drift_sensor(Dataset.default(settings), k=3)
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.run_key for r in tick.run_requests or []] == [f"drift-retrain:1:{DAYS[0]}"]
        again = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, definitions=defs))
        assert not again.run_requests
        assert again.skip_message == "no new drift reports since the last tick"

        # the promotion sensor reads records real runs wrote to Postgres: a trained and
        # promoted champion, and the days it scored; nothing is stale, then a new champion
        # requests the re-scoring backfill of those days
        train = defs.resolve_job_def("train_detector").execute_in_process(
            instance=instance, run_config=TRAIN_CONFIG)
        assert train.success
        for day in DAYS:
            assert defs.resolve_job_def("score_telemetry").execute_in_process(
                instance=instance, partition_key=day).success
        promotion = build_promotion_sensor(Dataset.default(settings), n_partitions=7)
        tick = promotion.evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs))
        assert not tick.run_requests
        assert tick.skip_message == "champion v1: no recent day scored by another model"
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "champion", metadata={"champion_version": "2", "promoted": True}))
        tick = promotion.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, definitions=defs))
        assert sorted(r.partition_key for r in tick.run_requests or []) == DAYS
    finally:
        instance.dispose()

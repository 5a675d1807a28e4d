"""The Dagster UI in headless Chromium (``make ui-test``), against a tiny materialized instance.

A temporary DAGSTER_HOME (the repo's dagster.yaml) and DS_DATA_DIR get two ingested days, one
training run and one re-score; then ``dagster-webserver -w workspace.yaml`` serves them and
Playwright drives Debian's Chromium (``/usr/bin/chromium``, or ``DS_CHROMIUM``) through the asset
graph and checks, the plots in materialization metadata, and the schedules and sensors pages.
Screenshots go to ``DS_UI_ARTIFACTS`` (default: a pytest temporary folder) and their paths are
printed.

Skipped unless ``DS_UI_TEST=1``: it needs the browser and takes about 40 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from tests.conftest import DAYS, TINY_SOURCE

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(os.environ.get("DS_UI_TEST") != "1",
                       reason="drives the Dagster UI in headless Chromium: `make ui-test` "
                              "(or DS_UI_TEST=1)"),
]

REPO = Path(__file__).resolve().parents[2]
UI_DAYS = DAYS[:2]
SOURCE = {**TINY_SOURCE, "n_hosts": 2, "interval_seconds": 900}
TRAIN = {"ops": {
    "training_set": {"config": {"n_partitions": len(UI_DAYS), "end_partition": UI_DAYS[-1]}},
    "detector": {"config": {"family": "dense_ae", "epochs": 1, "hidden": [8, 3],
                            "batch_size": 128}},
}}
# variables that would point assets, models or MLflow elsewhere, or start the automation
CLEARED_ENV = ("DS_MODELS_DIR", "DS_MLFLOW_TRACKING_URI", "DS_MLFLOW_EXPERIMENT", "DS_MODEL_NAME",
               "DS_PARTITIONS_START", "DS_PUSHGATEWAY_URL", "DS_AUTOMATION")
SERVER_TIMEOUT_S = 120
UI_TIMEOUT_MS = 60_000


def _expected() -> tuple[list[str], dict[str, list[str]], list[str], list[str]]:
    """Asset keys, checks by asset, schedule and sensor names of the code location's ``defs``."""
    from ds_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    checks: dict[str, list[str]] = {}
    for check in graph.asset_check_keys:
        checks.setdefault(check.asset_key.to_user_string(), []).append(check.name)
    schedules = sorted(s.name for s in defs.schedules or [])
    sensors = sorted(s.name for s in defs.sensors or [])
    return assets, {k: sorted(v) for k, v in checks.items()}, schedules, sensors


def _materialize(env: dict[str, str]) -> None:
    """Ingest two days, train (one epoch), re-score the last day: the jobs `make demo` runs,
    into the persistent instance of ``env``'s DAGSTER_HOME."""
    from ds_assets.definitions import build_definitions
    from ds_assets.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        for name in CLEARED_ENV:
            mp.delenv(name, raising=False)
        for name in ("DAGSTER_HOME", "DS_DATA_DIR"):
            mp.setenv(name, env[name])
        defs = build_definitions(Settings.from_env())
        with dg.DagsterInstance.get() as instance:
            def run(job: str, run_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
                # step events stay in the event log (the UI shows them), off the console
                config = {**(run_config or {}),
                          "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
                result = defs.resolve_job_def(job).execute_in_process(
                    instance=instance, raise_on_error=False, run_config=config, **kwargs)
                failures = [e.message for e in result.all_events
                            if e.is_failure or e.is_step_failure]
                assert result.success, f"{job} {kwargs.get('partition_key', '')}: {failures}"

            for day in UI_DAYS:
                run("ingest_telemetry", partition_key=day,
                    run_config={"ops": {"raw_telemetry": {"config": SOURCE}}})
            run("train_detector", run_config=TRAIN)
            run("rescore_telemetry", partition_key=UI_DAYS[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_server(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited ({proc.returncode}):\n"
                        + log.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster-webserver did not answer {url}/server_info in {SERVER_TIMEOUT_S}s:\n"
                + log.read_text(errors="replace")[-3000:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The webserver and its code server: the process group this test started."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class UI:
    url: str
    page: Any  # playwright.sync_api.Page
    artifacts: Path

    def goto(self, path: str) -> None:
        self.page.goto(self.url + path)

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path_factory.mktemp("dagster_ui")
    artifacts = Path(os.environ.get("DS_UI_ARTIFACTS") or root / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(DAGSTER_HOME=str(home), DS_DATA_DIR=str(root / "data"))

    started = time.perf_counter()
    _materialize(env)
    print(f"materialized in {time.perf_counter() - started:.1f}s")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "webserver.log"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(url, proc, log)
        print(f"webserver answering at {url} ({time.perf_counter() - started:.1f}s in)")
        expect.set_options(timeout=UI_TIMEOUT_MS)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=os.environ.get("DS_CHROMIUM", "/usr/bin/chromium"),
                args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # Dagster's first-visit pop-up ("Join the Dagster community"): whenever it covers
            # the page, Playwright presses its Skip before the next action or assertion
            page.add_locator_handler(
                page.get_by_role("dialog").filter(has=page.get_by_role("button", name="Skip")),
                lambda dialog: (dialog.get_by_role("button", name="Skip").click(),
                                print("dismissed Dagster's first-visit pop-up")),
            )
            page.on("pageerror", lambda error: print(f"page error: {error}"))
            try:
                yield UI(url, page, artifacts)
            finally:
                browser.close()
    finally:
        _stop(proc)
        print(f"UI test wall time {time.perf_counter() - started:.1f}s")


def test_asset_graph_shows_every_asset_and_check(ui: UI) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    assets, checks, _, _ = _expected()
    assert {"raw_telemetry", "onnx_model", "evaluation_report"} <= set(assets)
    assert "onnx_parity" in checks["onnx_model"] and len(checks["raw_telemetry"]) == 6
    page = ui.page
    ui.goto("/asset-groups")
    # the global lineage starts with the groups collapsed: the graph's settings menu expands
    # them (again if the first-visit pop-up, dismissed, closed the menu)
    for _ in range(3):
        page.get_by_role("button", name="settings", exact=True).click()
        try:
            page.get_by_role("menuitem", name="Expand all groups").click(timeout=10_000)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    else:
        pytest.fail("the graph's settings menu never offered 'Expand all groups'")
    page.keyboard.press("Escape")
    # the graph labels a node with its key's last part; a declared dataset's slice (skab/...)
    # sits in its own groups (skab__training, ...), side by side with the demo's
    for name in sorted({a.rsplit("/", 1)[-1] for a in assets}):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    prefixes = sorted({a.split("/", 1)[0] for a in assets if "/" in a})
    assert "skab" in prefixes
    for prefix in prefixes:
        expect(page.get_by_text(f"{prefix}__training", exact=True).first).to_be_visible()
    ui.screenshot("asset_graph")

    # each asset's Checks tab lists its checks, evaluated (the materialized instance ran them)
    for asset, names in checks.items():
        ui.goto(f"/assets/{asset}?view=checks")
        expect(page.get_by_text(f"Checks ({len(names)})")).to_be_visible()
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        ui.screenshot(f"checks_{asset}")


@pytest.mark.parametrize(("asset", "key"), [("evaluation_report", "report"),
                                            ("drift_report", "drift_scores")])
def test_materialization_plots_display(ui: UI, asset: str, key: str) -> None:
    """The latest materialization's markdown metadata embeds PNGs as data: URLs; the UI shows
    them, decoded, in the markdown dialog."""
    from playwright.sync_api import expect

    page = ui.page
    ui.goto(f"/assets/{asset}")
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("button", name="Copy"))
    images = dialog.locator("img[src^='data:image/png;base64,']")
    expect(images.first).to_be_visible()
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=image.element_handle())
    print(f"{asset}/{key}: {images.count()} plot(s) shown")
    images.first.scroll_into_view_if_needed()
    ui.screenshot(f"plots_{asset}")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


def test_automation_pages_list_our_schedules_and_sensors(ui: UI) -> None:
    from playwright.sync_api import expect

    _, _, schedules, sensors = _expected()
    assert {"daily_pipeline_schedule", "weekly_retrain_schedule"} <= set(schedules)
    assert {"drift_retrain_sensor", "daily_monitoring_automation"} <= set(sensors)
    page = ui.page
    location = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0][
        "python_module"]["location_name"]
    for path, names in (("/automation", schedules + sensors),
                        (f"/locations/{location}/schedules", schedules),
                        (f"/locations/{location}/sensors", sensors)):
        ui.goto(path)
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        ui.screenshot(path.strip("/").replace("/", "_"))

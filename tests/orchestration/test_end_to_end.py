"""End to end: `dagster dev` on 127.0.0.1, the sensor trading the embedded market on its clock, then an audit.

Starts the real webserver + daemon through the `make ui` launcher (accelerated clock, sensor on), waits until
the sensor's runs have traded a few bars (runs, lineage rows, orders and P&L recorded), stops the server, and
audits one of those bars: `identical`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from CONFIG.config_loader import reset_config
from resources.lineage.store import LineageLocked, LineageStore

ROOT = Path(__file__).resolve().parents[2]
BARS_WANTED = 3
DEADLINE_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traded_bars(store: LineageStore) -> list[str]:
    try:
        runs = store.read_sql("SELECT DISTINCT bar FROM runs WHERE mode = 'live' AND status = 'success' ORDER BY bar")
        done = store.read_sql("SELECT DISTINCT bar FROM pnl WHERE account = 'live'")
    except (LineageLocked, FileNotFoundError, Exception):  # the file may not exist or be mid-write: poll again
        return []
    return sorted(set(runs["bar"]) & set(done["bar"]))


@pytest.mark.slow
def test_sensor_trades_bars_under_dagster_dev_and_an_audit_is_identical(trained, tg_home, tmp_path):
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "dagster_home"), TRADEGRAPH_HOME=str(tg_home),
               TRADEGRAPH__PATHS__REGISTRY=str(trained),  # make ui's clock.speed (x10): a bar every 30 s, a run under load fits
               TRADEGRAPH__ORCHESTRATION__SENSOR_INTERVAL_SECONDS="2")
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.ui", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    os.environ["TRADEGRAPH_HOME"] = str(tg_home)
    reset_config()
    store = LineageStore(retry_seconds=2)
    bars: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and len(bars) < BARS_WANTED:
            assert proc.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
            time.sleep(3)
            bars = _traded_bars(store)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert len(bars) >= BARS_WANTED, (tmp_path / "dagster_dev.log").read_text()[-3000:]
    runs = store.read_sql("SELECT bar, status, config_hash FROM runs WHERE mode = 'live'")
    assert runs["bar"].is_unique  # run_key = bar: never two runs of one bar
    assert store.read_sql("SELECT count(*) FROM sized_orders WHERE bar = ?", [bars[-1]]).iloc[0, 0] == 50
    pnl = store.read_sql("SELECT * FROM pnl WHERE account = 'live' ORDER BY bar")
    assert (pnl["portfolio_value"] > 0).all()
    recorded = store.read_sql("SELECT DISTINCT bar FROM materializations WHERE asset = 'executions'")["bar"]
    assert set(bars) <= set(recorded)  # every traded bar recorded its executions (orders, or none)
    skipped = store.read_sql("SELECT count(*) FROM runs WHERE mode = 'live' AND status LIKE 'failed%'").iloc[0, 0]
    assert skipped == 0
    from dagster_project.commands.audit import audit_bar

    report = audit_bar(bars[-1])
    assert report.identical, report.render()

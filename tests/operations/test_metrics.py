"""Prometheus metrics: recorded by short-lived processes, merged by the exporter, scraped over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from resources.monitoring import metrics
from resources.monitoring.metrics import BarObservation
from tests.operations.conftest import free_port, samples, scrape

ROOT = Path(__file__).resolve().parents[2]


def _exported() -> dict[str, float]:
    from prometheus_client import generate_latest

    return samples(generate_latest(metrics.exporter_registry()).decode())


def test_one_bar_observation_is_exported_with_its_numbers():
    ts = dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC)
    metrics.record_bar(BarObservation("live", orders={("ALLOW", "FILLED"): 3, ("DENY", "NOT_SENT"): 1},
                                      rejects={"INSUFFICIENT_BUYING_POWER": 2}, fills=3, latency_s=1.25,
                                      outcome="traded", portfolio_value=1_000_123.5, daily_return=0.000125,
                                      mismatches=0, bar_ts=ts))
    got = _exported()
    assert got['tradegraph_orders_total{account="live",status="FILLED",verdict="ALLOW"}'] == 3
    assert got['tradegraph_orders_total{account="live",status="NOT_SENT",verdict="DENY"}'] == 1
    assert got['tradegraph_rejects_total{account="live",reason="INSUFFICIENT_BUYING_POWER"}'] == 2
    assert got['tradegraph_fills_total{account="live"}'] == 3
    assert got['tradegraph_bars_total{account="live",outcome="traded"}'] == 1
    assert got['tradegraph_bar_close_to_orders_seconds_count{account="live"}'] == 1
    assert got['tradegraph_bar_close_to_orders_seconds_sum{account="live"}'] == 1.25
    assert got['tradegraph_bar_close_to_orders_seconds_bucket{account="live",le="1.0"}'] == 0
    assert got['tradegraph_bar_close_to_orders_seconds_bucket{account="live",le="2.0"}'] == 1
    assert got['tradegraph_portfolio_value{account="live"}'] == 1_000_123.5
    assert got['tradegraph_daily_return{account="live"}'] == 0.000125
    assert got['tradegraph_last_bar_timestamp_seconds{account="live"}'] == ts.timestamp()
    assert got['tradegraph_kill_switch_state{account="live",state="ACTIVE"}'] == 1


RECORD_ONE = ("from resources.monitoring import metrics as m; "
              "m.record_bar(m.BarObservation('live', fills=1, portfolio_value=float({pv})))")


def test_short_lived_processes_add_up_and_reuse_one_file_set(tg_home):
    """Each run is a process: counters add up across them, the last gauge wins, and sequential processes
    share one slot's files instead of leaving a file set each."""
    env = dict(os.environ, TRADEGRAPH_HOME=str(tg_home))
    for pv in (100, 200, 300):
        subprocess.run([sys.executable, "-c", RECORD_ONE.format(pv=pv)], cwd=ROOT, env=env, check=True)
    got = _exported()
    assert got['tradegraph_fills_total{account="live"}'] == 3
    assert got['tradegraph_portfolio_value{account="live"}'] == 300
    files = sorted(p.name for p in metrics.metrics_dir().glob("*.db"))
    assert files == ["counter_slot0.db", "gauge_mostrecent_slot0.db"]


def test_a_concurrent_process_takes_another_slot(tg_home):
    metrics.record_bar(BarObservation("live", fills=5))          # this process holds slot 0 from now on
    env = dict(os.environ, TRADEGRAPH_HOME=str(tg_home))
    subprocess.run([sys.executable, "-c", RECORD_ONE.format(pv=1)], cwd=ROOT, env=env, check=True)
    assert {p.name for p in metrics.metrics_dir().glob("counter_*.db")} == {"counter_slot0.db", "counter_slot1.db"}
    assert _exported()['tradegraph_fills_total{account="live"}'] == 6


def test_recording_is_off_when_disabled(monkeypatch):
    monkeypatch.setenv("TRADEGRAPH__METRICS__ENABLED", "false")
    reset_config()
    metrics.record_bar(BarObservation("live", fills=5))
    assert not metrics.metrics_dir().exists() or not list(metrics.metrics_dir().glob("*.db"))


def test_the_exporter_command_serves_over_http_and_says_a_taken_port_in_one_line(tg_home, capsys):
    from dagster_project.commands import cli

    metrics.record_bar(BarObservation("replay", fills=2))
    port = free_port()
    env = dict(os.environ, TRADEGRAPH_HOME=str(tg_home))
    proc = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.cli", "metrics", "serve", "--port",
                             str(port)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        text = _scrape_when_up(port, proc)
        assert samples(text)['tradegraph_fills_total{account="replay"}'] == 2
        assert cli.main(["metrics", "serve", "--port", str(port)]) == 2       # the port is taken
        assert capsys.readouterr().err.strip().splitlines() == [
            f"tradegraph: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def _scrape_when_up(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return scrape(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- through the real graph ----------------------------------------------------------------------------

@pytest.mark.slow
def test_bars_through_the_trading_job_alert_and_are_scraped(trained, live_clock, sink, monkeypatch):
    """Live bars through ``trading_job``: orders, fills, latency and P&L are published; a broker fill the
    engine never recorded is a reconciliation alert and trips the switch (alerted once, even after the
    watcher polls); a past bar rerun live is a refused-bar alert and leaves the P&L gauges alone."""
    from resources.brokers.paper import PaperBroker
    from resources.brokers.protocol import Fill, Side
    from resources.lineage.store import LineageStore
    from resources.market.calendar import parse_bar_key
    from resources.monitoring import alerts, switch_watch
    from tests.graph_helpers import run_bar, session_keys

    monkeypatch.setenv("TRADEGRAPH__ALERTS__URLS", f'["{sink.url()}"]')
    reset_config()
    keys = session_keys("2025-06-03", 4)
    for key in keys[:3]:
        live_clock(parse_bar_key(key))
        assert run_bar(key).success
    assert alerts.SENDER.flush(10) and sink.received == []          # a normal bar alerts nobody
    ts = parse_bar_key(keys[2]).to_pydatetime()
    assert PaperBroker().book_fill(Fill("outside-1", "outside-order", "S001", Side.BUY, 7.0, 100.0, 0.0, ts))
    live_clock(parse_bar_key(keys[3]))
    assert run_bar(keys[3]).success
    live_clock(parse_bar_key(keys[3]) + pd.Timedelta(minutes=10))
    assert not run_bar(keys[2], raise_on_error=False).success        # a past bar, refused: a failed run
    assert alerts.SENDER.flush(10)
    store = LineageStore()
    refused = store.read_sql("SELECT orders FROM executions_refusals WHERE bar = ?", [keys[2]]).iloc[0, 0]
    titles = [m["title"] for m in sink.wait_for(3)]
    assert titles == ["[tradegraph live] reconciliation: 1 mismatched symbol(s)",
                      "[tradegraph live] kill_switch: ACTIVE->HALTED",
                      f"[tradegraph live] refused_bar: bar {keys[2]} refused ({refused} order(s) not sent)"]
    assert "S001: recorded" in sink.received[0]["message"] and "(+7)" in sink.received[0]["message"]
    assert switch_watch.poll("live") == []                           # the watcher does not alert it again

    port = free_port()
    server, _ = metrics.serve(port)
    try:
        got = samples(scrape(port))
    finally:
        server.shutdown()
    execs = store.read_sql("SELECT verdict, status, count(*) n FROM executions WHERE bar IN (SELECT unnest(?)) "
                           "GROUP BY ALL", [keys])
    assert len(execs) and execs["n"].sum() > 0
    for row in execs.itertuples():
        assert got[f'tradegraph_orders_total{{account="live",status="{row.status}",verdict="{row.verdict}"}}'] == row.n
    n_fills = sum(store.read_sql(f"SELECT count(*) FROM {t} WHERE account = 'live'").iloc[0, 0]
                  for t in ("positions_fills", "executions_fills") if t in store.tables())
    assert got['tradegraph_fills_total{account="live"}'] == n_fills
    assert got['tradegraph_bars_total{account="live",outcome="refused"}'] == 1
    assert got['tradegraph_bar_close_to_orders_seconds_count{account="live"}'] == 4   # refused: not measured
    assert 4 * 1.0 <= got['tradegraph_bar_close_to_orders_seconds_sum{account="live"}'] <= 4 * 60
    last = store.read_sql("SELECT portfolio_value FROM pnl WHERE account = 'live' AND bar = ?", [keys[3]])
    assert got['tradegraph_portfolio_value{account="live"}'] == last.iloc[0, 0]
    assert got['tradegraph_last_bar_timestamp_seconds{account="live"}'] == parse_bar_key(keys[3]).timestamp()
    assert got['tradegraph_reconciliation_mismatches{account="live"}'] == 1
    assert got['tradegraph_kill_switch_state{account="live",state="HALTED"}'] == 1
    assert got['tradegraph_alert_deliveries_total{kind="kill_switch",result="sent"}'] == 1

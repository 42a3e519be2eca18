"""Real market data end to end (issue 10, done-when): the QuantConnect LEAN sample minute bars of AIG, BAC, IBM
and SPY (6 sessions of October 2013, with quotes) in ``../shared/data/lean_minute_2013-10``, pointed at with
the ``files`` source as a desk would: ``tradegraph data check`` first, then train a small registry, replay the
last session at 1 minute and, aggregated by us, at 5 minutes, audit a replayed bar (identical) and explain a
decision. Skips with the reason when the data folder is absent (a user's clone has no ``../shared``).

The folder: ``$TRADEGRAPH_SHARED_DATA`` when set, else ``<repo>/../shared/data``, else ``/work/shared/data`` (a
git worktree of the repo sits one level deeper than the clone the default assumes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from CONFIG.config_loader import PROJECT_ROOT, reset_config

FOLDER = "lean_minute_2013-10"
SYMBOLS = ["AIG", "BAC", "IBM", "SPY"]
LAST_SESSION = "2013-10-11"


def shared_data() -> Path | None:
    candidates = [os.environ.get("TRADEGRAPH_SHARED_DATA"), str(PROJECT_ROOT.parent / "shared" / "data"),
                  "/work/shared/data"]
    for c in candidates:
        if c and (Path(c) / FOLDER).is_dir():
            return Path(c) / FOLDER
    return None


DATA = shared_data()
pytestmark = pytest.mark.skipif(DATA is None, reason=f"real data folder {FOLDER} not found (set "
                                                     "TRADEGRAPH_SHARED_DATA, or place ../shared/data beside "
                                                     "the repo): a user's clone has no ../shared")


def config(files: Path, minutes: int, registry: Path, lineage: Path) -> dict:
    """What a desk sets for these files: the source, the calendar's span, the bar size, enough history for a
    session's lookback, a training window inside the data, and IC over 4 names."""
    return {
        "market": {"source": "files", "files_dir": str(files), "bar_minutes": minutes,
                   "partitions_start": "2013-10-01", "partitions_end": "2013-10-31",
                   "history_bars": 420 if minutes == 1 else 120},
        # each config its own replay account and kill switch: replaying the same session again into an account
        # that traded it is refused (AccountAhead)
        "paths": {"registry": str(registry), "lineage_db": str(lineage),
                  "replay_broker_db": str(lineage.with_name(f"{lineage.stem}_replay_broker.duckdb")),
                  "kill_switch_state": str(lineage.with_name(f"{lineage.stem}_kill_switch.json"))},
        "training": {"train_sessions": 5, "train_end": LAST_SESSION, "ic_min_symbols": 3, "threads": 1,
                     "lightgbm": {"n_estimators": 60, "min_child_samples": 50},
                     "barrier_lightgbm": {"n_estimators": 60, "min_child_samples": 50},
                     "sequential": {"epochs": 1, "max_train_rows": 3000, "max_valid_rows": 1000}},
        "sizing": {"no_trade_band": 0.002},
    }


def five_minute_files(src: Path, dst: Path) -> Path:
    """The minute files aggregated to 5-minute bars (close-stamped, UTC), as a desk would resample them."""
    dst.mkdir()
    for sym in SYMBOLS:
        f = pd.read_csv(src / f"{sym}.csv")
        ts = pd.to_datetime(f["ts"], utc=True)
        bucket = (ts - pd.Timedelta(minutes=1)).dt.floor("5min") + pd.Timedelta(minutes=5)
        g = f.assign(bucket=bucket).groupby("bucket").agg(
            open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
            volume=("volume", "sum"), bid=("bid", "last"), ask=("ask", "last")).reset_index()
        g.insert(0, "ts", g.pop("bucket").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        g.to_csv(dst / f"{sym}.csv", index=False)
    return dst


def use(cfg: dict, path: Path, monkeypatch) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("TRADEGRAPH_CONFIG", str(path))
    reset_config()
    return path


def train_and_replay(cfg_file: Path) -> tuple[list[str], object]:
    import datetime as dt

    from dagster_project.commands.replay import ReplayEngine, bars_between
    from resources.kill_switch.resource import switch_for
    from TRAINING.train import train_all

    summary = train_all(progress=False, force=True)  # 4 names: an IC is measured, however small
    assert len(summary.rows) == 12 and summary.window["last_session"] == "2013-10-10"
    bars = bars_between(LAST_SESSION, LAST_SESSION)
    switch_for("replay").init(dt.datetime.now(dt.UTC), "test: this config's replay account")
    result = ReplayEngine().run(bars)
    return bars, result


def test_real_minute_data_end_to_end(tmp_path, monkeypatch, capsys):
    from dagster_project.commands import cli
    from dagster_project.commands.explain import explain
    from resources.lineage.store import LineageStore

    one = use(config(DATA, 1, tmp_path / "reg1", tmp_path / "lineage1.duckdb"), tmp_path / "one.yaml", monkeypatch)
    assert cli.main(["data", "check", "--dir", str(DATA)]) == 0
    out = capsys.readouterr().out
    assert "4 accepted, 0 refused" in out and "interval 1 min" in out
    bars, result = train_and_replay(one)
    assert len(bars) == 390 and result.orders > 0 and result.fills > 0
    store = LineageStore()
    skips = store.read_sql("SELECT symbol, rule FROM bars_skips") if "bars_skips" in store.tables() else None
    assert skips is None or len(skips) == 0  # the real files are clean: nothing skipped
    missing = store.read_sql("SELECT symbol, count(*) AS n FROM bars WHERE status = 'missing' GROUP BY symbol")
    assert set(missing["symbol"]) <= {"AIG", "IBM"}  # the minutes without a trade, recorded as missing
    traded = store.read_sql("SELECT bar, symbol FROM sized_orders WHERE has_order ORDER BY bar, symbol LIMIT 1")
    bar, symbol = traded["bar"].iloc[0], traded["symbol"].iloc[0]
    chain = explain(bar, symbol)
    assert chain["features"] and chain["predictions"] and chain["size"] and chain["execution"]
    assert np.isfinite(chain["features"][0]["overnight"]) and chain["features"][0]["quote_age_bars"] is not None
    assert cli.main(["explain", "--bar", bar, "--symbol", symbol]) == 0 and symbol in capsys.readouterr().out
    env = dict(os.environ, TRADEGRAPH_CONFIG=str(one))
    audited = subprocess.run([sys.executable, "-m", "dagster_project.commands.cli", "audit", "--bar", bar],
                             cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "identical" in audited.stdout and "differ" not in audited.stdout.lower()

    five = five_minute_files(DATA, tmp_path / "five")
    use(config(five, 5, tmp_path / "reg5", tmp_path / "lineage5.duckdb"), tmp_path / "five.yaml", monkeypatch)
    assert cli.main(["data", "check", "--dir", str(five)]) == 0 and "interval 5 min" in capsys.readouterr().out
    bars5, result5 = train_and_replay(tmp_path / "five.yaml")
    assert len(bars5) == 78
    store5 = LineageStore()
    pnl = store5.read_sql("SELECT portfolio_value FROM pnl ORDER BY bar")
    assert len(pnl) == 78 and np.isfinite(pnl["portfolio_value"]).all()
    alpha = store5.read_sql("SELECT alpha FROM blended_alpha")
    assert np.isfinite(alpha["alpha"]).mean() > 0.9  # every model ran on the 5-minute bars

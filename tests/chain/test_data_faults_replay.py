"""Issue 10 on the whole bar loop (the replay engine, i.e. the same stage functions the assets call), with the
``files`` source fed the embedded market's bars and one fault planted:

- a ×100 print on a held name: equity does not jump, nothing is sized on it, no loss limit fires;
- a held name without rows for four bars: valued at its last good mark (flagged stale), no loss limit fires;
- a feed that stalls (every file cut mid-session): the next bar is a recorded empty bar, STALE_DATA trips, and
  the bar after it does not crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from resources.market.calendar import bar_key
from resources.market.simulator import MarketSimulator
from tests.conftest import arm_switches

SYMBOLS = [f"S{i:03d}" for i in range(1, 11)]
FIRST, LAST = "2025-05-01", "2025-06-03"
REPLAY = "2025-06-02"


@pytest.fixture(scope="module")
def sim_bars() -> pd.DataFrame:
    reset_config()
    sim = MarketSimulator()
    days = sim.cal.sessions(FIRST, LAST)
    frame = pd.concat([sim.session_frame(d) for d in days], ignore_index=True)
    return frame[frame["symbol"].isin(SYMBOLS)].reset_index(drop=True)


def write_files(directory: Path, frame: pd.DataFrame) -> Path:
    directory.mkdir(parents=True)
    for sym, g in frame.groupby("symbol"):
        out = g.drop(columns="symbol").assign(ts=g["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.to_csv(directory / f"{sym}.csv", index=False)
    return directory


def replay(home: Path, files: Path, bars: list[str], monkeypatch, record: bool = False) -> list[dict]:
    """Each bar's outputs of a fresh replay (own paper account, kill switch, lineage) on the files."""
    from dagster_project.commands.replay import ReplayEngine

    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TRADEGRAPH_HOME", str(home))
    monkeypatch.setenv("TRADEGRAPH__MARKET__SOURCE", "files")
    monkeypatch.setenv("TRADEGRAPH__MARKET__FILES_DIR", str(files))
    reset_config()
    arm_switches()  # a fresh home: its replay kill switch is armed as every first start is
    engine = ReplayEngine(record=record)
    try:
        return [engine.step(b) for b in bars]
    finally:
        engine.close()


def session_bars(n: int) -> list[str]:
    from resources.market.calendar import get_calendar

    return [bar_key(t) for t in get_calendar().session_bars(REPLAY)[:n]]


def held_at(outputs: list[dict]) -> tuple[int, str]:
    """The first bar index where a symbol is held before the bar's orders and was already held at the bar
    before (so the position exists before the bar's own open: a fill at that open is not the case tested)."""
    def held(out: dict) -> set[str]:
        pos = out["positions"]["positions"]
        return set(pos.loc[pos["qty"] != 0, "symbol"])

    for i in range(2, len(outputs) - 5):
        both = held(outputs[i - 1]) & held(outputs[i])
        if both:
            return i, sorted(both)[0]
    pytest.fail("the baseline replay never held a position for two bars")


def trips(out: dict) -> set[str]:
    ev = out["executions"]["executions_killswitch"]
    return set(ev.loc[ev["verdict"] == "TRIP", "check"])


@pytest.fixture
def baseline(trained, sim_bars, tmp_path, monkeypatch):
    files = write_files(tmp_path / "files_base", sim_bars)
    bars = session_bars(30)
    outs = replay(tmp_path / "base", files, bars, monkeypatch)
    return bars, outs


def account(out: dict) -> pd.Series:
    return out["positions"]["positions_account"].iloc[0]


def test_a_x100_print_on_a_held_name_is_skipped_and_moves_nothing(baseline, sim_bars, tmp_path, monkeypatch):
    bars, base = baseline
    i, sym = held_at(base)
    t = pd.Timestamp(bars[i].replace("Z", ""), tz="UTC")
    bad = sim_bars.copy()
    hit = (bad["symbol"] == sym) & (bad["ts"] == t)
    for col in ("open", "high", "low", "close", "bid", "ask"):  # a consistent bar, only ×100
        bad.loc[hit, col] *= 100
    outs = replay(tmp_path / "x100", write_files(tmp_path / "files_x100", bad), bars[:i + 3], monkeypatch,
                  record=True)
    for k in range(i):  # identical until the bad print
        pd.testing.assert_frame_equal(outs[k]["sized_orders"], base[k]["sized_orders"])
    out = outs[i]
    skips = out["bars"].skips
    assert skips[["symbol", "rule"]].values.tolist() == [[sym, "price jump beyond recent volatility, unconfirmed"]]
    assert out["bars"].snapshot.set_index("symbol").loc[sym, "status"].startswith("skipped: price jump")
    pos = out["positions"]["positions"].set_index("symbol").loc[sym]
    prev_close = base[i - 1]["bars"].snapshot.set_index("symbol").loc[sym, "close"]
    assert pos["price"] == prev_close and pos["mark_stale"]  # its last good mark, flagged
    real_close = base[i]["bars"].snapshot.set_index("symbol").loc[sym, "close"]
    # the book before the bar is the same; only the held name's mark differs: the last good one, not ×100
    assert account(out)["portfolio_value"] == pytest.approx(
        account(base[i])["portfolio_value"] + pos["qty"] * (prev_close - real_close), rel=1e-12)
    assert abs(account(out)["portfolio_value"] / account(base[i])["portfolio_value"] - 1) < 0.01
    assert sym not in set(out["sized_orders"]["symbol"])  # nothing is sized on a skipped row
    assert not (trips(out) | trips(outs[i + 1]) | trips(outs[i + 2])) & {"drawdown", "daily_loss"}
    from dagster_project.commands.explain import explain

    chain = explain(bars[i], sym)  # lineage says why the symbol had no bar
    assert [r["rule"] for r in chain["skipped rows"]] == ["price jump beyond recent volatility, unconfirmed"]
    assert chain["bar"][0]["status"].startswith("skipped: price jump") and not chain["size"]


def test_a_held_name_without_rows_keeps_its_last_good_mark(baseline, sim_bars, tmp_path, monkeypatch):
    bars, base = baseline
    i, sym = held_at(base)
    gone = pd.DatetimeIndex([pd.Timestamp(b.replace("Z", ""), tz="UTC") for b in bars[i:i + 4]])
    cut = sim_bars[~((sim_bars["symbol"] == sym) & sim_bars["ts"].isin(gone))]
    outs = replay(tmp_path / "halt", write_files(tmp_path / "files_halt", cut), bars[:i + 5], monkeypatch)
    prev_close = base[i - 1]["bars"].snapshot.set_index("symbol").loc[sym, "close"]
    for k in range(i, i + 4):
        pos = outs[k]["positions"]["positions"].set_index("symbol")
        assert outs[k]["bars"].snapshot.set_index("symbol").loc[sym, "status"] == "missing"
        if sym in pos.index and pos.loc[sym, "qty"] != 0:
            assert pos.loc[sym, "price"] == prev_close and pos.loc[sym, "mark_stale"]
            assert np.isfinite(account(outs[k])["portfolio_value"]) and account(outs[k])["stale_marks"] >= 1
        assert not trips(outs[k]) & {"drawdown", "daily_loss"}
    # valued at its last mark, the portfolio is within a normal bar's move of the baseline (not 3 % down)
    assert abs(account(outs[i])["portfolio_value"] / account(base[i])["portfolio_value"] - 1) < 0.005
    back = outs[i + 4]["positions"]["positions"].set_index("symbol")
    if sym in back.index and back.loc[sym, "qty"] != 0:
        assert not back.loc[sym, "mark_stale"]  # marked at its own close again


def test_a_stalled_feed_trips_stale_data_and_the_empty_bar_is_recorded(trained, sim_bars, tmp_path, monkeypatch):
    bars = session_bars(14)
    stop = pd.Timestamp(bars[10].replace("Z", ""), tz="UTC")
    cut = sim_bars[sim_bars["ts"] <= stop]  # every file ends at the 11th bar
    outs = replay(tmp_path / "stall", write_files(tmp_path / "files_stall", cut), bars, monkeypatch)
    assert not trips(outs[10]) & {"stale_data", "fresh_rows"}
    empty = outs[11]
    assert (empty["bars"].snapshot["status"] == "missing").all()
    assert empty["bars"].skips["rule"].tolist() == ["empty bar: no symbol of the universe has a row"]
    assert "fresh_rows" in trips(empty)
    assert empty["executions"]["executions_killswitch"].query("check == 'transition'")["transition"].tolist() == [
        "ACTIVE->HALTED"]
    assert len(outs) == 14 and outs[13]["predictions"]["predictions"].empty  # the next bars do not crash
    assert os.environ["TRADEGRAPH__MARKET__SOURCE"] == "files"

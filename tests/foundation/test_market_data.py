import datetime as dt

import numpy as np
import pandas as pd
import pytest

from resources.market.calendar import parse_bar_key
from resources.market.simulator import MarketSimulator
from resources.market.sources import DataError, FilesSource

DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def sim():
    return MarketSimulator()


def test_simulator_is_deterministic_across_instances(sim):
    a = sim.session_frame(DAY)
    b = MarketSimulator().session_frame(DAY)
    pd.testing.assert_frame_equal(a, b)
    assert len(a["symbol"].unique()) == 50


def test_simulated_bars_are_sane(sim):
    f = sim.session_frame(DAY)
    assert (f["high"] >= f[["open", "close"]].max(axis=1)).all()
    assert (f["low"] <= f[["open", "close"]].min(axis=1)).all()
    assert (f["ask"] > f["bid"]).all() and (f["volume"] >= 0).all()
    spread = ((f["ask"] - f["bid"]) / f["close"] * 1e4).groupby(f["ts"]).mean()
    assert spread.iloc[0] > spread.iloc[len(spread) // 2]  # spreads widen with the U-shaped volatility


def test_half_day_has_42_bars(sim):
    assert sim.session_frame(dt.date(2026, 11, 27))["ts"].nunique() == 42
    with pytest.raises(ValueError, match="not a simulated session"):
        sim.session_frame(dt.date(2026, 11, 26))


def test_planted_reversal_is_in_the_data(sim):
    frames = pd.concat([sim.session_frame(d) for d in sim.cal.sessions("2026-10-01", "2026-10-20")])
    close = frames.pivot(index="ts", columns="symbol", values="close")
    r = np.log(close).diff()
    resid = r.sub(r.mean(axis=1), axis=0)
    corr = resid.stack().corr(resid.shift(-1).stack())
    assert corr < -0.05  # idiosyncratic one-bar reversal


def _write_files(tmp_path, frame):
    d = tmp_path / "bars"
    d.mkdir(exist_ok=True)
    for sym, g in frame.groupby("symbol"):
        g.drop(columns="symbol").assign(ts=g["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(d / f"{sym}.csv",
                                                                                              index=False)
    return d


@pytest.fixture
def day_frame(sim):
    f = sim.session_frame(DAY)
    return f[f["symbol"].isin(["S001", "S002", "S003"])].reset_index(drop=True)


def test_files_source_round_trips(tmp_path, day_frame):
    src = FilesSource(_write_files(tmp_path, day_frame))
    bar = parse_bar_key("2026-11-24T15:00Z")
    h = src.history(bar, 6)
    assert sorted(h["symbol"].unique()) == ["S001", "S002", "S003"]
    assert h["ts"].nunique() == 6 and h["ts"].max() == bar and src.skips.empty
    pd.testing.assert_frame_equal(h[["ts", "symbol", "close", "bid", "ask"]].reset_index(drop=True),
                                  day_frame[day_frame["ts"].isin(h["ts"])][["ts", "symbol", "close", "bid", "ask"]]
                                  .reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("rule, mutate", [
    ("high < low", lambda f: f.assign(high=np.where(f.index == 4, f["low"] - 1, f["high"]))),
    ("non-positive or missing price", lambda f: f.assign(close=np.where(f.index == 4, -1.0, f["close"]))),
    ("non-positive or missing price", lambda f: f.assign(close=np.where(f.index == 4, np.nan, f["close"]))),
    ("non-positive or missing price", lambda f: f.assign(close=np.where(f.index == 4, 0.0, f["close"]))),
    ("non-positive or missing price", lambda f: f.assign(low=np.where(f.index == 4, -0.5, f["low"]))),
    ("open or close outside high-low", lambda f: f.assign(close=np.where(f.index == 4, f["high"] * 1.001, f["close"]))),
    ("NaN or negative volume", lambda f: f.assign(volume=np.where(f.index == 4, np.nan, f["volume"]))),
    ("NaN or negative volume", lambda f: f.assign(volume=np.where(f.index == 4, -5.0, f["volume"]))),
    ("missing or non-positive bid/ask", lambda f: f.assign(bid=np.where(f.index == 4, np.nan, f["bid"]))),
    ("crossed quote (bid > ask)", lambda f: f.assign(bid=np.where(f.index == 4, f["ask"] * 1.0001, f["bid"]))),
    ("close outside its quote", lambda f: f.assign(bid=np.where(f.index == 4, f["close"] * 1.01, f["bid"]),
                                                  ask=np.where(f.index == 4, f["close"] * 1.011, f["ask"]))),
    ("not on the bar grid", lambda f: f.assign(ts=np.where(f.index == 4, f["ts"] + pd.Timedelta(minutes=2), f["ts"]))),
    ("outside the regular session", lambda f: pd.concat([f, f.iloc[[-1]].assign(
        ts=pd.Timestamp("2026-11-24 22:00", tz="UTC"))], ignore_index=True)),
    ("duplicated bar (repeated row)", lambda f: pd.concat([f.iloc[:5], f.iloc[[4]], f.iloc[5:]], ignore_index=True)),
    ("duplicated bar (conflicting rows)", lambda f: pd.concat([f.iloc[:5], f.iloc[[4]].assign(volume=1.0),
                                                               f.iloc[5:]], ignore_index=True)),
])
def test_files_source_bad_rows_are_recorded_skips(tmp_path, day_frame, rule, mutate):
    """Every kind of bad row is a recorded skip (file, symbol, ts, rule), the rest of the file trades."""
    one = day_frame[day_frame["symbol"] == "S001"].reset_index(drop=True)
    bad = mutate(one)
    src = FilesSource(_write_files(tmp_path, bad))
    assert src.skips["rule"].tolist() == [rule] * len(src.skips) and src.skips["rows"].sum() >= 1
    assert src.skips["file"].str.endswith("S001.csv").all() and (src.skips["symbol"] == "S001").all()
    kept = len(src.history(parse_bar_key("2026-11-24T21:00Z"), 78))
    added = rule in ("outside the regular session", "duplicated bar (repeated row)")  # an extra row, the bar kept
    assert kept == len(one) - (0 if added else 1)
    if rule == "duplicated bar (conflicting rows)":  # which copy is right is unknown: both are skipped
        assert src.skips["rows"].sum() == 2


def test_files_out_of_order_is_an_error_naming_file_and_row(tmp_path, day_frame):
    one = day_frame[day_frame["symbol"] == "S002"].reset_index(drop=True)
    one = pd.concat([one.iloc[:5], one.iloc[[6, 5]], one.iloc[7:]], ignore_index=True)
    with pytest.raises(DataError, match=r"S002\.csv: row 6: .*before the previous row"):
        FilesSource(_write_files(tmp_path, one))


def test_missing_symbol_at_a_bar_is_recorded_missing(tmp_path, day_frame):
    from assets.bars.logic import build_window

    bar = parse_bar_key("2026-11-24T15:00Z")
    frame = day_frame[~((day_frame["symbol"] == "S003") & (day_frame["ts"] == bar))]
    src = FilesSource(_write_files(tmp_path, frame))
    times = src.calendar.previous_bars(bar, 6)
    window, _ = build_window("2026-11-24T15:00Z", bar, times, src.history(bar, 6), src.symbols(),
                             pd.Series(1e6, index=src.symbols()))
    status = window.snapshot.set_index("symbol")["status"]
    assert status.to_dict() == {"S001": "ok", "S002": "ok", "S003": "missing"}
    assert np.isnan(window.snapshot.set_index("symbol").loc["S003", "close"])


def test_snapshot_validation_skips_bad_rows_and_refuses_duplicates():
    from assets.bars.logic import validate_snapshot

    ts = pd.Timestamp("2026-11-24 15:00", tz="UTC")
    rows = pd.DataFrame({"ts": [ts] * 3, "symbol": ["A", "B", "C"], "open": [1.0, 1.0, 1.0],
                         "high": [1.1, 0.9, 1.1], "low": [0.9, 1.0, 0.9], "close": [1.0, 1.0, 0.0],
                         "volume": [10.0, 10.0, 10.0], "bid": [0.99] * 3, "ask": [1.01] * 3})
    ok, skips = validate_snapshot(rows)
    assert ok["symbol"].tolist() == ["A"]
    assert skips.set_index("symbol")["rule"].to_dict() == {"B": "high < low", "C": "non-positive or missing price"}
    with pytest.raises(ValueError, match="duplicated bar for A"):
        validate_snapshot(pd.concat([rows, rows.iloc[[0]]]))


def test_quote_age_reaches_the_gate_from_a_repeated_quote(tmp_path, day_frame):
    """Issue 10: the gate was always given a quote age of 0; a feed repeating its last quote must go stale."""
    from assets.bars.logic import build_window
    from assets.features.logic import features_for_window

    frozen = day_frame.copy()
    s1 = frozen["symbol"] == "S001"
    first = frozen.loc[s1, "ts"].iloc[10]
    hold = s1 & (frozen["ts"] >= first)
    frozen.loc[hold, "bid"] = frozen.loc[s1 & (frozen["ts"] == first), "bid"].item()
    frozen.loc[hold, "ask"] = frozen.loc[s1 & (frozen["ts"] == first), "ask"].item()
    frozen.loc[hold, "close"] = frozen.loc[hold, ["bid", "ask"]].mean(axis=1)  # inside its (stale) quote
    frozen.loc[hold, "high"] = frozen.loc[hold, ["high", "close"]].max(axis=1)
    frozen.loc[hold, "low"] = frozen.loc[hold, ["low", "close"]].min(axis=1)
    src = FilesSource(_write_files(tmp_path, frozen))
    bar = frozen.loc[s1, "ts"].iloc[16]
    times = src.calendar.previous_bars(bar, 120)
    window, _ = build_window("2026-11-24T15:55Z", bar, times, src.history(bar, 120), src.symbols(),
                             pd.Series(1e6, index=src.symbols()))
    age = window.snapshot.set_index("symbol")["quote_age_bars"]
    assert age["S001"] == 6.0 and age["S002"] == 0.0  # unchanged since bar 10: six bars old
    assert not window.snapshot["spread_estimated"].any()
    f = features_for_window(window).set_index("symbol")
    assert f.loc["S001", "quote_age_bars"] == 6.0


def test_adv_comes_from_the_table_built_at_load(tmp_path, day_frame, sim):
    """ADV is computed once per load (issue 10: it mapped the calendar over every row of every file each bar)."""
    frames = pd.concat([sim.session_frame(d) for d in sim.cal.sessions("2026-11-18", "2026-11-24")])
    src = FilesSource(_write_files(tmp_path, frames[frames["symbol"].isin(["S001", "S002"])]))
    want = frames[frames["symbol"] == "S001"].assign(day=lambda f: f["ts"].dt.tz_convert("America/New_York")
                                                     .dt.date)
    daily = want[want["day"] < DAY].groupby("day")["volume"].sum()
    src._rows = None  # nothing per bar may read the rows again
    adv = src.adv_shares(DAY)
    assert adv["S001"] == pytest.approx(daily.mean(), rel=1e-12) and len(daily) == 4


def test_the_bars_asset_records_and_counts_the_skips(tmp_path, day_frame, monkeypatch):
    import dagster as dg

    from assets.bars.asset import bars
    from dagster_project.definitions import defs
    from resources.lineage.store import LineageStore

    bad = day_frame.copy()
    hit = (bad["symbol"] == "S002") & (bad["ts"] == pd.Timestamp("2026-11-24 15:00", tz="UTC"))
    bad.loc[hit, "volume"] = np.nan
    monkeypatch.setenv("TRADEGRAPH__MARKET__SOURCE", "files")
    monkeypatch.setenv("TRADEGRAPH__MARKET__FILES_DIR", str(_write_files(tmp_path, bad)))
    from CONFIG.config_loader import reset_config

    reset_config()
    result = dg.materialize([bars], partition_key="2026-11-24T15:00Z", resources=defs.resources)
    meta = result.asset_materializations_for_node("bars")[0].metadata
    assert meta["rows_skipped"].value == 1 and meta["symbols_skipped"].value == 1
    assert meta["skips_by_rule"].value == {"NaN or negative volume": 1}
    rec = LineageStore().read_partition("bars_skips", "2026-11-24T15:00Z")
    assert rec[["symbol", "rule", "rows"]].values.tolist() == [["S002", "NaN or negative volume", 1]]
    assert rec["file"].iloc[0].endswith("S002.csv")

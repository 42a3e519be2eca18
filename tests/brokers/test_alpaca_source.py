"""The alpaca market source through alpaca-py's data client against mocked HTTP: start → close stamps,
regular-session bars only, batching and pagination, recorded skips, ADV from daily bars, the files cache."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import responses

from CONFIG.config_loader import use_config
from resources.credentials import AlpacaKeys
from resources.market.alpaca import AlpacaDataError, AlpacaSource, bars_frame, to_contract, universe
from resources.market.calendar import get_calendar
from resources.market.sources import FilesSource
from tests.brokers.alpaca_mock import AlpacaVenue
from tests.brokers.conftest import KEY_ID, SECRET

BAR = pd.Timestamp("2025-06-03T13:45Z")  # 09:45 New York: the session's third 5-minute bar close


def test_a_bar_stamped_at_its_start_becomes_the_bar_closing_five_minutes_later():
    raw = {"AAA": [{"t": "2025-06-03T13:30:00Z", "o": 10.0, "h": 11.0, "l": 9.0, "c": 10.5, "v": 1000},
                   {"t": "2025-06-03T13:25:00Z", "o": 10.0, "h": 10.0, "l": 10.0, "c": 10.0, "v": 5}]}
    closes = get_calendar().session_bars("2025-06-03")
    rows, skips, _ = to_contract(bars_frame(raw), closes, 5)
    assert rows["ts"].tolist() == [pd.Timestamp("2025-06-03T13:35Z")]
    # no quote in Alpaca bars: the Abdi–Ranaldo estimate needs market.spread_estimator_bars // 2 earlier bars of
    # the symbol, so a lone bar has none (its spread is unknown, not invented)
    assert rows[["bid", "ask"]].isna().all(axis=None)
    assert skips["ts"].tolist() == [pd.Timestamp("2025-06-03T13:30Z")]  # the 09:25 pre-market bar
    assert "start 2025-06-03T13:25Z" in skips["rule"].iloc[0] and "regular-session" in skips["rule"].iloc[0]


def test_the_universe_is_checked():
    assert universe(["msft", "AAPL", "aapl"], None).tolist() == ["AAPL", "MSFT"]
    with pytest.raises(AlpacaDataError, match="quote it"):
        universe(["AAPL", True], None)  # YAML's reading of ON
    with pytest.raises(AlpacaDataError, match="market.alpaca.symbols"):
        universe([], None)


def _venue_with_bars(rsps, symbols, bars_page=10_000) -> AlpacaVenue:
    """Every 5-minute bar (start stamps) of 2025-06-02 and -03 incl. extended hours, and daily bars."""
    venue = AlpacaVenue(bars_page=bars_page).install(rsps)
    starts = pd.date_range("2025-06-02T08:00Z", "2025-06-03T23:55Z", freq="5min")
    rows = [(s, t, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1000.0 + i)
            for i, s in enumerate(symbols) for t in starts]
    venue.bars = pd.DataFrame(rows, columns=["symbol", "t", "o", "h", "l", "c", "v"])
    days = [pd.Timestamp(d).tz_localize("America/New_York").tz_convert("UTC")
            for d in get_calendar().sessions("2025-04-01", "2025-06-02")]
    venue.daily = pd.DataFrame([(s, t, 1.0, 1.0, 1.0, 1.0, 1e6 * (k + 1)) for k, s in enumerate(symbols) for t in days],
                               columns=["symbol", "t", "o", "h", "l", "c", "v"])
    return venue


@pytest.fixture
def source_config(tmp_path):
    with use_config({"market": {"alpaca": {"symbols_per_request": 2, "cache_dir": str(tmp_path / "cache")}}}):
        yield tmp_path / "cache"


def test_history_is_the_regular_session_grid_fetched_in_batches_and_pages(source_config):
    symbols = ["AAA", "BBB", "CCC"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        venue = _venue_with_bars(rsps, symbols, bars_page=50)
        src = AlpacaSource(AlpacaKeys(KEY_ID, SECRET), symbols=symbols)
        hist = src.history(BAR, 80)
    closes = get_calendar().previous_bars(BAR, 80)
    assert sorted(set(hist["ts"])) == list(closes) and len(hist) == 80 * 3
    assert hist["ts"].min() == closes[0] and not (hist["ts"].dt.hour < 13).any()  # no pre-market bar
    first = hist[(hist["symbol"] == "BBB") & (hist["ts"] == BAR)].iloc[0]
    assert first["close"] == 101.5  # BBB's bar that *started* at 13:40
    calls = venue.calls("GET", "/v2/stocks/bars")
    # 2 sessions × 2 batches (2 + 1 symbols), pages of 50 bars: session 1 has 77 bars × 2 symbols → 4 pages …
    assert {c["symbols"] for c in calls} == {"AAA,BBB", "CCC"} and all(c["timeframe"] == "5Min" for c in calls)
    assert any("page_token" in c for c in calls) and all(c["feed"] == "iex" and c["adjustment"] == "raw" for c in calls)
    assert src.drain_skips().empty


def test_off_grid_vendor_bars_are_recorded_skips(source_config):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        venue = _venue_with_bars(rsps, ["AAA"])
        odd = pd.DataFrame([("AAA", pd.Timestamp("2025-06-03T13:37Z"), 1.0, 1.0, 1.0, 1.0, 1.0)],
                           columns=venue.bars.columns)
        venue.bars = pd.concat([venue.bars, odd], ignore_index=True)
        src = AlpacaSource(AlpacaKeys(KEY_ID, SECRET), symbols=["AAA"])
        src.history(BAR, 3)
    skips = src.drain_skips()
    assert skips["ts"].tolist() == [pd.Timestamp("2025-06-03T13:42Z")] and "start 2025-06-03T13:37Z" in skips["rule"][0]
    assert src.drain_skips().empty  # drained once


def test_adv_is_the_mean_daily_volume_of_the_prior_sessions(source_config):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _venue_with_bars(rsps, ["AAA", "BBB"])
        src = AlpacaSource(AlpacaKeys(KEY_ID, SECRET), symbols=["AAA", "BBB", "ZZZ"])
        adv = src.adv_shares(dt.date(2025, 6, 3))
    assert adv.to_dict()["AAA"] == 1e6 and adv.to_dict()["BBB"] == 2e6 and np.isnan(adv["ZZZ"])


def test_what_was_fetched_is_cached_and_the_files_source_reads_it(source_config):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _venue_with_bars(rsps, ["AAA", "BBB"])
        src = AlpacaSource(AlpacaKeys(KEY_ID, SECRET), symbols=["AAA", "BBB"])
        hist = src.history(BAR, 10)
        src.history(BAR, 12)  # overlapping window: only the new bars are added, nothing duplicated
    files = FilesSource(source_config)
    assert files.symbols().tolist() == ["AAA", "BBB"] and files.skips.empty
    again = files.history(BAR, 10)
    pd.testing.assert_frame_equal(again[["ts", "symbol", "open", "high", "low", "close", "volume"]],
                                  hist[["ts", "symbol", "open", "high", "low", "close", "volume"]], check_dtype=False)
    assert len(files.history(BAR, 12)) == 24


def test_vendor_rows_meet_the_same_row_rules_and_price_sanity_as_files():
    """A vendor is not trusted more than a file: bad rows, a lasting x100 print and a split-like open in
    Alpaca's bars are recorded skips / holds, never prices (found by an independent check: the alpaca source
    applied no row rule or price sanity)."""
    day1, day2 = get_calendar().session_bars("2025-06-02"), get_calendar().session_bars("2025-06-03")
    starts = [t - pd.Timedelta(minutes=5) for t in [*day1, *day2]]
    bars = {}
    for sym in ("AAA", "BBB", "CCC", "DDD"):
        bars[sym] = [{"t": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": 100.0, "h": 100.2, "l": 99.8,
                      "c": 100.0 + 0.01 * (i % 3), "v": 1000} for i, t in enumerate(starts)]
    n1 = len(day1)
    bars["AAA"][10].update(c=float("nan"))                               # a missing close
    bars["BBB"][11].update(h=99.0, l=101.0)                              # high < low
    for row in bars["CCC"][20:]:                                         # cents from row 20 on (lasting x100)
        row.update(o=row["o"] * 100, h=row["h"] * 100, l=row["l"] * 100, c=row["c"] * 100)
    for row in bars["DDD"][n1:]:                                         # an unadjusted 2:1 split at day 2's open
        row.update(o=row["o"] / 2, h=row["h"] / 2, l=row["l"] / 2, c=row["c"] / 2)
    rows, skips, flags = to_contract(bars_frame(bars), pd.DatetimeIndex([*day1, *day2]), 5)
    rules = skips.groupby(["symbol", "rule"])["rows"].sum()
    assert rules[("AAA", "non-positive or missing price")] == 1
    assert rules[("BBB", "high < low")] == 1
    ccc = rows[rows["symbol"] == "CCC"]
    assert len(ccc) == 20 and ccc["close"].max() < 101                   # no cent-priced row ever became a price
    assert skips[skips["symbol"] == "CCC"]["rows"].sum() == len(starts) - 20
    assert flags["symbol"].tolist() == ["DDD"] and flags["split_ratio"].tolist() == [2.0]
    assert flags["ts"].tolist() == [day2[0]]

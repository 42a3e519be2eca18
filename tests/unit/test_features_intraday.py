"""SPEC §4 σ and returns use intraday bar returns only: the session's first bar returns open → close, the
close-to-open overnight gap is its own feature. Values worked by hand on a two-session panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import Panel
from assets.features.logic import FeatureParams, features_at, session_starts
from resources.market.calendar import get_calendar

P = FeatureParams(version="t", return_lookbacks=(1, 3), vol_windows=(2, 4), volume_window=2, range_window=1,
                  ewma_halflife_bars=1.0, ewma_window_bars=4, min_valid_share=0.5, bars_per_session=3, bar_minutes=5)


def panel() -> Panel:
    """y1 … y3: the last bars of 2025-06-02 (closes 100, 101, 102); t1 … t3: the first bars of 2025-06-03, t1
    opening at 110 (an overnight gap of log 110/102) and closing 111, then 112 and 110."""
    cal = get_calendar()
    times = cal.bar_closes("2025-06-02", "2025-06-03")
    times = times[(times > pd.Timestamp("2025-06-02 19:45", tz="UTC"))][:6]
    close = np.array([100.0, 101.0, 102.0, 111.0, 112.0, 110.0])
    open_ = np.array([100.0, 100.0, 101.0, 110.0, 111.0, 112.0])
    two = lambda a: np.column_stack([a, a * 2])  # noqa: E731 (a second symbol at twice the price: same returns)
    fields = {"close": two(close), "open": two(open_), "high": two(np.maximum(open_, close)),
              "low": two(np.minimum(open_, close)), "volume": two(np.full(6, 1000.0)), "bid": two(close - 0.01),
              "ask": two(close + 0.01)}
    return Panel(times, np.array(["A", "B"]), fields)


def test_session_starts_are_the_grid_gaps():
    p = panel()
    assert [t.strftime("%H:%M") for t in p.times.tz_convert("America/New_York")] == [
        "15:50", "15:55", "16:00", "09:35", "09:40", "09:45"]
    assert session_starts(p.times, 5).tolist() == [False, False, False, True, False, False]


def test_returns_and_sigma_leave_the_overnight_gap_out_and_keep_it_as_a_feature():
    x = features_at(panel(), 0.1, np.array([1e6, 1e6]), P)
    f = dict(zip(P.names + ["price", "mid", "sigma_bps", "sigma_daily_bps", "adv_shares", "adv_bar_dollars"],
                 x[0], strict=True))
    r_y3, r_t1, r_t2, r_t3 = np.log(102 / 101), np.log(111 / 110), np.log(112 / 111), np.log(110 / 112)
    assert f["ret_1"] == pytest.approx(np.log(110 / 112), rel=1e-12)
    # y3 (102) → t3 (110) less the gap log(110/102): the intraday moves 110 → 111 → 112 → 110 sum to 0
    assert f["ret_3"] == pytest.approx(0.0, abs=1e-15)
    assert f["vol_2"] == pytest.approx(np.sqrt((r_t2**2 + r_t3**2) / 2), rel=1e-12)
    assert f["vol_4"] == pytest.approx(np.sqrt((r_y3**2 + r_t1**2 + r_t2**2 + r_t3**2) / 4), rel=1e-12)
    assert f["overnight"] == pytest.approx(np.log(110 / 102), rel=1e-12)
    w = np.array([0.125, 0.25, 0.5, 1.0])  # EWMA, half-life 1 bar, window 4, oldest first
    sigma = np.sqrt(np.dot(w, np.array([r_y3, r_t1, r_t2, r_t3]) ** 2) / w.sum()) * 1e4
    assert f["sigma_bps"] == pytest.approx(sigma, rel=1e-12)
    assert f["sigma_daily_bps"] == pytest.approx(sigma * np.sqrt(3), rel=1e-12)
    assert np.array_equal(x[0, :len(P.names)], x[1, :len(P.names)])  # a level (×2) changes no feature
    # the old σ counted the close-to-open move 102 → 111 as the first bar's return: 8.5 % instead of 0.9 %
    assert np.log(111 / 102) > 9 * r_t1


def test_a_missing_gap_voids_only_the_returns_that_span_it():
    p = panel()
    close = np.array(p["close"], dtype=float)
    close[2, 0] = np.nan  # symbol A has no bar at 16:00: its gap is unknown
    q = Panel(p.times, p.symbols, {**p.fields, "close": close})
    x = features_at(q, 0.1, np.array([1e6, 1e6]), P)
    f = dict(zip(P.names, x[0, :len(P.names)], strict=True))
    assert np.isnan(f["overnight"]) and np.isnan(f["ret_3"])
    assert f["ret_1"] == pytest.approx(np.log(110 / 112), rel=1e-12)  # inside the session: defined
    assert np.isfinite(x[1, :len(P.names)]).all()

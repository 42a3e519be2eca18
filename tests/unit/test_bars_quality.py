"""Which rows are trusted: price jumps, split-like jumps, the estimated spread and the quote's age, with values
worked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from assets.bars.quality import (
    QualityParams,
    bars_since_trade,
    estimated_spread,
    price_jumps,
    quote_age_bars,
    segments,
    split_suspects,
)

P = QualityParams(quote_tolerance_bps=25.0, reference_rows=5, sigma_rows=60, jump_sigmas=12.0, jump_floor=0.2,
                  split_ratios=(2.0, 3.0, 0.5), split_tolerance=0.03, split_volume_share=0.5, spread_window=4,
                  spread_floor_bps=0.5)


def _ohlc(close: list[float]) -> np.ndarray:
    c = np.asarray(close, dtype=float)
    return np.column_stack([c, c, c, c])


def _jumps(close, new_session=None, seg=None, factor=None, p=P):
    n = len(close)
    return price_jumps(_ohlc(close), np.zeros(n, int) if seg is None else seg,
                       np.zeros(n, bool) if new_session is None else new_session,
                       np.zeros(n) if factor is None else factor, p).tolist()


def test_a_x100_or_div100_print_is_a_jump_and_the_next_row_is_not():
    assert _jumps([10, 10, 10, 1000, 10, 10]) == [False, False, False, True, False, False]
    assert _jumps([10, 10, 10, 0.1, 10, 10]) == [False, False, False, True, False, False]
    # two bad prints in a row never hold the majority of 5 reference rows: the good rows after them pass
    assert _jumps([10, 10, 10, 1000, 1000, 10, 10]) == [False, False, False, True, True, False, False]


def test_a_new_level_is_confirmed_once_it_holds_the_majority_of_the_reference():
    # |log 1.3| = 0.262 > floor 0.2: rows 3, 4, 5 are unconfirmed; row 6 sees median(10, 10, 13, 13, 13) = 13
    assert _jumps([10, 10, 10, 13, 13, 13, 13, 13]) == [False] * 3 + [True] * 3 + [False] * 2
    # |log 1.2| = 0.182 < floor: an ordinary move
    assert _jumps([10, 10, 10, 12, 12]) == [False] * 5


def test_the_threshold_follows_recent_volatility_above_the_floor():
    p = dataclasses.replace(P, jump_floor=0.001, jump_sigmas=5.0)
    # alternating ±1 % one-row moves: |r| median = 0.00995 → σ = 1.4826 × 0.00995 = 0.01475; 5σ = 0.0738
    # reference: median of the last 5 closes (101, 100, 101, 100, 101) = 101
    base = [100.0 * (1.01 if i % 2 else 1.0) for i in range(30)]
    assert _jumps(base + [107.0], p=p)[-1] is False   # |log(107/101)| = 0.0577 < 0.0738
    assert _jumps(base + [109.0], p=p)[-1] is True    # |log(109/101)| = 0.0762 > 0.0738


def test_rows_of_another_symbol_never_enter_the_reference():
    close = [10, 10, 10, 1000, 1000, 1000]  # symbol A: 10s, symbol B: 1000s (a different price level)
    seg = segments(np.array(["A", "A", "A", "B", "B", "B"]))
    assert seg.tolist() == [0, 0, 0, 3, 3, 3]
    assert _jumps(close, seg=seg) == [False] * 6


def test_a_corporate_action_factor_removes_the_jump():
    close = [100, 100, 100, 50, 50]
    assert _jumps(close) == [False, False, False, True, True]
    assert _jumps(close, factor=np.log([1, 1, 1, 2, 2])) == [False] * 5  # a 2:1 split effective at row 3


def test_split_suspect_needs_the_ratio_at_a_session_open_and_the_volume():
    open_ = np.array([100, 100, 100, 50.5, 50.0])
    close = np.array([100, 100, 100, 50.0, 50.0])
    new_session = np.array([False, False, False, True, False])
    seg = np.zeros(5, int)
    vol = np.array([1000, 1000, 1000, 2100, 2000.0])
    k = split_suspects(open_, close, vol, seg, new_session, np.zeros(5), P)
    assert np.isnan(k[[0, 1, 2, 4]]).all() and k[3] == 2.0  # |log 0.505 + log 2| = 0.00995 < 0.03
    same_volume = split_suspects(open_, close, np.full(5, 1000.0), seg, new_session, np.zeros(5), P)
    assert np.isnan(same_volume).all()  # a −50 % gap on ordinary volume is not a split
    mid_session = split_suspects(open_, close, vol, seg, np.zeros(5, bool), np.zeros(5), P)
    assert np.isnan(mid_session).all()  # splits take effect at an open
    adjusted = split_suspects(open_, close, vol, seg, new_session, np.log([1, 1, 1, 2, 2]), P)
    assert np.isnan(adjusted).all()  # an adjustments entry explains it


def test_estimated_spread_is_abdi_ranaldo_point_in_time():
    c = np.array([100.0, 100.1, 99.9, 100.0, 100.2])
    h = np.array([100.2, 100.2, 100.1, 100.1, 100.3])
    lo = np.array([99.9, 99.9, 99.8, 99.8, 100.0])
    s = estimated_spread(c, h, lo, np.zeros(5, int), np.zeros(5, bool), window=4, floor_bps=0.5)
    lc, eta = np.log(c), (np.log(h) + np.log(lo)) / 2
    pairs = (lc[:-1] - eta[:-1]) * (lc[:-1] - eta[1:])  # pair (t−1, t) ends at row t
    assert np.isnan(s[:2]).all()  # fewer than window // 2 = 2 pairs
    assert s[2] == pytest.approx(max(np.sqrt(max(4 * pairs[:2].mean(), 0)), 0.5e-4))
    assert s[4] == pytest.approx(max(np.sqrt(max(4 * pairs[0:4].mean(), 0)), 0.5e-4))
    later = estimated_spread(np.r_[c, 500.0], np.r_[h, 510.0], np.r_[lo, 490.0], np.zeros(6, int),
                             np.zeros(6, bool), window=4, floor_bps=0.5)
    assert np.array_equal(later[:5], s, equal_nan=True)  # a later row changes no earlier estimate


def test_estimated_spread_leaves_out_pairs_across_the_overnight_gap():
    c = np.array([100.0, 100.1, 99.9, 110.0, 110.2])
    h, lo = c * 1.001, c * 0.999
    new = np.array([False, False, False, True, False])
    s = estimated_spread(c, h, lo, np.zeros(5, int), new, window=4, floor_bps=0.5)
    lc, eta = np.log(c), (np.log(h) + np.log(lo)) / 2
    pairs = (lc[:-1] - eta[:-1]) * (lc[:-1] - eta[1:])
    use = np.array([pairs[0], pairs[1], pairs[3]])  # the pair (2, 3) spans the gap
    assert s[4] == pytest.approx(max(np.sqrt(max(4 * use.mean(), 0)), 0.5e-4))


def test_quote_age_counts_bars_since_the_quote_changed():
    nan = np.nan
    bid = np.array([[10.0, 20.0, 5.0], [10.0, 20.1, 5.0], [nan, 20.1, 5.0], [10.0, 20.1, 5.1]])
    ask = bid + 0.01
    # A: changed at row 0 only (window start is not a change) → unchanged for the whole window: age 4
    # B: changed at row 1 → age 2 at row 3;  C: changed at row 3 → age 0
    assert quote_age_bars(bid, ask).tolist() == [4.0, 2.0, 0.0]
    gone = bid.copy()
    gone[-1, 0] = nan
    assert np.isnan(quote_age_bars(gone, gone + 0.01)[0])  # no quote at the bar: unknown


def test_bars_since_trade_is_the_age_of_an_estimated_spread():
    vol = np.array([[5.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    assert bars_since_trade(vol).tolist() == [2.0, 0.0]

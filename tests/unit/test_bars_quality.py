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
    level_shifts,
    price_jumps,
    quote_age_bars,
    segments,
    split_suspects,
)

P = QualityParams(quote_tolerance_bps=25.0, reference_rows=5, sigma_rows=60, jump_sigmas=12.0, jump_floor=0.2,
                  split_ratios=(2.0, 3.0, 0.5), split_tolerance=0.03, level_shift_max_ratio=3.0, spread_window=4,
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


CONFIGURED_RATIOS = (2.0, 3.0, 4.0, 5.0, 10.0, 1.5, 0.5, 0.25, 0.2, 0.1)  # CONFIG/defaults.yaml market.split_ratios


@pytest.mark.parametrize("k", CONFIGURED_RATIOS)
@pytest.mark.parametrize("volume_factor", [None, 1.0, 3.0, 1 / 3])  # None: ×k (a real split), else unchanged/×3/÷3
def test_a_split_of_every_configured_ratio_at_an_open_is_suspected_whatever_the_volume(k, volume_factor):
    # an unadjusted k:1 split (reverse below 1) at the open of row 3: prices ÷k; the opening bar's volume
    # ×k, unchanged, ×3 (the opening bar of the U shape) or ÷3; on main a reverse split was never suspected
    p = dataclasses.replace(P, split_ratios=CONFIGURED_RATIOS)
    open_ = np.array([100, 100, 100, 100 / k, 100 / k])
    close = np.array([100, 100, 100, 100 / k, 100 / k])
    vol = np.full(5, 1000.0)
    vol[3:] *= k if volume_factor is None else volume_factor
    new_session = np.array([False, False, False, True, False])
    got = split_suspects(open_, close, np.zeros(5, int), new_session, np.zeros(5), p)
    assert np.isnan(got[[0, 1, 2, 4]]).all() and got[3] == k


def test_split_suspect_needs_a_split_ratio_at_a_session_open():
    open_ = np.array([100, 100, 100, 50.5, 50.0])
    close = np.array([100, 100, 100, 50.0, 50.0])
    new_session = np.array([False, False, False, True, False])
    seg = np.zeros(5, int)
    k = split_suspects(open_, close, seg, new_session, np.zeros(5), P)
    assert np.isnan(k[[0, 1, 2, 4]]).all() and k[3] == 2.0  # |log 0.505 + log 2| = 0.00995 < 0.03
    off_ratio = split_suspects(np.array([100, 100, 100, 52.0, 52.0]), close, seg, new_session, np.zeros(5), P)
    assert np.isnan(off_ratio).all()  # |log 0.52 + log 2| = 0.0392 > 0.03: a gap, not a split ratio
    mid_session = split_suspects(open_, close, seg, np.zeros(5, bool), np.zeros(5), P)
    assert np.isnan(mid_session).all()  # splits take effect at an open
    adjusted = split_suspects(open_, close, seg, new_session, np.log([1, 1, 1, 2, 2]), P)
    assert np.isnan(adjusted).all()  # an adjustments entry explains it


def _levels(close, seg=None, new_session=None, max_ratio=3.0):
    n = len(close)
    seg = np.zeros(n, int) if seg is None else seg
    jumps = price_jumps(_ohlc(close), seg, np.zeros(n, bool) if new_session is None else new_session,
                        np.zeros(n), P)
    return jumps.tolist(), level_shifts(np.asarray(close, float), seg, np.zeros(n), jumps, max_ratio).tolist()


@pytest.mark.parametrize("scale", [100.0, 0.01, 1000.0, 0.001, 10.0, 0.1])
def test_a_lasting_power_of_ten_scale_is_never_accepted(scale):
    # from row 5 on every price × scale (a vendor switching units): rows 5–7 are jumps, row 8 would be
    # "confirmed" (median of the previous 5 closes is at the new level) — on main it was accepted
    jumps, held = _levels([10.0] * 5 + [10.0 * scale] * 8)
    assert jumps == [False] * 5 + [True] * 3 + [False] * 5
    assert held == [False] * 8 + [True] * 5  # from the confirming row to the last row (the jumps stay jumps)


def test_a_scale_that_is_fixed_later_is_accepted_again_at_the_old_level():
    # ×100 for 6 rows, then the file is back at 10: rows 11–13 are jumps against the ×100 reference, row 14
    # (median of 1000, 1000, 10, 10, 10 = 10) is confirmed at 10/10 = ×1 of the pre-jump level: accepted
    jumps, held = _levels([10.0] * 5 + [1000.0] * 6 + [10.0] * 6)
    assert held == [False] * 8 + [True] * 3 + [False] * 6
    assert jumps == [False] * 5 + [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3


def test_a_genuine_30_percent_move_is_still_accepted_as_a_new_level():
    jumps, held = _levels([10.0] * 5 + [13.0] * 6)  # |log 1.3| = 0.262 > jump floor 0.2; ×1.3 < ×3
    assert jumps == [False] * 5 + [True] * 3 + [False] * 3 and held == [False] * 11
    jumps, held = _levels([10.0] * 5 + [7.0] * 6)   # −30 %: ÷1.43
    assert jumps == [False] * 5 + [True] * 3 + [False] * 3 and held == [False] * 11


def test_the_level_limit_is_the_configured_ratio():
    assert _levels([10.0] * 5 + [29.0] * 5)[1] == [False] * 10           # ×2.9 < ×3: a price move
    assert _levels([10.0] * 5 + [31.0] * 5)[1] == [False] * 8 + [True] * 2  # ×3.1 > ×3
    assert _levels([10.0] * 5 + [3.4] * 5)[1] == [False] * 10            # ÷2.94 < ÷3
    assert _levels([10.0] * 5 + [3.2] * 5)[1] == [False] * 8 + [True] * 2   # ÷3.125 > ÷3
    assert _levels([10.0] * 5 + [3.2] * 5, max_ratio=3.5)[1] == [False] * 10


def test_a_level_shift_stays_inside_its_symbol():
    close = [10.0] * 5 + [1000.0] * 4 + [20.0] * 9  # A: 9 rows, ×100 from row 5; B: 9 rows at 20
    seg = segments(np.array(["A"] * 9 + ["B"] * 9))
    assert _levels(close, seg=seg)[1] == [False] * 8 + [True] + [False] * 9


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

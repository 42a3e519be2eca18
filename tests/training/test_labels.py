"""Labels: no look-ahead, session boundaries, the barrier rules (TRAINING/labels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from TRAINING.labels import barrier_labels, demean, forward_return_labels, forward_returns, horizon_bars


def _random_panel(b: int = 40, n: int = 6, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, (b, n)), axis=0))
    high = close * np.exp(np.abs(rng.normal(0, 0.002, (b, n))))
    low = close * np.exp(-np.abs(rng.normal(0, 0.002, (b, n))))
    sigma = np.full((b, n), 20.0)
    session = np.repeat(np.arange(b // 10), 10)
    return close, high, low, sigma, session


def test_horizon_must_be_a_multiple_of_the_bar():
    assert horizon_bars(15, 5) == 3
    for bad in (7, 0, -5):
        with pytest.raises(ValueError, match="not a positive multiple"):
            horizon_bars(bad, 5)


def test_forward_returns_never_cross_a_session():
    close, *_, session = _random_panel()
    fwd = forward_returns(close, session, 3)
    for s in range(4):
        rows = np.nonzero(session == s)[0]
        assert np.isfinite(fwd[rows[:-3]]).all()
        assert np.isnan(fwd[rows[-3:]]).all()  # the horizon runs past the close: dropped, not filled
    np.testing.assert_allclose(fwd[0], np.log(close[3] / close[0]))


def test_forward_return_labels_cover_every_configured_horizon():
    close, *_, session = _random_panel()
    labels = forward_return_labels(close, session, [5, 10, 15], bar_minutes=5)
    assert sorted(labels) == [5, 10, 15]
    assert np.isnan(labels[15][7:10]).all() and np.isfinite(labels[15][:7]).all()


def test_missing_price_gives_nan_not_a_fill():
    close, *_, session = _random_panel()
    close[5, 2] = np.nan
    fwd = forward_returns(close, session, 2)
    assert np.isnan(fwd[3, 2]) and np.isnan(fwd[5, 2]) and np.isfinite(fwd[4, 2])


@pytest.mark.parametrize("h", [1, 3, 5])
def test_labels_have_no_look_ahead(h):
    """Changing anything after t+h changes no label at t (and changing t+h does change it)."""
    close, high, low, sigma, session = _random_panel()
    fwd = forward_returns(close, session, h)
    peak, valley = barrier_labels(close, high, low, sigma, session, h, 1.0)
    rng = np.random.default_rng(1)
    for t in range(len(close) - h - 1):
        c2, h2, l2 = close.copy(), high.copy(), low.copy()
        later = slice(t + h + 1, None)
        c2[later] *= np.exp(rng.normal(0, 0.05, c2[later].shape))
        h2[later], l2[later] = c2[later] * 1.1, c2[later] * 0.9
        np.testing.assert_array_equal(forward_returns(c2, session, h)[t], fwd[t])
        p2, v2 = barrier_labels(c2, h2, l2, sigma, session, h, 1.0)
        np.testing.assert_array_equal(p2[t], peak[t])
        np.testing.assert_array_equal(v2[t], valley[t])
    if session[0] == session[h]:
        c3 = close.copy()
        c3[h] *= 1.01
        assert not np.array_equal(forward_returns(c3, session, h)[0], fwd[0])


def test_barrier_cases():
    """Columns: peak, valley, neither, same-bar both (→ neither), up-then-down (→ valley), missing bar."""
    n, h = 6, 3
    close = np.full((h + 1, n), 100.0)
    high, low = close * 1.001, close * 0.999
    sigma = np.full((h + 1, n), 100.0)  # 1 % per bar → half-width 1.73 %
    low[2, 0] = 97.0
    high[1, 1] = 103.0
    high[2, 3], low[2, 3] = 103.0, 97.0
    high[1, 4], low[2, 4] = 103.0, 97.0
    high[2, 5] = np.nan
    peak, valley = barrier_labels(close, high, low, sigma, np.zeros(h + 1, dtype=int), h, 1.0)
    np.testing.assert_array_equal(peak[0, :5], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(valley[0, :5], [0, 1, 0, 0, 1])
    assert np.isnan(peak[0, 5]) and np.isnan(valley[0, 5])
    assert np.isnan(peak[1:]).all()  # the window runs past the last bar (the session's close)


def test_barrier_window_past_session_close_and_missing_sigma_are_nan():
    close, high, low, sigma, session = _random_panel()
    sigma[0, 0] = np.nan
    peak, valley = barrier_labels(close, high, low, sigma, session, 3, 1.0)
    assert np.isnan(peak[7:10]).all() and np.isnan(valley[7:10]).all()
    assert np.isfinite(peak[:7, 1:]).all()
    assert np.isnan(peak[0, 0])


def test_demean_is_cross_sectional_over_finite_values():
    y = np.array([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan]])
    out = demean(y)
    np.testing.assert_array_equal(out[0], [-0.5, 0.5, np.nan])
    assert np.isnan(out[1]).all()

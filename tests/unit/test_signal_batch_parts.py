"""The parts the batched signal stages are built from (issue 12), checked against the per-value functions they
replaced (``tests/chain/signals_reference.py``) and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.history import PredictionGrid, Timeline, _BarPredictions, stack_frames
from assets.model_skill.logic import rolling_ic_rows, shrunk_ic_rows
from assets.predictions.standardize import MAD_TO_SIGMA, center_scale_rows, standardize_rows
from tests.chain import signals_reference as R
from tests.graph_helpers import session_keys


def bits(x) -> bytes:
    return np.asarray(x, dtype=float).tobytes()


def test_center_scale_by_hand_per_row() -> None:
    rows = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, np.nan],      # median 2, MAD 1
                     [1.0, 1.0, 1.0, 1.0, 5.0, np.inf],       # MAD 0 → std 1.6 (mean 1.8, var 2.56)
                     [np.nan] * 6,                            # nothing finite
                     [3.0, 1.0, 4.0, 2.0, np.nan, np.nan]])   # even count: (2 + 3) / 2 = 2.5, MAD 1
    center, scale = center_scale_rows(rows)
    np.testing.assert_allclose(center[[0, 1, 3]], [2.0, 1.0, 2.5])
    assert np.isnan(center[2]) and scale[2] == 0.0
    np.testing.assert_allclose(scale[[0, 1, 3]], [MAD_TO_SIGMA, 1.6, MAD_TO_SIGMA], rtol=1e-15)


def test_rows_equal_the_per_bar_functions_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        k, m = int(rng.integers(1, 6)), int(rng.integers(0, 50))
        hist = np.round(rng.normal(size=(k, m)), int(rng.integers(0, 4)))  # ties and signed zeros included
        hist[rng.random((k, m)) < 0.2] = np.nan
        hist[rng.random((k, m)) < 0.05] = np.inf
        hist[rng.random((k, m)) < 0.1] = -0.0
        raw = np.round(rng.normal(size=(k, 9)), 2)
        raw[rng.random((k, 9)) < 0.2] = np.nan
        z, scale = standardize_rows(raw, hist, 3.0, 5)
        for r in range(k):
            assert bits(R.robust_center_scale(hist[r])) == bits(center_scale_rows(hist[r:r + 1]))
            assert bits(R.standardize(raw[r], hist[r], 3.0, 5)) == bits(z[r])
            assert bits(R.reference_center_scale(raw[r], hist[r], 5)[1]) == bits(scale[r])


def test_rolling_and_shrunk_ic_rows_equal_the_scalar_functions() -> None:
    rng = np.random.default_rng(3)
    ic = rng.normal(size=(300, 62)) * 0.1
    ic[rng.random(ic.shape) < 0.3] = np.nan
    ic[:3] = np.nan
    mean, n = rolling_ic_rows(ic, 50)
    for r in range(len(ic)):
        kept = ic[r][np.isfinite(ic[r])][-50:]
        assert n[r] == kept.size
        assert bits(np.mean(kept) if kept.size else np.nan) == bits(mean[r])
    shrunk = shrunk_ic_rows(mean, n, 0.05, 20)
    for r in range(len(ic)):
        live = float(mean[r])
        want = 0.05 if n[r] == 0 else (int(n[r]) * live + 20 * 0.05) / (int(n[r]) + 20)
        assert bits(want) == bits(shrunk[r])
    assert np.isnan(shrunk_ic_rows(np.array([np.nan]), np.array([0]), np.nan, 20)[0])


def test_timeline_of_consecutive_bars_and_of_any_bars() -> None:
    keys = session_keys("2025-06-03")[-2:] + session_keys("2025-06-04", 2)
    t = Timeline.of(keys, 3)
    assert t.keys == session_keys("2025-06-03")[-5:] + session_keys("2025-06-04", 2)
    assert t.at.tolist() == [3, 4, 5, 6] and t.past == t.keys[:3]
    assert [[t.keys[i] for i in row] for row in t.window.tolist()] == [t.keys[b:b + 3] for b in range(4)]
    gappy = Timeline.of([keys[0], keys[3]], 3)   # not consecutive: each bar's own previous keys
    assert [[gappy.keys[i] for i in row] for row in gappy.window.tolist()] == [
        session_keys("2025-06-03")[-5:-2], keys[:3]]
    assert keys[1] in gappy.past and keys[3] not in gappy.past
    with pytest.raises(ValueError, match="time order"):
        Timeline.of([keys[1], keys[0]], 3)


def test_bar_predictions_from_the_stage_layout_equal_the_general_scatter() -> None:
    rng = np.random.default_rng(0)
    symbols = ["A", "B", "D"]
    groups = [(5, "lightgbm"), (5, "sequential"), (10, "lightgbm")]
    frame = pd.DataFrame({"symbol": np.repeat(symbols, 3), "horizon": np.tile([g[0] for g in groups], 3),
                          "family": np.tile([g[1] for g in groups], 3), "raw": rng.normal(size=9),
                          "std": rng.normal(size=9)})
    frame.loc[4, "raw"] = np.nan
    fast = _BarPredictions.of(frame)
    assert _BarPredictions._regular(frame) is not None
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert _BarPredictions._regular(shuffled) is None            # not the stage's layout: the general scatter
    other = _BarPredictions.of(shuffled)
    assert other.groups == fast.groups and list(other.symbols) == list(fast.symbols)
    assert bits(other.raw) == bits(fast.raw) and bits(other.std) == bits(fast.std)
    assert fast.raw.flags.c_contiguous and fast.raw[1, 1] is not None and np.isnan(fast.raw[1, 1])
    partial = _BarPredictions.of(frame.iloc[:-1])                # D lacks a group: general path, NaN there
    assert np.isnan(partial.raw[2, 2]) and partial.raw[0, 2] == frame.loc[6, "raw"]


def test_stack_frames_marks_each_frames_rows_with_its_bar() -> None:
    a = pd.DataFrame({"symbol": ["A", "B"], "raw": [1.0, 2.0]})
    b = pd.DataFrame({"symbol": ["C"], "raw": [3.0], "std": [0.5]})
    out = stack_frames([a, b], ["t1", "t2"], ["symbol", "raw", "std"])
    assert out["bar"].tolist() == ["t1", "t1", "t2"] and out["symbol"].tolist() == ["A", "B", "C"]
    assert np.isnan(out["std"][:2]).all() and out["std"][2] == 0.5
    grid = PredictionGrid.from_frame(out.assign(horizon=5, family="lightgbm"), ["t1", "t2"])
    assert grid.raw.shape == (2, 2, 3)


def test_stacked_weights_equal_the_per_bar_weights_bit_for_bit() -> None:
    from assets.blended_alpha.logic import Params, horizon_weights_rows

    rng = np.random.default_rng(5)
    params = Params(ridge_lambda=0.15, temperature=((5, 0.75),))
    for n in (1, 2, 3):
        mu = rng.normal(size=(200, n)) * 0.1
        a = rng.normal(size=(200, n, n))
        sigma = np.clip(a @ a.transpose(0, 2, 1) / n, -1, 1)
        mu[0] = np.nan                                   # non-finite → equal
        mu[1] = -np.abs(mu[1])                           # all clipped → equal
        sigma[2] = 1.0                                   # singular unless ridged
        for h in (5, 10):
            w, reason = horizon_weights_rows(mu, sigma, h, params)
            for r in range(len(mu)):
                want, why = R.horizon_weights(mu[r], sigma[r], h, params)
                assert bits(want) == bits(w[r]) and why == reason[r], (n, h, r)

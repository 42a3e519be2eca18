"""The batch preparation's array paths (issue 12: bars snapshots, features frames and barrier frames built from
arrays once per batch) keep the per-bar semantics they replaced: rows in any order, a join's dtype promotion,
data columns taken by symbol name, and a bar without rows. Numbers worked by hand on three symbols."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import build_windows
from assets.features.logic import DATA_COLUMNS, FeatureParams, _bar_frame
from assets.predictions.logic import PredictionInputs, predict_barrier, predict_barriers
from assets.predictions.models import BARRIER_FAMILY, ModelSet
from CONFIG.config_loader import get_cfg
from TRAINING.registry import barrier_target

TIMES = pd.date_range("2026-11-24 15:00", periods=4, freq="5min", tz="UTC")
UNIVERSE = np.array(["A", "B", "C"], dtype=object)
ADV = pd.Series({"A": 1000.0, "B": 2000.0, "C": 3000.0})


def _raw(volume_dtype=np.float64, with_c_last: bool = False) -> pd.DataFrame:
    """A and B on every bar (B's quote moves at row 2), C on the first two bars only (or also the last)."""
    rows = []
    for i, ts in enumerate(TIMES):
        rows.append(("A", ts, 10.0, 10.0, 100))
        rows.append(("B", ts, 20.0 if i < 2 else 20.5, 20.0 if i < 2 else 20.5, 200))
        if i < 2 or (with_c_last and i == 3):
            rows.append(("C", ts, 30.0, 30.0, 300))
    sym, ts, close, mid, vol = zip(*rows, strict=True)
    close, mid = np.array(close), np.array(mid)
    return pd.DataFrame({"ts": pd.DatetimeIndex(ts), "symbol": np.array(sym, dtype=object), "open": close,
                         "high": close + 0.5, "low": close - 0.5, "close": close,
                         "volume": np.array(vol).astype(volume_dtype), "bid": mid - 0.01, "ask": mid + 0.01})


def _windows(raw: pd.DataFrame):
    """Windows of the last two bars, each over the grid rows up to it (spans [0, 3) and [0, 4))."""
    return build_windows([str(TIMES[2]), str(TIMES[3])], TIMES[2:], TIMES, raw, UNIVERSE, [ADV, ADV],
                         [(0, 3), (0, 4)])


def test_snapshot_worked_by_hand():
    snap = _windows(_raw())[1][0].snapshot
    assert snap["symbol"].tolist() == ["A", "B", "C"]
    assert snap["status"].tolist() == ["ok", "ok", "missing"]
    np.testing.assert_array_equal(snap["close"].to_numpy(), [10.0, 20.5, np.nan])
    np.testing.assert_array_equal(snap["adv_shares"].to_numpy(), [1000.0, 2000.0, 3000.0])
    # A's quote never changed in its 4-bar window: as old as the window; B's changed at row 2: 1 bar old
    np.testing.assert_array_equal(snap["quote_age_bars"].to_numpy(), [4.0, 1.0, np.nan])
    assert snap["hold_reason"].tolist() == ["", "", ""] and snap["hold_since"].isna().all()
    assert snap["spread_estimated"].dtype == bool and not snap["spread_estimated"].any()


def test_rows_in_any_order_give_the_same_windows():
    raw = _raw()
    shuffled = raw.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for (a, sa), (b, sb) in zip(_windows(raw), _windows(shuffled), strict=True):
        pd.testing.assert_frame_equal(a.snapshot, b.snapshot, check_exact=True)
        pd.testing.assert_frame_equal(sa, sb, check_exact=True)
        assert len(a.history) == len(b.history)


@pytest.mark.parametrize(("with_c_last", "dtype", "volume"), [
    (True, np.int64, [100, 200, 300]),           # every symbol has a row: the join keeps int64
    (False, np.float64, [100.0, 200.0, np.nan]),  # one missing: promoted to float64 with NaN, as a join does
])
def test_a_non_float_column_is_joined_as_before(with_c_last, dtype, volume):
    snap = _windows(_raw(np.int64, with_c_last))[1][0].snapshot
    assert snap["volume"].dtype == dtype
    np.testing.assert_array_equal(snap["volume"].to_numpy(), volume)


def test_features_take_the_snapshots_data_columns_by_symbol():
    """A snapshot in another order and without one symbol: values by name, the default where it lacks one."""
    p = FeatureParams.from_cfg()
    window = _windows(_raw(with_c_last=True))[1][0]
    snap = window.snapshot.assign(quote_age_bars=[1.0, 2.0, 3.0], hold_reason=["", "split? (at x)", ""])
    other = dataclasses.replace(window, snapshot=snap.iloc[[2, 0]].reset_index(drop=True))  # C, A: no B
    n_cols = len(p.names) + 6
    values = np.arange(3 * n_cols, dtype=float).reshape(3, n_cols)
    close = np.array([10.0, 20.0, np.nan])  # C has no bar: no feature row
    for w, age, hold in [(dataclasses.replace(window, snapshot=snap), [1.0, 2.0], ["", "split? (at x)"]),
                         (other, [1.0, np.nan], ["", ""])]:
        frame = _bar_frame(values, UNIVERSE, close, w, p)
        assert frame["symbol"].tolist() == ["A", "B"] and frame["valid"].tolist() == [True, True]
        np.testing.assert_array_equal(frame["quote_age_bars"].to_numpy(), age)
        assert frame["hold_reason"].tolist() == hold
        assert frame["spread_estimated"].tolist() == [DATA_COLUMNS["spread_estimated"]] * 2
        assert frame[p.names[0]].tolist() == [0.0, float(n_cols)]


def test_barrier_frames_of_a_batch_equal_each_bar_alone():
    """Two bars and an empty one; a non-finite model output and invalid features fall back to the prior."""
    hb = get_cfg("barrier.horizon_minutes")
    prior = get_cfg("barrier.neutral_prior")
    models = ModelSet(models={(barrier_target(s, hb), BARRIER_FAMILY): object() for s in ("peak", "valley")})

    def inp(symbols, valid):
        return PredictionInputs(np.array(symbols, dtype=object), np.zeros((len(symbols), 1)),
                                np.array(valid, dtype=bool), None, None, None)

    inputs = [inp(["A", "B", "C"], [True, False, True]), inp([], []), inp(["A", "C"], [True, True])]
    outs = [{(barrier_target("peak", hb), BARRIER_FAMILY): np.array([0.6, np.nan]),
             (barrier_target("valley", hb), BARRIER_FAMILY): np.array([0.1, 0.2])},
            {},
            {(barrier_target("peak", hb), BARRIER_FAMILY): np.array([0.7, 0.8]),
             (barrier_target("valley", hb), BARRIER_FAMILY): np.array([0.3, 0.4])}]
    batch = predict_barriers(models, inputs, outs)
    np.testing.assert_array_equal(batch[0]["p_peak"].to_numpy(), [0.6, prior, prior])
    np.testing.assert_array_equal(batch[0]["p_valley"].to_numpy(), [0.1, prior, 0.2])
    assert batch[0]["source"].tolist() == ["model", "prior: invalid features", "model"]
    assert len(batch[1]) == 0 and list(batch[1].columns) == ["symbol", "p_peak", "p_valley", "source"]
    for frame, i, o in zip(batch, inputs, outs, strict=True):
        pd.testing.assert_frame_equal(frame, predict_barrier(models, i, outputs=o), check_exact=True)


class _Model:
    """A stand-in tabular model: the sum of each row's features."""

    def __init__(self, target: str, family: str):
        self.target, self.family, self.version = target, family, "v1"

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X.sum(axis=1)


def test_each_bars_input_is_digested_once_for_every_model_that_reads_it(monkeypatch, tmp_path):
    """Three tabular models over two bars: 2 digests (one per bar), not 6; outputs and cache counts as before."""
    from assets.predictions import cache as cache_mod
    from assets.predictions import logic
    from assets.predictions.cache import PredictionCache

    calls = []
    monkeypatch.setattr(logic, "input_digest", lambda X: calls.append(X.shape) or cache_mod.input_digest(X))
    models = ModelSet(models={(t, f): _Model(t, f) for t, f in [("ret_5m", "lightgbm"), ("ret_15m", "lightgbm"),
                                                                 ("barrier_peak", BARRIER_FAMILY)]})
    inputs = [PredictionInputs(np.array(["A", "B"], dtype=object), np.array([[1.0, 2.0], [3.0, np.nan]]),
                               np.array([True, False]), None, None, None),
              PredictionInputs(np.array(["A", "B"], dtype=object), np.array([[1.0, 2.0], [5.0, 6.0]]),
                               np.array([True, True]), None, None, None)]
    cache = PredictionCache(tmp_path)
    got = logic.model_outputs(models, inputs, cache)
    assert calls == [(1, 2), (2, 2)]
    for key in models.models:
        np.testing.assert_array_equal(got[0][key], [3.0])
        np.testing.assert_array_equal(got[1][key], [3.0, 11.0])
    assert (cache.hits, cache.misses) == (0, 6)
    again = logic.model_outputs(models, inputs, cache)  # every model call from the cache now
    assert (cache.hits, cache.misses) == (6, 6)
    for b in range(2):
        for key in models.models:
            np.testing.assert_array_equal(again[b][key], got[b][key])
    with pytest.raises(ValueError, match="1 digests for 2 inputs"):
        cache.predict_many("t", "lightgbm", "v1", lambda Xs: Xs, [np.zeros(1), np.ones(1)], [b"x"])

"""Stages over a bars × symbols panel (issue 12): a period's windows, features and model outputs computed at
once are the same bits as each bar computed alone, and no later bar of the batch reaches an earlier one.

The period: the last bars of 2026-11-25, the overnight gap over Thanksgiving, and the half day of 2026-11-27
(42 bars), with one symbol missing bars inside it and another missing the session's first bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import build_window, build_windows
from assets.features.logic import FeatureParams, feature_history, features_for_window, features_for_windows
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys
from resources.market.sources import SimulatorSource

H = 120
T = 12


@pytest.fixture(scope="module")
def src():
    return SimulatorSource()


def _period(src, shock: float = 1.0):
    """Period windows built at once, and the same bars built alone (each from its own rows only)."""
    cal = src.calendar
    bars_ts = cal.session_bars("2026-11-25")[-6:].append(cal.session_bars("2026-11-27"))
    times = cal.previous_bars(bars_ts[-1], H + len(bars_ts) - 1)
    raw = src.history(bars_ts[-1], len(times))
    ts = pd.DatetimeIndex(raw["ts"])
    half = cal.session_bars("2026-11-27")
    missing = ((raw["symbol"] == "S003") & ts.isin(half[5:9])) | ((raw["symbol"] == "S007") & ts.isin(half[:3]))
    raw = raw[~missing.to_numpy()].reset_index(drop=True)
    if shock != 1.0:  # the period's last bar moves (a consistent bar: inside its range and quote)
        last = (pd.DatetimeIndex(raw["ts"]) == bars_ts[-1])
        for col in ["open", "high", "low", "close", "bid", "ask"]:
            raw.loc[last, col] *= shock
    keys = bar_keys(bars_ts)
    ends = len(times) - len(keys) + np.arange(len(keys))
    spans = [(max(0, e - H + 1), e + 1) for e in ends]
    advs = [src.adv_shares(cal.session_of(t)) for t in bars_ts]
    batch = build_windows(keys, bars_ts, times, raw, src.symbols(), advs, spans)
    alone = []
    for k, t, (lo, hi), adv in zip(keys, bars_ts, spans, advs, strict=True):
        own = raw[(pd.DatetimeIndex(raw["ts"]) >= times[lo]) & (pd.DatetimeIndex(raw["ts"]) <= times[hi - 1])]
        alone.append(build_window(k, t, times[lo:hi], own.reset_index(drop=True), src.symbols(), adv))
    return batch, alone


def _same_window(a, b):
    assert a.bar == b.bar and a.times.equals(b.times)
    for x, y in [(a.snapshot, b.snapshot), (a.history, b.history), (a.skips, b.skips)]:
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    pa, pb = a.panel(), b.panel()
    assert pa.times.equals(pb.times)
    for name in pa.fields:
        assert np.array_equal(pa[name], pb[name], equal_nan=True), name


def test_period_windows_equal_each_window_alone(src):
    batch, alone = _period(src)
    assert len(batch) == 48
    snap = {w.bar: w.snapshot.set_index("symbol")["status"] for w, _ in batch}
    half = bar_keys(src.calendar.session_bars("2026-11-27"))
    assert snap[half[5]]["S003"] == "missing" and snap[half[0]]["S007"] == "missing"
    assert snap[half[4]]["S003"] == "ok" and snap[half[3]]["S007"] == "ok"
    for (a, sa), (b, sb) in zip(batch, alone, strict=True):
        _same_window(a, b)
        pd.testing.assert_frame_equal(sa, sb, check_exact=True)


def test_batched_features_and_sequence_windows_equal_each_bar_alone(src):
    batch, alone = _period(src)
    p = FeatureParams.from_cfg()
    got = features_for_windows([w for w, _ in batch], p, history_bars=T)
    for (frame, hist), (w, _) in zip(got, alone, strict=True):
        pd.testing.assert_frame_equal(frame, features_for_window(w, p), check_exact=True)
        tods = src.calendar.session_fraction(w.times[-T:])
        expected = feature_history(w.panel(), tods, w.snapshot["adv_shares"].to_numpy(dtype=float), p, T)
        assert np.array_equal(hist, expected, equal_nan=True)
    open_bar = got[6][0].set_index("symbol")  # the half day's first bar: the overnight gap, S007 absent
    assert "S007" not in open_bar.index and open_bar["overnight"].notna().mean() > 0.9


def test_a_later_bar_of_the_batch_moves_no_earlier_bar(src):
    p = FeatureParams.from_cfg()
    base, _ = _period(src)
    moved, _ = _period(src, shock=1.01)
    f0 = features_for_windows([w for w, _ in base], p, history_bars=T)
    f1 = features_for_windows([w for w, _ in moved], p, history_bars=T)
    for (a, _), (b, _), (fa, ha), (fb, hb) in list(zip(base, moved, f0, f1, strict=True))[:-1]:
        _same_window(a, b)
        pd.testing.assert_frame_equal(fa, fb, check_exact=True)
        assert np.array_equal(ha, hb, equal_nan=True)
    # the test can fail: the last bar itself did move
    assert not np.allclose(f0[-1][0]["ret_1"], f1[-1][0]["ret_1"])


def test_batched_model_outputs_equal_each_bar_alone(src, trained):
    from assets.predictions.cache import PredictionCache
    from assets.predictions.models import load_models
    from assets.predictions.stage import prepare_predictions

    models = load_models()
    batch, _ = _period(src)
    windows = [w for w, _ in batch]
    feats = features_for_windows(windows, None, history_bars=T)
    frames, hists = [f for f, _ in feats], [h for _, h in feats]
    together_cache, alone_cache = PredictionCache(None), PredictionCache(None)
    together = prepare_predictions(windows, frames, models, together_cache, None, hists)
    alone = [prepare_predictions([w], [f], models, alone_cache)[0] for w, f in zip(windows, frames, strict=True)]
    assert {f for _, f in together[0].outputs} == {"lightgbm", "sequential", "barrier_lightgbm"}
    for a, b in zip(together, alone, strict=True):
        assert sorted(a.outputs) == sorted(b.outputs)
        for key in a.outputs:
            assert np.array_equal(a.outputs[key], b.outputs[key], equal_nan=True), key
        assert np.array_equal(a.inputs.seq_X, b.inputs.seq_X, equal_nan=True)
    assert (together_cache.hits, together_cache.misses) == (alone_cache.hits, alone_cache.misses)
    assert together_cache.misses == len(models.models) * len(windows)
    assert get_cfg("replay.batch_bars") >= 1

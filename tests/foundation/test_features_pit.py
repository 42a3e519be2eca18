"""Point in time: changing any bar after t changes no feature at t (and changing one before t does)."""

import numpy as np
import pandas as pd
import pytest

from assets.bars.logic import build_window
from assets.features.logic import FeatureParams, feature_history, features_for_window
from resources.market.calendar import bar_key, parse_bar_key
from resources.market.sources import SimulatorSource

BAR = "2026-11-24T16:00Z"


@pytest.fixture(scope="module")
def src():
    return SimulatorSource()


def _features(src, raw, bar=BAR):
    ts = parse_bar_key(bar)
    times = src.calendar.previous_bars(ts, 120)
    adv = src.adv_shares(src.calendar.session_of(ts))
    window, _ = build_window(bar, ts, times, raw[raw["ts"] <= ts], src.symbols(), adv)
    return features_for_window(window)


def test_later_bars_change_no_feature(src):
    ts = parse_bar_key(BAR)
    times = src.calendar.previous_bars(ts + pd.Timedelta(hours=1), 132)
    raw = src.sim.bars_between(times[0], times[-1])
    base = _features(src, raw)
    later = raw["ts"] > ts
    shocked = raw.copy()
    for col in ["open", "high", "low", "close", "bid", "ask"]:
        shocked.loc[later, col] *= 1.5
    shocked.loc[later, "volume"] *= 7
    pd.testing.assert_frame_equal(base, _features(src, shocked))
    # The test can fail: the same shock applied to the bar itself does change the features.
    earlier = raw["ts"] == ts
    moved = raw.copy()
    for col in ["open", "high", "low", "close", "bid", "ask"]:  # a consistent bar (inside high-low and its quote)
        moved.loc[earlier, col] *= 1.01
    assert not np.allclose(base["ret_1"], _features(src, moved)["ret_1"])


def test_feature_list_is_versioned_and_complete(src):
    p = FeatureParams.from_cfg()
    f = _features(src, src.history(parse_bar_key(BAR), 120))
    assert p.version == "fs-2.0"
    assert list(f.columns[3:3 + len(p.names)]) == p.names
    assert f["valid"].all() and len(f) == 50
    assert f["tod"].to_numpy() == pytest.approx([1.5 / 6.5] * 50)  # 11:00 New York is 1.5 h into a 6.5 h session


def test_history_features_equal_live_features_bit_for_bit(src):
    """The sequential models' windows recompute earlier bars' features: they must be identical."""
    p = FeatureParams.from_cfg()
    ts = parse_bar_key(BAR)
    raw = src.history(ts, 120)
    times = src.calendar.previous_bars(ts, 120)
    window, _ = build_window(BAR, ts, times, raw, src.symbols(), src.adv_shares(src.calendar.session_of(ts)))
    tods = src.calendar.session_fraction(times[-4:])
    hist = feature_history(window.panel(), tods, window.snapshot["adv_shares"].to_numpy(), p, 4)
    for k, t in enumerate(times[-4:]):
        live = _features(src, raw, bar_key(t))
        assert np.array_equal(hist[k], live[p.names].to_numpy(), equal_nan=True)

"""The training panel equals the live features; the time split and its embargo; the metrics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from assets.bars.logic import Panel, to_panel
from assets.features.logic import FeatureParams, feature_frame, feature_history
from CONFIG.config_loader import use_config
from resources.market.sources import make_source
from TRAINING.dataset import TrainingDataError, build_dataset
from TRAINING.labels import horizon_bars
from TRAINING.trainers.common import (
    auc,
    calibration_slope,
    cross_sectional_ic,
    longest_horizon_bars,
    time_split,
)


@pytest.fixture(scope="module")
def small():
    with use_config({"simulator": {"n_symbols": 8}}):
        yield build_dataset(sessions=3)


def test_dataset_shapes_and_sessions(small):
    b, n, f = small.X.shape
    assert (n, f) == (8, len(FeatureParams.from_cfg().names))
    assert b == len(small.times) == len(small.sessions) == 3 * 78
    assert list(small.symbols) == sorted(small.symbols)
    assert small.panel["close"].shape == (b, n)
    assert len(small.session_list) == 3 and small.session_list[-1] < dt.date(2025, 6, 2)
    assert np.array_equal(small.session_id, np.repeat([0, 1, 2], 78))


def test_features_are_bit_identical_to_the_live_functions(small):
    with use_config({"simulator": {"n_symbols": 8}}):
        p = FeatureParams.from_cfg()
        src = make_source()
        grid = src.calendar.previous_bars(small.times[-1], len(small.times) + p.lookback())
        panel = to_panel(src.history(small.times[-1], len(grid)), grid, small.symbols)
        tods = src.calendar.session_fraction(small.times)
        live = feature_history(panel, tods, np.ones(len(small.symbols)), p, len(small.times))
        assert np.array_equal(live, small.X, equal_nan=True)
        k = 100  # one bar through feature_frame, market columns included
        end = len(grid) - len(small.times) + k + 1
        sub = Panel(grid[:end], panel.symbols, {f: v[:end] for f, v in panel.fields.items()})
        adv = src.adv_shares(small.sessions[k]).reindex(small.symbols).to_numpy(dtype=float)
        frame = feature_frame(sub, float(tods[k]), adv, p)
        present = np.isfinite(small.panel["close"][k])
        row = np.concatenate([small.X[k], small.market[k]], axis=1)[present]
        assert np.array_equal(frame.drop(columns="symbol").to_numpy(), row, equal_nan=True)


def test_window_without_sessions_is_a_clear_error():
    with pytest.raises(TrainingDataError, match="no trading session before"):
        build_dataset(sessions=5, train_end="2024-01-02")


def _sessions(n: int, bars: int = 78) -> np.ndarray:
    days = [dt.date(2025, 3, 3) + dt.timedelta(days=i) for i in range(n)]
    return np.array([d for d in days for _ in range(bars)], dtype=object)


def test_split_is_time_ordered_with_the_embargo():
    sessions = _sessions(8)
    split = time_split(sessions, 0.25)
    train, valid = np.nonzero(split.train)[0], np.nonzero(split.valid)[0]
    embargo = longest_horizon_bars()
    assert split.embargo_bars == embargo == horizon_bars(60)
    assert valid.min() - train.max() > embargo  # a full embargo of bars lies between them
    assert train.max() + embargo < valid.min()  # so no training label window reaches a validation bar
    assert set(sessions[valid]) == set(sorted(set(sessions))[-2:])
    assert not (split.train & split.valid).any()
    assert split.valid_sessions == (sessions[valid[0]], sessions[-1])


def test_embargo_is_enforced_even_inside_a_session():
    sessions = _sessions(4, bars=5)  # sessions shorter than the embargo: the last train session is emptied
    split = time_split(sessions, 0.25, embargo_bars=7)
    train, valid = np.nonzero(split.train)[0], np.nonzero(split.valid)[0]
    assert valid.min() - train.max() > 7


def test_split_needs_training_sessions():
    with pytest.raises(TrainingDataError, match="cannot be split"):
        time_split(_sessions(1), 0.25)


def test_metrics():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 20))
    assert cross_sectional_ic(r, r, 5) == pytest.approx(1.0)
    assert cross_sectional_ic(-r, r, 5) == pytest.approx(-1.0)
    assert np.isnan(cross_sectional_ic(r[:, :3], r[:, :3], 5))
    assert calibration_slope(r, 2 * r + 1) == pytest.approx(2.0)
    labels = (r > 0).astype(float)
    assert auc(r, labels) == pytest.approx(1.0)
    assert auc(-r, labels) == pytest.approx(0.0)

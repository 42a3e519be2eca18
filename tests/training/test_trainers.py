"""Trainers on a small slice: determinism (byte-identical files), skill sanity, bad training data."""

from __future__ import annotations

import numpy as np
import pytest

from CONFIG.config_loader import use_config
from TRAINING.dataset import TrainingDataError, build_dataset
from TRAINING.labels import barrier_labels, demean, forward_returns, horizon_bars
from TRAINING.testing import small_training_overrides
from TRAINING.trainers.barrier import train_barrier_classifier
from TRAINING.trainers.common import time_split
from TRAINING.trainers.sequential import train_sequential
from TRAINING.trainers.tabular import train_lightgbm_regressor


@pytest.fixture(scope="module")
def slice_():
    with use_config(small_training_overrides(n_symbols=10, sessions=8)):
        data = build_dataset()
        realised = forward_returns(data.panel["close"], data.session_id, 1)
        yield data, time_split(data.sessions), realised


def _peak(data):
    return barrier_labels(data.panel["close"], data.panel["high"], data.panel["low"],
                          data.market_column("sigma_bps"), data.session_id, horizon_bars(15))[0]


def test_lightgbm_is_byte_identical_twice(slice_):
    data, split, r = slice_
    names = list(data.feature_names)
    a = train_lightgbm_regressor(data.X, demean(r), r, split, names)
    b = train_lightgbm_regressor(data.X, demean(r), r, split, names)
    assert a.model_bytes == b.model_bytes and a.model_file == "model.txt"
    assert a.metrics == b.metrics
    assert a.metrics["validation_ic"] > 0  # the planted one-bar reversal is visible even on a small slice


def test_sequential_is_byte_identical_twice(slice_):
    data, split, r = slice_
    names = list(data.feature_names)
    a = train_sequential(data.X, demean(r), r, split, names)
    b = train_sequential(data.X, demean(r), r, split, names)
    assert a.model_bytes == b.model_bytes and a.model_file == "model.pt"
    np.testing.assert_array_equal(a.valid_pred, b.valid_pred)
    assert a.T == 12 and a.kind == "sequential"


def test_barrier_is_byte_identical_twice(slice_):
    data, split, _ = slice_
    names = list(data.feature_names)
    a = train_barrier_classifier(data.X, _peak(data), split, names)
    b = train_barrier_classifier(data.X, _peak(data), split, names)
    assert a.model_bytes == b.model_bytes
    probs = a.valid_pred[np.isfinite(a.valid_pred)]
    assert ((probs >= 0) & (probs <= 1)).all() and a.metrics["validation_auc"] is not None


def test_validation_rows_respect_the_split(slice_):
    data, split, r = slice_
    m = train_lightgbm_regressor(data.X, demean(r), r, split, list(data.feature_names))
    predicted_bars = np.isfinite(m.valid_pred).any(axis=1)
    assert not (predicted_bars & ~split.valid).any()


@pytest.mark.parametrize("trainer", [train_lightgbm_regressor, train_sequential])
def test_all_nan_window_is_rejected(slice_, trainer):
    data, split, r = slice_
    nan = np.full_like(r, np.nan)
    with pytest.raises(TrainingDataError, match="empty or all-NaN"):
        trainer(data.X, nan, nan, split, list(data.feature_names))
    with pytest.raises(TrainingDataError, match="empty or all-NaN"):
        trainer(np.full_like(data.X, np.nan), demean(r), r, split, list(data.feature_names))


def test_barrier_all_nan_labels_rejected(slice_):
    data, split, r = slice_
    with pytest.raises(TrainingDataError, match="empty or all-NaN"):
        train_barrier_classifier(data.X, np.full_like(r, np.nan), split, list(data.feature_names))

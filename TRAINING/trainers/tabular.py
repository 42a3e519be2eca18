"""Tabular family: a LightGBM regressor per horizon on (N, F) rows of one bar.

Target (decision): the cross-sectionally demeaned forward log return. The engine trades relative value
across the universe and the planted and most real short-horizon structure is idiosyncratic, so removing the
bar's common move strips noise the features cannot explain without changing the cross-sectional ranking the
IC measures. Rows: training bars after the embargo with a finite target and all features finite (the same
rule as at prediction: a row with a non-finite feature gets no prediction).

Determinism: ``deterministic=True``, ``force_col_wise=True``, fixed ``num_threads`` and seed; training
twice on the same data gives a byte-identical ``model.txt`` (tested).
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from CONFIG.config_loader import get_cfg
from TRAINING.trainers.common import (
    Split,
    TrainedModel,
    calibration_slope,
    finite_or_none,
    ic_metrics,
    row_masks,
    threads,
)

# config key (training.<section>.*) → LightGBM parameter; keys absent from a section are simply not set
_PARAM_NAMES = {"learning_rate": "learning_rate", "num_leaves": "num_leaves",
                "min_child_samples": "min_data_in_leaf", "subsample": "bagging_fraction",
                "colsample": "feature_fraction"}


def lgb_params(section: str, objective: str) -> dict[str, Any]:
    """LightGBM parameters from ``training.<section>``, with the determinism switches always on."""
    cfg = get_cfg(f"training.{section}")
    seed = int(get_cfg("training.seed"))
    params: dict[str, Any] = {"objective": objective, "seed": seed, "deterministic": True,
                              "force_col_wise": True, "num_threads": threads(), "verbose": -1}
    for key, name in sorted(_PARAM_NAMES.items()):
        if key in cfg:
            params[name] = cfg[key]
    if "bagging_fraction" in params:
        params["bagging_freq"] = 1
    return params


def fit_lightgbm(X: np.ndarray, y: np.ndarray, split: Split, section: str, objective: str,
                 feature_names: list[str]) -> tuple[bytes, dict[str, Any], np.ndarray]:
    """Fit with early stopping on the validation bars; returns the model file's bytes, facts for the
    metadata, and (B, N) validation predictions made by the model reloaded from exactly those bytes."""
    train, valid = row_masks(X, y, split)
    cfg = get_cfg(f"training.{section}")
    params = lgb_params(section, objective)
    dtrain = lgb.Dataset(X[train], y[train], feature_name=feature_names, free_raw_data=True)
    dvalid = lgb.Dataset(X[valid], y[valid], reference=dtrain)
    booster = lgb.train(params, dtrain, num_boost_round=int(cfg["n_estimators"]), valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(int(cfg["early_stopping_rounds"]), verbose=False)])
    best = int(booster.best_iteration or booster.current_iteration())
    text = booster.model_to_string(num_iteration=best)
    model = lgb.Booster(model_str=text)
    pred = np.full(y.shape, np.nan)
    rows = split.valid[:, None] & np.isfinite(X).all(axis=2)
    pred[rows] = model.predict(X[rows])
    facts = {"best_iteration": best, "train_rows": int(train.sum()), "validation_rows": int(valid.sum())}
    return text.encode(), facts, pred


def train_lightgbm_regressor(X: np.ndarray, target: np.ndarray, realised: np.ndarray, split: Split,
                             feature_names: list[str]) -> TrainedModel:
    """LightGBM on (bar, symbol) rows; IC against the realised forward return on validation bars."""
    blob, facts, pred = fit_lightgbm(X, target, split, "lightgbm", "regression", feature_names)
    metrics = {**ic_metrics(pred, realised),
               "calibration_slope": finite_or_none(calibration_slope(pred, target)),
               "validation_pred_std": finite_or_none(float(np.nanstd(pred))), **facts}
    return TrainedModel(blob, "model.txt", "tabular", 1, metrics, {}, pred)

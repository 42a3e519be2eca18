"""Pure logic of the ``predictions`` stage: run every loaded model on one bar and standardize.

Outputs (long tables, written sorted so their hashes are stable):
  predictions          symbol, horizon, family, raw, std, std_scale, status
                       (std_scale: the robust scale used; status "" = ok, else why no prediction)
  predictions_barrier  symbol, p_peak, p_valley, source           (source "model" or "prior: <why>")
Tabular models see the (N, F) features of valid symbols; sequential models see (N, T, F) windows from a
``SeqBufferManager``; symbols with invalid features or an unusable window get NaN and a status.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.predictions.cache import PredictionCache
from assets.predictions.models import BARRIER_FAMILY, RETURN_FAMILIES, ModelSet
from assets.predictions.standardize import Params as StdParams
from assets.predictions.standardize import reference_center_scale, standardize
from CONFIG.config_loader import get_cfg
from TRAINING.registry import barrier_target, return_target

PRED_COLUMNS = ["symbol", "horizon", "family", "raw", "std", "std_scale", "status"]


@dataclass(frozen=True)
class PredictionInputs:
    symbols: np.ndarray            # (N,) sorted universe symbols with a feature row this bar
    X: np.ndarray                  # (N, F) model features
    valid: np.ndarray              # (N,) all features finite
    seq_X: np.ndarray | None       # (N, T, F) sequential windows (None: no sequential model)
    seq_ok: np.ndarray | None      # (N,)
    seq_reason: np.ndarray | None  # (N,)


def _predict(model, X: np.ndarray, cache: PredictionCache | None) -> np.ndarray:
    """The model's output for X, through the inference cache when one is given (same bits either way)."""
    if cache is None:
        return model.predict(X)
    return cache.predict(model.target, model.family, model.version, model.predict, X)


def _family_raw(model, family: str, inp: PredictionInputs,
                cache: PredictionCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    n = len(inp.symbols)
    raw = np.full(n, np.nan)
    status = np.where(inp.valid, "", "invalid features").astype(object)
    if family == "sequential":
        ok = inp.valid & inp.seq_ok
        status = np.where(inp.valid & ~inp.seq_ok, inp.seq_reason, status).astype(object)
        if ok.any():
            raw[ok] = _predict(model, inp.seq_X[ok], cache)
    elif inp.valid.any():
        raw[inp.valid] = _predict(model, inp.X[inp.valid], cache)
    bad = ~np.isfinite(raw) & (status == "")
    status[bad] = "model returned non-finite"
    return raw, status


def predict_returns(models: ModelSet, inp: PredictionInputs, std_history: dict[tuple[int, str], np.ndarray],
                    p: StdParams | None = None, cache: PredictionCache | None = None) -> pd.DataFrame:
    """Raw and standardized predictions per symbol × horizon × family for the models that loaded
    (``cache``: inference served by :class:`PredictionCache` where the same input was seen)."""
    p = p or StdParams.from_cfg()
    parts = []
    for h in sorted(get_cfg("horizons.minutes")):
        for family in RETURN_FAMILIES:
            model = models.get(return_target(h), family)
            if model is None:
                continue
            raw, status = _family_raw(model, family, inp, cache)
            hist = std_history.get((h, family), np.empty(0))
            std = standardize(raw, hist, p.clip, p.min_history)
            _, scale = reference_center_scale(raw, hist, p.min_history)
            parts.append(pd.DataFrame({"symbol": inp.symbols, "horizon": h, "family": family,
                                       "raw": raw, "std": std, "std_scale": scale, "status": status}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            PRED_COLUMNS, [object, np.int64, object, float, float, float, object], strict=True)})
    out = pd.concat(parts, ignore_index=True)
    out["horizon"] = out["horizon"].astype(np.int64)
    return out.sort_values(["symbol", "horizon", "family"], kind="mergesort").reset_index(drop=True)


def predict_barrier(models: ModelSet, inp: PredictionInputs, cache: PredictionCache | None = None) -> pd.DataFrame:
    """P(peak) and P(valley); the configured neutral prior (recorded as such) when no model can say."""
    prior = get_cfg("barrier.neutral_prior")
    hb = get_cfg("barrier.horizon_minutes")
    out = {"symbol": inp.symbols}
    source = np.where(inp.valid, "model", "prior: invalid features").astype(object)
    for side in ("peak", "valley"):
        model = models.get(barrier_target(side, hb), BARRIER_FAMILY)
        prob = np.full(len(inp.symbols), prior)
        if model is None:
            source[:] = f"prior: no {side} model"
        elif inp.valid.any():
            got = _predict(model, inp.X[inp.valid], cache)
            prob[inp.valid] = np.where(np.isfinite(got), got, prior)
        out[f"p_{side}"] = prob
    out["source"] = source
    return pd.DataFrame(out)

"""Pure logic of the ``predictions`` stage: run every loaded model on one bar and standardize.

Outputs (long tables, written sorted so their hashes are stable):
  predictions          symbol, horizon, family, raw, std, std_scale, status
                       (std_scale: the robust scale used; status "" = ok, else why no prediction)
  predictions_barrier  symbol, p_peak, p_valley, source           (source "model" or "prior: <why>")
Tabular models see the (N, F) features of valid symbols; sequential models see (N, T, F) windows from a
``SeqBufferManager``; symbols with invalid features or an unusable window get NaN and a status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


# Sequential (torch GRU) outputs are not batch-invariant: a window's output moved by up to 2.3e-10 (≈ 0.5 % of
# rows) when run inside a 78-bar batch instead of with its own bar's rows (measured 2026-11-29, 100 symbols, 1 and
# 2 torch threads). So only the tabular families (LightGBM: row by row, bit-identical in any batch) run the rows
# of many bars in one call; a sequential model runs each bar's rows alone, one call per bar as live.
BATCHED_FAMILIES = frozenset({"lightgbm", BARRIER_FAMILY})


def _rows(family: str, inp: PredictionInputs) -> np.ndarray:
    """(N,) the rows a model of ``family`` is run on."""
    return inp.valid & inp.seq_ok if family == "sequential" else inp.valid


def _run(model, family: str) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The model's outputs of a list of inputs: one call on their rows together where that is exact."""
    def run(Xs: list[np.ndarray]) -> list[np.ndarray]:
        if family not in BATCHED_FAMILIES or len(Xs) == 1:
            return [model.predict(X) for X in Xs]
        out = model.predict(np.concatenate(Xs))
        return np.split(out, np.cumsum([len(X) for X in Xs])[:-1])
    return run


def model_outputs(models: ModelSet, inputs: list[PredictionInputs], cache: PredictionCache | None = None,
                  families: Iterable[str] | None = None) -> list[dict[tuple[str, str], np.ndarray]]:
    """Per bar, every loaded model's output on the bar's rows (``_rows``), keyed by (target, family); a bar with
    no such row has no entry. B bars at once: each model is called once for all of them (per bar for the
    sequential family, see ``BATCHED_FAMILIES``), through the inference cache when one is given (each bar's
    input its own entry, as for one bar). ``families``: only these."""
    out: list[dict[tuple[str, str], np.ndarray]] = [{} for _ in inputs]
    for (target, family), model in sorted(models.models.items()):
        if families is not None and family not in families:
            continue
        used = [b for b, inp in enumerate(inputs) if _rows(family, inp).any()]
        Xs = [(inputs[b].seq_X if family == "sequential" else inputs[b].X)[_rows(family, inputs[b])] for b in used]
        if not Xs:
            continue
        run = _run(model, family)
        got = run(Xs) if cache is None else cache.predict_many(model.target, model.family, model.version, run, Xs)
        for b, y in zip(used, got, strict=True):
            out[b][(target, family)] = np.asarray(y, dtype=np.float64)
    return out


def _family_raw(family: str, inp: PredictionInputs, output: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    n = len(inp.symbols)
    raw = np.full(n, np.nan)
    status = np.where(inp.valid, "", "invalid features").astype(object)
    if family == "sequential":
        status = np.where(inp.valid & ~inp.seq_ok, inp.seq_reason, status).astype(object)
    if output is not None:
        raw[_rows(family, inp)] = output
    bad = ~np.isfinite(raw) & (status == "")
    status[bad] = "model returned non-finite"
    return raw, status


def predict_returns(models: ModelSet, inp: PredictionInputs, std_history: dict[tuple[int, str], np.ndarray],
                    p: StdParams | None = None, cache: PredictionCache | None = None,
                    outputs: dict[tuple[str, str], np.ndarray] | None = None) -> pd.DataFrame:
    """Raw and standardized predictions per symbol × horizon × family for the models that loaded
    (``cache``: inference served by :class:`PredictionCache` where the same input was seen; ``outputs``: the
    models' outputs already computed, :func:`model_outputs`)."""
    p = p or StdParams.from_cfg()
    if outputs is None:
        outputs = model_outputs(models, [inp], cache, RETURN_FAMILIES)[0]
    parts = []
    for h in sorted(get_cfg("horizons.minutes")):
        for family in RETURN_FAMILIES:
            model = models.get(return_target(h), family)
            if model is None:
                continue
            raw, status = _family_raw(family, inp, outputs.get((return_target(h), family)))
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


def predict_barrier(models: ModelSet, inp: PredictionInputs, cache: PredictionCache | None = None,
                    outputs: dict[tuple[str, str], np.ndarray] | None = None) -> pd.DataFrame:
    """P(peak) and P(valley); the configured neutral prior (recorded as such) when no model can say."""
    if outputs is None:
        outputs = model_outputs(models, [inp], cache, (BARRIER_FAMILY,))[0]
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
            got = outputs[(barrier_target(side, hb), BARRIER_FAMILY)]
            prob[inp.valid] = np.where(np.isfinite(got), got, prior)
        out[f"p_{side}"] = prob
    out["source"] = source
    return pd.DataFrame(out)

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

from assets.predictions.cache import PredictionCache, input_digest
from assets.predictions.models import BARRIER_FAMILY, RETURN_FAMILIES, ModelSet
from assets.predictions.standardize import Params as StdParams
from assets.predictions.standardize import standardize_rows
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
    input its own entry, as for one bar). ``families``: only these.

    The bars' inputs are gathered and digested once per kind of input (the tabular families all read the
    valid rows' features, the sequential ones the valid rows' windows), not once per model: ≈ 12 models read
    2 inputs a bar. The models only read their input."""
    out: list[dict[tuple[str, str], np.ndarray]] = [{} for _ in inputs]
    gathered: dict[bool, tuple[list[int], list[np.ndarray], list[bytes] | None]] = {}
    for (target, family), model in sorted(models.models.items()):
        if families is not None and family not in families:
            continue
        seq = family == "sequential"
        if seq not in gathered:
            rows = [_rows(family, inp) for inp in inputs]
            used = [b for b, r in enumerate(rows) if r.any()]
            Xs = [(inputs[b].seq_X if seq else inputs[b].X)[rows[b]] for b in used]
            gathered[seq] = (used, Xs, [input_digest(X) for X in Xs] if cache is not None else None)
        used, Xs, digests = gathered[seq]
        if not Xs:
            continue
        run = _run(model, family)
        got = run(Xs) if cache is None else cache.predict_many(model.target, model.family, model.version, run, Xs,
                                                               digests)
        for b, y in zip(used, got, strict=True):
            out[b][(target, family)] = np.asarray(y, dtype=np.float64)
    return out


def return_groups(models: ModelSet) -> list[tuple[int, str]]:
    """The (horizon, family) of every loaded return model, in the predictions' row order (horizon, family)."""
    return [(h, f) for h in sorted(get_cfg("horizons.minutes")) for f in sorted(RETURN_FAMILIES)
            if models.get(return_target(h), f) is not None]


def empty_predictions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        PRED_COLUMNS, [object, np.int64, object, float, float, float, object], strict=True)})


@dataclass(frozen=True)
class RawBatch:
    """The raw return predictions of B bars on one symbol axis (:func:`raw_batch`).

    ``symbols`` (S,) the sorted union of the bars' symbols; ``bar``/``sym`` (R,) each row's bar and symbol
    position, rows grouped by bar and sorted by symbol within it (the predictions' order); ``offsets`` (B+1,)
    each bar's rows; ``raw``/``status`` (G, R) per group; ``grid`` (G, B, S) the raws on the axis (NaN where
    a bar has no row)."""

    groups: list[tuple[int, str]]
    symbols: np.ndarray
    bar: np.ndarray
    sym: np.ndarray
    offsets: np.ndarray
    raw: np.ndarray
    status: np.ndarray
    grid: np.ndarray


def raw_batch(models: ModelSet, inputs: list[PredictionInputs],
              outputs: list[dict[tuple[str, str], np.ndarray]]) -> RawBatch:
    """Every loaded return model's raw output per bar and symbol, with the reason where there is none
    (``invalid features``, the sequential window's reason, ``model returned non-finite``). Vectorised over
    the rows of all bars: one scatter per model. Errors: a bar with a duplicated symbol."""
    groups = return_groups(models)
    b_n = len(inputs)
    syms = [np.asarray(i.symbols, dtype=object) for i in inputs]
    sizes = np.array([len(x) for x in syms], dtype=np.int64)
    flat = np.concatenate(syms) if b_n else np.empty(0, dtype=object)
    symbols = np.unique(flat) if len(flat) else np.empty(0, dtype=object)
    sym = np.searchsorted(symbols, flat) if len(flat) else np.empty(0, dtype=np.int64)
    bar = np.repeat(np.arange(b_n), sizes)
    order = np.lexsort((sym, bar))  # rows by bar, then symbol: the predictions' order
    if len(order) > 1 and ((np.diff(bar[order]) == 0) & (np.diff(sym[order]) == 0)).any():
        raise ValueError("a bar's features hold a symbol twice: its predictions would be ambiguous")
    valid = np.concatenate([i.valid for i in inputs]) if b_n else np.empty(0, dtype=bool)
    seq = all(i.seq_ok is not None for i in inputs) and b_n
    raw = np.full((len(groups), len(flat)), np.nan)
    status = np.empty((len(groups), len(flat)), dtype=object)
    for g, (h, family) in enumerate(groups):  # a loop over models, each over every row of the batch
        rows = valid.copy()
        st = np.where(valid, "", "invalid features").astype(object)
        if family == "sequential":
            if not seq:
                raise ValueError("a sequential model without sequential inputs")
            ok = np.concatenate([i.seq_ok for i in inputs])
            reason = np.concatenate([np.asarray(i.seq_reason, dtype=object) for i in inputs])
            rows &= ok
            st = np.where(valid & ~ok, reason, st).astype(object)
        got = [outputs[b][(return_target(h), family)] for b in range(b_n)
               if (return_target(h), family) in outputs[b]]
        if got:
            values = np.concatenate(got)
            if len(values) != rows.sum():
                raise ValueError(f"{return_target(h)}/{family}: {len(values)} outputs for {int(rows.sum())} rows")
            raw[g, rows] = values
        st[~np.isfinite(raw[g]) & (st == "")] = "model returned non-finite"
        status[g] = st
    raw, status, bar, sym = raw[:, order], status[:, order], bar[order], sym[order]
    grid = np.full((len(groups), b_n, len(symbols)), np.nan)
    grid[:, bar, sym] = raw
    return RawBatch(groups, symbols, bar, sym, np.concatenate([[0], np.cumsum(sizes)]), raw, status, grid)


def predict_returns(models: ModelSet, batch: RawBatch, reference: tuple[np.ndarray, np.ndarray],
                    p: StdParams | None = None) -> list[pd.DataFrame]:
    """Raw and standardized predictions per symbol × horizon × family of B bars, one frame per bar (rows
    sorted by symbol, horizon, family). ``reference``: (G, L, S) raws on a timeline and (B, n) each bar's
    rows of it, the ``standardization.window_bars`` bars before it (only finite values count,
    :func:`~assets.predictions.stage.std_reference`). Standardization runs over every bar and group at once
    (:func:`~assets.predictions.standardize.standardize_rows`), so a bar's numbers do not depend on the batch."""
    p = p or StdParams.from_cfg()
    b_n, g_n = len(batch.offsets) - 1, len(batch.groups)
    if g_n == 0:
        return [empty_predictions() for _ in range(b_n)]
    std = np.empty_like(batch.raw)
    scale = np.empty((g_n, b_n))
    axis, window = reference
    for g in range(g_n):  # a loop over models; bars × symbols at once
        ref = axis[g][window].reshape(b_n, -1)
        z, scale[g] = standardize_rows(batch.grid[g], ref, p.clip, p.min_history)
        std[g] = z[batch.bar, batch.sym]
    h = np.array([x for x, _ in batch.groups], dtype=np.int64)
    f = np.array([x for _, x in batch.groups], dtype=object)
    columns = {"raw": batch.raw.T.ravel(), "std": std.T.ravel(), "std_scale": scale.T[batch.bar].ravel(),
               "status": batch.status.T.ravel()}
    symbols = batch.symbols[batch.sym]
    n_rows = np.diff(batch.offsets)
    whole = pd.DataFrame({"symbol": np.repeat(symbols, g_n), "horizon": np.tile(h, len(symbols)),
                          "family": np.tile(f, len(symbols)), **columns})
    empty = {"symbol": symbols[:0], "horizon": h[:0], "family": f[:0], **{k: v[:0] for k, v in columns.items()}}
    return [_part(whole, batch.offsets[b] * g_n, batch.offsets[b + 1] * g_n) if n_rows[b] else pd.DataFrame(empty)
            for b in range(b_n)]  # a bar without rows: its frame alone (an empty column infers no string dtype)


def _part(whole: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    """Rows [lo, hi) of a batch's frame as a bar's own frame (index from 0): one frame is built per batch and
    split by slicing (issue 12), every value and dtype what the bar's frame built alone has."""
    return whole.iloc[lo:hi].reset_index(drop=True)


def predict_barrier(models: ModelSet, inp: PredictionInputs, cache: PredictionCache | None = None,
                    outputs: dict[tuple[str, str], np.ndarray] | None = None) -> pd.DataFrame:
    """P(peak) and P(valley) of one bar: :func:`predict_barriers` of a batch of one."""
    if outputs is None:
        outputs = model_outputs(models, [inp], cache, (BARRIER_FAMILY,))[0]
    return predict_barriers(models, [inp], [outputs])[0]


def predict_barriers(models: ModelSet, inputs: list[PredictionInputs],
                     outputs: list[dict[tuple[str, str], np.ndarray]]) -> list[pd.DataFrame]:
    """Per bar P(peak) and P(valley) per symbol (``p_peak``, ``p_valley``, ``source``); the configured
    neutral prior (recorded as such in ``source``) where no model can say: no model of that side, invalid
    features, or a non-finite model output. B bars at once: one frame built and split per bar."""
    prior = get_cfg("barrier.neutral_prior")
    hb = get_cfg("barrier.horizon_minutes")
    sizes = np.array([len(i.symbols) for i in inputs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    symbols = np.concatenate([np.asarray(i.symbols) for i in inputs]) if inputs else np.empty(0, dtype=object)
    valid = np.concatenate([i.valid for i in inputs]) if inputs else np.empty(0, dtype=bool)
    out: dict[str, np.ndarray] = {"symbol": symbols}
    source = np.where(valid, "model", "prior: invalid features").astype(object)
    for side in ("peak", "valley"):
        target = barrier_target(side, hb)
        model = models.get(target, BARRIER_FAMILY)
        prob = np.full(len(symbols), prior)
        if model is None:
            source[:] = f"prior: no {side} model"
        else:
            for b, inp in enumerate(inputs):  # a loop over bars: each bar's model rows into its slice
                if inp.valid.any():
                    got = outputs[b][(target, BARRIER_FAMILY)]
                    part = prob[offsets[b]:offsets[b + 1]]
                    part[inp.valid] = np.where(np.isfinite(got), got, prior)
        out[f"p_{side}"] = prob
    out["source"] = source
    if len(inputs) == 1:
        return [pd.DataFrame(out)]
    whole = pd.DataFrame(out)
    return [_part(whole, offsets[b], offsets[b + 1]) if sizes[b] else pd.DataFrame({k: v[:0] for k, v in out.items()})
            for b in range(len(inputs))]  # a bar without rows: its frame alone (as in predict_returns)

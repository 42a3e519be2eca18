"""Today's per-bar signal functions (predictions' standardization, model_skill, blended_alpha) as they were
before the batched stages (issue 12), kept only as the reference the batch tests compare against, bit for bit.
Copied from main at the branch point; not used by the engine."""

from __future__ import annotations

import math  # noqa: F401

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.blended_alpha.logic import (
    REASON_ALL_ZERO,
    REASON_EMPTY,
    REASON_NONFINITE,
    REASON_RIDGE,
    REASON_SINGLE,
    REASON_SINGULAR,
    blend,
)
from assets.blended_alpha.logic import Params as BlendParams
from assets.history import ChainHistory, PredictionGrid
from assets.model_skill.logic import MIN_IC_PAIRS, family_correlation, family_mu
from assets.model_skill.logic import Params as SkillParams
from assets.predictions.logic import PRED_COLUMNS, PredictionInputs, _rows, predict_barrier
from assets.predictions.models import RETURN_FAMILIES, ModelSet
from assets.predictions.stage import PreparedBar, previous_bar_keys
from assets.predictions.standardize import MAD_TO_SIGMA
from assets.predictions.standardize import Params as StdParams
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys, get_calendar
from TRAINING.registry import meta_number, return_target


def _equal(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def ridge_weights(mu: np.ndarray, sigma: np.ndarray, lam: float) -> tuple[np.ndarray, str]:
    """w ∝ (Σ + λI)^{-1} μ, negatives clipped to 0, sum 1; equal weights when that is undefined."""
    m = np.asarray(mu, dtype=float).ravel()
    n = m.size
    if n == 0:
        return np.zeros(0), REASON_EMPTY
    if n == 1:
        return np.ones(1), REASON_SINGLE
    s = np.asarray(sigma, dtype=float)
    if s.shape != (n, n):
        raise ValueError(f"sigma must be ({n}, {n}), got {s.shape}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.isfinite(lam)):
        return _equal(n), REASON_NONFINITE
    a = s + lam * np.eye(n)
    if not np.isfinite(np.linalg.cond(a)) or np.linalg.cond(a) > 1.0 / np.finfo(float).eps:
        return _equal(n), REASON_SINGULAR
    try:
        raw = np.linalg.solve(a, m)
    except np.linalg.LinAlgError:
        return _equal(n), REASON_SINGULAR
    if not np.all(np.isfinite(raw)):
        return _equal(n), REASON_SINGULAR
    w = np.clip(raw, 0.0, None)
    total = float(w.sum())
    if not (np.isfinite(total) and total > 0.0):
        return _equal(n), REASON_ALL_ZERO
    return w / total, REASON_RIDGE


def apply_temperature(w: np.ndarray, t: float) -> np.ndarray:
    """w_f ← w_f^(1/T), renormalised: T < 1 concentrates weight on the strongest family."""
    w = np.asarray(w, dtype=float)
    if not (np.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be > 0, got {t}")
    if t == 1.0 or w.size == 0:
        return w.copy()
    p = np.power(np.clip(w, 0.0, None), 1.0 / t)
    total = float(p.sum())
    if not (np.isfinite(total) and total > 0.0):
        return w.copy()
    return p / total


def temperature_for(h_minutes: int, params: BlendParams | None = None) -> float:
    """T for a horizon from ``blending.temperature``; horizons not listed get 1.0 (no change)."""
    params = params or BlendParams.from_cfg()
    return dict(params.temperature).get(int(h_minutes), 1.0)


def horizon_weights(mu: np.ndarray, sigma: np.ndarray, h_minutes: int,
                    params: BlendParams | None = None) -> tuple[np.ndarray, str]:
    """The family weights used at one horizon: ridge (or its fallback), then the temperature."""
    params = params or BlendParams.from_cfg()
    w, reason = ridge_weights(mu, sigma, params.ridge_lambda)
    return apply_temperature(w, temperature_for(h_minutes, params)), reason


def robust_center_scale(reference: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826·MAD) of the finite values, std when the MAD is 0; scale 0 when degenerate."""
    ref = np.asarray(reference, dtype=float).ravel()
    ref = np.sort(ref[np.isfinite(ref)])  # sorted: the result cannot depend on the symbols' order
    if ref.size == 0:
        return float("nan"), 0.0
    center = float(np.median(ref))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(ref - center)))
    if not (np.isfinite(scale) and scale > 0.0):
        scale = float(np.std(ref))
    if not (np.isfinite(scale) and scale > 0.0):
        scale = 0.0
    return center, scale


def reference_center_scale(raw: np.ndarray, history: np.ndarray,
                           min_history: int | None = None) -> tuple[float, float]:
    """(centre, scale) a standardization uses: the history's when it holds ``min_history`` finite values,
    else the current cross-section's. Blending reuses the scale to map z back to a return."""
    if min_history is None:
        min_history = int(get_cfg("standardization.min_history"))
    x = np.asarray(raw, dtype=float)
    hist = np.asarray(history, dtype=float).ravel()
    hist = hist[np.isfinite(hist)]
    return robust_center_scale(hist if hist.size >= min_history else x[np.isfinite(x)])


def standardize(raw: np.ndarray, history: np.ndarray, clip: float, min_history: int | None = None) -> np.ndarray:
    """Robust z-score of ``raw`` (N,) against ``history`` (K,), clipped to ±``clip``; NaN stays NaN.

    ``min_history`` defaults to ``standardization.min_history``.
    """
    x = np.asarray(raw, dtype=float)
    finite = np.isfinite(x)
    center, scale = reference_center_scale(x, history, min_history)
    out = np.full(x.shape, np.nan)
    if scale > 0.0:
        out[finite] = np.clip((x[finite] - center) / scale, -clip, clip)
    else:
        out[finite] = 0.0
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
                    p: StdParams | None = None,
                    outputs: dict[tuple[str, str], np.ndarray] | None = None) -> pd.DataFrame:
    """Raw and standardized predictions per symbol × horizon × family for the models that loaded
    (``cache``: inference served by :class:`PredictionCache` where the same input was seen; ``outputs``: the
    models' outputs already computed, :func:`model_outputs`)."""
    p = p or StdParams.from_cfg()
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


def std_history(history: ChainHistory, bar: str) -> dict[tuple[int, str], np.ndarray]:
    """Each family's raw predictions of the last ``standardization.window_bars`` bars, per horizon.

    Read through the prediction grid (arrays, not millions of rows). The values come in grid order with
    NaN where a symbol had no row; standardization keeps only the finite values and sorts them before its
    medians, so the reference is the same bits as from the rows (``tests/unit/test_history_state.py``)."""
    grid = history.prediction_grid(previous_bar_keys(bar, get_cfg("standardization.window_bars")))
    out = {}
    for g, i in sorted(grid.groups.items()):
        rows = grid.has_rows[i]
        if rows.any():
            out[g] = grid.raw[i][rows].ravel()
    return out


SKILL_COLUMNS = ["horizon", "family", "ic_live", "n_live", "ic_prior", "ic_shrunk", "cost_share", "mu"]


def _average_ranks(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row, 1-based ranks of the ``ok`` entries with ties averaged (``average_rank``); NaN elsewhere."""
    v = np.where(ok, x, np.inf)
    order = np.argsort(v, axis=1)
    s = np.take_along_axis(v, order, axis=1)
    k, n = s.shape
    pos = np.broadcast_to(np.arange(n), (k, n))
    ranks = np.empty((k, n))
    first = np.ones((k, n), dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    if first[:, 1:].all() or np.isinf(s[:, 1:][~first[:, 1:]]).all():
        # no tie among the finite entries (the usual case for continuous predictions): rank = position + 1,
        # exactly what the averaging below gives for untied entries
        np.put_along_axis(ranks, order, pos + 1.0, axis=1)
        return np.where(ok, ranks, np.nan)
    last = np.ones((k, n), dtype=bool)
    last[:, :-1] = first[:, 1:]
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    stop = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    np.put_along_axis(ranks, order, (start + stop) / 2.0 + 1.0, axis=1)
    return np.where(ok, ranks, np.nan)


def _centred_ranks(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Average ranks of the ``ok`` entries minus their mean (m+1)/2, 0 elsewhere: exact half-integers."""
    m = ok.sum(axis=1)
    return np.where(ok, _average_ranks(x, ok) - ((m + 1) / 2.0)[:, None], 0.0)


def spearman_rows(pred: np.ndarray, real: np.ndarray, real_ranks: np.ndarray | None = None) -> np.ndarray:
    """Row by row exactly ``spearman_ic``: ranks are half-integers, so every sum below is exact in float64
    (whatever its order) and the result is bit-identical to the per-bar function. ``real_ranks``: the
    ``_centred_ranks`` of ``real`` on the same pairs, when the caller already has them."""
    ok = np.isfinite(pred) & np.isfinite(real)
    m = ok.sum(axis=1)
    rp = _centred_ranks(pred, ok)
    rr = _centred_ranks(real, ok) if real_ranks is None else real_ranks
    denom = np.sqrt((rp * rp).sum(axis=1) * (rr * rr).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = np.clip((rp * rr).sum(axis=1) / denom, -1.0, 1.0)
    return np.where((m >= MIN_IC_PAIRS) & (denom != 0.0), ic, np.nan)


class RankedReturns:
    """One horizon's realised returns and their ranks per set of pairs: families that predicted the same
    symbols on the same bars (the usual case) share one ranking of the returns."""

    def __init__(self, real: np.ndarray, closed: np.ndarray):
        self.real, self.closed = real, closed
        self._ranks: dict[tuple[bytes, bytes], np.ndarray] = {}

    def ic_by_bar(self, pred: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Per past bar with predictions whose horizon has closed (oldest first), the Spearman IC."""
        use = present & self.closed
        p, r = pred[use], self.real[use]
        ok = np.isfinite(p) & np.isfinite(r)
        key = (use.tobytes(), ok.tobytes())
        if key not in self._ranks:
            self._ranks[key] = _centred_ranks(r, ok)
        return spearman_rows(p, r, self._ranks[key])


class Realised:
    """Closes of the window on the past grid's symbols, and the bar position of every past key."""

    def __init__(self, window: BarWindow, keys: list[str], symbols: pd.Index):
        self.at = pd.Index(bar_keys(window.times)).get_indexer(keys)  # -1: absent
        self.n_bars = len(window.times)
        self.close = window_close(window, symbols)
        self.day = get_calendar().session_days(window.times)

    def closed(self, hb: int) -> np.ndarray:
        """(K,) the past bar s is in the window, s+h has closed and lies in s's session: its predictions can
        be scored."""
        ok = (self.at >= 0) & (self.at + hb < self.n_bars)
        same = np.zeros(len(self.at), dtype=bool)
        same[ok] = self.day[self.at[ok]] == self.day[self.at[ok] + hb]
        return ok & same

    def ic_window(self, hb: int, window: int) -> np.ndarray:
        """(K,) the IC's window at this horizon: the last ``window`` scoreable past bars (Σ uses the same)."""
        scoreable = self.closed(hb)
        from_end = np.cumsum(scoreable[::-1])[::-1]  # scoreable bars at or after each key
        return scoreable & (from_end <= window)

    def returns(self, hb: int) -> np.ndarray:
        """(K, S) log(close[s+h]/close[s]) (the same operations as the per-bar formula); NaN if not closed."""
        ok = self.closed(hb)
        out = np.full((len(self.at), self.close.shape[1]), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[ok] = np.log(self.close[self.at[ok] + hb] / self.close[self.at[ok]])
        return out


def window_close(window: BarWindow, symbols: np.ndarray) -> np.ndarray:
    """(T, S) closes of the window's bars for ``symbols`` (NaN for a symbol outside the universe), taken
    from the window's panel (built once per window and shared with the features)."""
    panel = window.panel()
    pos = pd.Index(panel.symbols).get_indexer(symbols)
    close = np.concatenate([panel["close"], np.full((len(panel.times), 1), np.nan)], axis=1)
    return close[:, pos]  # -1 picks the appended NaN column


def uncovered_share(raw: np.ndarray, sp: np.ndarray) -> float:
    """Share of valid symbols whose predicted move |raw| does not cover their quoted spread ``sp`` (bps);
    NaN if none is valid."""
    ok = np.isfinite(raw) & np.isfinite(sp)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(raw[ok]) * 1e4 < sp[ok]))


def compute_model_skill(window: BarWindow, features: pd.DataFrame, predictions: pd.DataFrame, models: ModelSet,
                        history: ChainHistory, params: SkillParams | None = None) -> dict[str, pd.DataFrame]:
    params = params or SkillParams.from_cfg()
    bar_minutes = get_cfg("market.bar_minutes")
    horizons = sorted(get_cfg("horizons.minutes"))
    max_hb = max(horizons) // bar_minutes
    keys = previous_bar_keys(window.bar, params.ic_window_bars + max_hb)
    past = history.prediction_grid(keys)
    realised = Realised(window, keys, past.symbols)
    now_h = predictions["horizon"].to_numpy()
    now_f = predictions["family"].to_numpy(dtype=object)
    now_raw = predictions["raw"].to_numpy(dtype=float)
    now_spread = features.set_index("symbol")["spread_bps"].reindex(predictions["symbol"]).to_numpy(dtype=float)
    rows, sigma_rows = [], []
    for h in horizons:
        hb = h // bar_minutes
        fams = [f for f in RETURN_FAMILIES if models.get(return_target(h), f) is not None]
        if not fams:
            continue
        raw, present = past.select(h, fams, "raw")
        in_window = realised.ic_window(hb, params.ic_window_bars)
        ranked = RankedReturns(realised.returns(hb), in_window)
        for i, f in enumerate(fams):
            ics = ranked.ic_by_bar(raw[i], present[i])
            mine = (now_h == h) & (now_f == f)
            prior = meta_number(models.get(return_target(h), f).meta, "validation_ic")  # null → NaN
            uncovered = uncovered_share(now_raw[mine], now_spread[mine])
            first = family_mu(ics, prior, 0.0, params)  # the IC before costs
            share = abs(first["ic_shrunk"]) * uncovered if np.isfinite(uncovered * first["ic_shrunk"]) else 0.0
            got = family_mu(ics, prior, share, params)
            rows.append({"horizon": h, "family": f, **got, "ic_prior": prior, "cost_share": share})
        sigma_rows += _sigma_rows(past, h, fams, in_window)
    skill = pd.DataFrame(rows, columns=SKILL_COLUMNS)
    skill["horizon"] = skill["horizon"].astype(np.int64)
    sigma = pd.DataFrame(sigma_rows, columns=["horizon", "family_a", "family_b", "corr"])
    sigma["horizon"] = sigma["horizon"].astype(np.int64)
    return {"model_skill": skill, "model_skill_sigma": sigma}


def _sigma_rows(past: PredictionGrid, h: int, fams: list[str], usable: np.ndarray) -> list[dict]:
    """Σ: correlation of the families' standardized predictions over the IC's window (``usable``, the same
    past bars the IC scores).

    Every (bar, symbol) of the window is one observation, pairwise complete. The grid lays them out in
    (bar, symbol name) order whatever order the rows came in, so the sums need no sort to be reproducible.
    """
    std, _ = past.select(h, fams, "std")
    obs = std[:, usable].reshape(len(fams), -1).T
    corr = family_correlation(obs, canonical=False) if len(obs) else np.eye(len(fams))
    return [{"horizon": h, "family_a": a, "family_b": b, "corr": float(corr[i, j])}
            for i, a in enumerate(fams) for j, b in enumerate(fams)]


WEIGHT_COLUMNS = ["horizon", "family", "weight", "mu", "reason", "temperature", "calibration_slope", "std_scale",
                  "scale"]


def _first_finite(values: np.ndarray) -> float:
    """The first non-NaN value (what ``groupby().first()`` takes), NaN when there is none."""
    ok = values[~np.isnan(values)]
    return float(ok[0]) if len(ok) else float("nan")


def compute_blended_alpha(predictions: pd.DataFrame, skill: pd.DataFrame, sigma: pd.DataFrame, models: ModelSet,
                          params: BlendParams | None = None) -> dict[str, pd.DataFrame]:
    """Weights per horizon and α per symbol × horizon. Arrays, not pivots: the loop runs over horizons and
    families only, and α of each horizon is the same ``blend`` call on the same (N, F) scores."""
    params = params or BlendParams.from_cfg()
    sym_code, symbols = pd.factorize(predictions["symbol"], sort=True)
    symbols = np.asarray(symbols, dtype=object)
    fam_code, fam_names = pd.factorize(predictions["family"])
    hz = predictions["horizon"].to_numpy()
    std = predictions["std"].to_numpy(dtype=float)
    std_scale_all = predictions["std_scale"].to_numpy(dtype=float)
    corr = {(int(h), a, b): float(c) for h, a, b, c in zip(sigma["horizon"], sigma["family_a"], sigma["family_b"],
                                                            sigma["corr"], strict=True)}
    by_h: dict[int, list[tuple[str, float]]] = {}
    for h, f, m in zip(skill["horizon"], skill["family"], skill["mu"], strict=True):
        by_h.setdefault(int(h), []).append((str(f), float(m)))
    alpha_cols, nfam_cols, weight_rows = [], [], []
    for h in sorted(by_h):
        fams = [f for f, _ in sorted(by_h[h])]
        mu = np.array([m for _, m in sorted(by_h[h])], dtype=float)
        sg = np.array([[corr.get((h, a, b), np.nan) for b in fams] for a in fams], dtype=float).reshape(
            len(fams), len(fams))
        w, reason = horizon_weights(mu, sg, h, params)
        col = np.array([fams.index(f) if f in fams else -1 for f in fam_names], dtype=np.int64)  # family → column
        sel = (hz == h) & (col[fam_code] >= 0)
        z = np.full((len(symbols), len(fams)), np.nan)
        z[sym_code[sel], col[fam_code[sel]]] = std[sel]
        std_scale = np.array([_first_finite(std_scale_all[sel & (col[fam_code] == i)]) for i in range(len(fams))])
        slope = np.array([meta_number(models.get(return_target(h), f).meta, "calibration_slope")
                          for f in fams])  # null (not measured) → NaN: that family's z maps to no return
        scale = slope * std_scale
        alpha_cols.append(blend(z[:, None, :], w[None, :], scale[None, :])[:, 0])
        nfam_cols.append(np.isfinite(z).sum(axis=1))
        t = temperature_for(h, params)
        weight_rows += [{"horizon": h, "family": f, "weight": float(w[i]), "mu": float(mu[i]), "reason": reason,
                         "temperature": t, "calibration_slope": float(slope[i]), "std_scale": float(std_scale[i]),
                         "scale": float(scale[i])} for i, f in enumerate(fams)]
    if alpha_cols:
        horizons = np.array(sorted(by_h), dtype=np.int64)
        a = np.column_stack(alpha_cols).ravel()  # (symbol, horizon) order: symbols sorted, horizons ascending
        alpha = pd.DataFrame({"symbol": np.repeat(symbols, len(horizons)),
                              "horizon": np.tile(horizons, len(symbols)), "alpha": a, "alpha_bps": a * 1e4,
                              "n_families": np.column_stack(nfam_cols).ravel().astype(np.int64)})
    else:
        alpha = pd.DataFrame(columns=["symbol", "horizon", "alpha", "alpha_bps", "n_families"])
    weights = pd.DataFrame(weight_rows, columns=WEIGHT_COLUMNS)
    return {"blended_alpha": alpha, "blended_alpha_weights": weights}


def compute_predictions(models: ModelSet, history: ChainHistory, bar: str, prepared: PreparedBar) -> dict:
    """The per-bar predictions stage as it was, on a bar's prepared inputs and model outputs."""
    inp, outputs = prepared.inputs, prepared.outputs
    return {"predictions": predict_returns(models, inp, std_history(history, bar), outputs=outputs),
            "predictions_barrier": predict_barrier(models, inp, outputs=outputs),
            "predictions_models": models.status.copy()}

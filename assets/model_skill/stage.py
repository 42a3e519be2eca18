"""The ``model_skill`` stage for one bar, pure: point-in-time rolling IC (μ input) and Σ per horizon.

Only predictions whose horizon has fully elapsed at this bar count: a prediction made at bar s for h bars
is scored once bar s+h has closed, against log(close[s+h]/close[s]), and only when s+h lies in s's session
(SPEC §4.2: a prediction whose horizon would cross the close is never scored, as the training labels never
cross the overnight gap). The IC's window at horizon h is the last ``blending.ic_window_bars`` such scoreable
past bars; Σ is computed over exactly those bars. While live history is short the IC is shrunk toward the
family's validation IC from the registry (``blending.ic_prior_bars``).
cost_share (the spec leaves it open), in IC units so that μ = max(IC − cost_penalty·cost_share, μ_floor)
stays comparable across families: |IC_f| × the share of valid symbols whose predicted move |raw·1e4| does not
cover the quoted spread at this bar — the part of the family's skill that costs eat.

Vectorised over past bars and symbols (the history is laid out once as bars × symbols arrays); every number
is bit-identical to scoring each past bar with ``spearman_ic`` and pivoting for Σ, as the stage first did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.history import ChainHistory, PredictionGrid
from assets.model_skill.logic import MIN_IC_PAIRS, Params, family_correlation, family_mu
from assets.predictions.models import RETURN_FAMILIES, ModelSet
from assets.predictions.stage import previous_bar_keys
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys, get_calendar
from TRAINING.registry import meta_number, return_target

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
                        history: ChainHistory, params: Params | None = None) -> dict[str, pd.DataFrame]:
    params = params or Params.from_cfg()
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

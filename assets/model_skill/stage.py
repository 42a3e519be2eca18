"""The ``model_skill`` stage, pure: point-in-time rolling IC (μ input) and Σ per horizon, for one bar (the asset)
or a batch of consecutive bars (replay) through the same function.

Only predictions whose horizon has fully elapsed at this bar count: a prediction made at bar s for h bars
is scored once bar s+h has closed, against log(close[s+h]/close[s]), and only when s+h lies in s's session
(SPEC §4.2: a prediction whose horizon would cross the close is never scored, as the training labels never
cross the overnight gap). The IC's window at horizon h is the last ``blending.ic_window_bars`` such scoreable
past bars; Σ is computed over exactly those bars. While live history is short the IC is shrunk toward the
family's validation IC from the registry (``blending.ic_prior_bars``).
cost_share (the spec leaves it open), in IC units so that μ = max(IC − cost_penalty·cost_share, μ_floor)
stays comparable across families: |IC_f| × the share of valid symbols whose predicted move |raw·1e4| does not
cover the quoted spread at this bar — the part of the family's skill that costs eat.

Vectorised over bars, past bars and symbols (the history and the batch laid out once as bars × symbols arrays
on a :class:`~assets.history.Timeline`); every number is bit-identical to scoring each past bar with
``spearman_ic`` and pivoting for Σ bar by bar, as the stage first did (``tests/chain/test_signal_batches.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.history import PRED_HISTORY_COLUMNS, ChainHistory, PredictionGrid, Timeline, stack_frames
from assets.model_skill.logic import (
    MIN_IC_PAIRS,
    Params,
    family_correlation,
    mu,
    rolling_ic_rows,
    shrunk_ic_rows,
)
from assets.predictions.models import RETURN_FAMILIES, ModelSet
from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys, get_calendar
from TRAINING.registry import meta_number, return_target

SKILL_COLUMNS = ["horizon", "family", "ic_live", "n_live", "ic_prior", "ic_shrunk", "cost_share", "mu"]
SIGMA_COLUMNS = ["horizon", "family_a", "family_b", "corr"]


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


def _close_on(panel, symbols: np.ndarray) -> np.ndarray:
    """(T, S) the panel's closes for ``symbols`` (NaN for a symbol outside its universe)."""
    pos = pd.Index(panel.symbols).get_indexer(symbols)
    close = np.concatenate([panel["close"], np.full((len(panel.times), 1), np.nan)], axis=1)
    return close[:, pos]  # -1 picks the appended NaN column


class Realised:
    """The realised returns of one period's closes on a timeline (:class:`~assets.history.Timeline`).

    Bars whose windows are views of one period's panel (``MarketDataResource.windows``: same closes, same
    corporate actions) share it; any other window is its own period. Bar t's window is the panel's rows
    [lo, r] (r its own bar): a past bar s is scoreable at horizon h when s is in the window, s + h ≤ r and
    s + h lies in s's session; its return is log(close[s+h]/close[s]) (the same operations whatever the bar
    that reads it, so every bar that scores s sees the same bits)."""

    def __init__(self, panel, keys: list[str], symbols: np.ndarray):
        self.pos = pd.Index(bar_keys(panel.times)).get_indexer(keys)  # (L,) row of each timeline key; -1 absent
        self.n_rows = len(panel.times)
        self.close = _close_on(panel, symbols)
        self.day = get_calendar().session_days(panel.times)

    def returns(self, hb: int) -> tuple[np.ndarray, np.ndarray]:
        """(L, S) returns of every timeline bar over ``hb`` bars within its session (NaN elsewhere), and
        (L,) the rows that have one (the end bar s + h is in the period and in s's session)."""
        ok = (self.pos >= 0) & (self.pos + hb < self.n_rows)
        ok[ok] = self.day[self.pos[ok]] == self.day[self.pos[ok] + hb]
        out = np.full((len(self.pos), self.close.shape[1]), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[ok] = np.log(self.close[self.pos[ok] + hb] / self.close[self.pos[ok]])
        return out, ok

    def scoreable(self, window: np.ndarray, lo: np.ndarray, last: np.ndarray, hb: int,
                  session_ok: np.ndarray) -> np.ndarray:
        """(b, K) per bar its past bars (timeline positions ``window``, L = padding) that can be scored at
        this horizon: in its window (rows ``lo`` … ``last``), s + h ≤ its own row, within s's session."""
        pos = np.append(self.pos, -1)[window]
        ok = np.append(session_ok, False)[window]
        return ok & (pos >= lo[:, None]) & (pos + hb <= last[:, None])


def periods_of(windows: list[BarWindow]) -> list[tuple[object, np.ndarray, np.ndarray, np.ndarray]]:
    """The windows grouped by the period panel they are views of: (panel, bar indices, first row, own row)."""
    groups: dict[int, tuple[object, list[int], list[int], list[int]]] = {}
    for b, w in enumerate(windows):  # a loop over bars: which panel each window is a view of
        panel, row = w.__dict__.get("_period") or (w.panel(), len(w.times) - 1)
        entry = groups.setdefault(id(panel), (panel, [], [], []))
        entry[1].append(b)
        entry[2].append(row - len(w.times) + 1)
        entry[3].append(row)
    return [(p, np.array(b), np.array(lo), np.array(r)) for p, b, lo, r in groups.values()]


def uncovered_share(raw: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Per row of ``raw`` (k, S): share of valid symbols whose predicted move |raw| does not cover their
    quoted spread ``sp`` (k, S) (bps); NaN for a row with none valid."""
    ok = np.isfinite(raw) & np.isfinite(sp)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore"):
        under = (ok & (np.abs(np.where(ok, raw, 0.0)) * 1e4 < np.where(ok, sp, 0.0))).sum(axis=1)
        return np.where(n > 0, under / np.maximum(n, 1), np.nan)


def compute_model_skill_batch(windows: list[BarWindow], features: list[pd.DataFrame],
                              predictions: list[pd.DataFrame], models: ModelSet, history: ChainHistory,
                              params: Params | None = None) -> list[dict[str, pd.DataFrame]]:
    """``model_skill`` and ``model_skill_sigma`` of B bars in time order (issue 12: one code path for one
    bar and a batch). Bar t reads the predictions of the bars before it — earlier bars of the batch
    (``predictions``), else ``history`` — and its own window's closes; never a later bar.

    Vectorised over bars, past bars and symbols: each past bar's IC at each horizon is computed once per
    period panel (it depends only on that bar's predictions and closes), and each bar picks its window's
    ICs. Σ runs per bar and horizon on exactly the observations the per-bar function used (its mean and
    BLAS dot sums depend on the observations' count and order, so they are not pooled across bars)."""
    params = params or Params.from_cfg()
    bar_minutes = get_cfg("market.bar_minutes")
    horizons = sorted(get_cfg("horizons.minutes"))
    bars = [w.bar for w in windows]
    b_n = len(bars)
    timeline = Timeline.of(bars, params.ic_window_bars + max(horizons) // bar_minutes)
    groups = [(h, f) for h in horizons for f in RETURN_FAMILIES if models.get(return_target(h), f) is not None]
    past = history.prediction_grid(timeline.past)
    if not b_n:
        return []
    # the batch's own predictions (a bar's ``std`` is read only by the later bars of its batch)
    now = PredictionGrid.from_frame(stack_frames(predictions, bars, PRED_HISTORY_COLUMNS[1:]), bars)
    symbols = np.union1d(np.asarray(past.symbols, dtype=object), now.symbols) if len(past.symbols) \
        else now.symbols
    raw = timeline.rows(past, now.select_groups(groups, "raw")[0], "raw", groups, symbols, now.symbols)
    std = timeline.rows(past, now.select_groups(groups, "std")[0], "std", groups, symbols, now.symbols)
    spread = _spread(features, symbols)
    g_of = {g: i for i, g in enumerate(groups)}
    cols = {k: np.full((len(groups), b_n), np.nan) for k in ("ic_live", "n_live", "ic_shrunk", "cost_share", "mu")}
    sigma = [[] for _ in range(b_n)]
    for panel, idx, lo, last in periods_of(windows):  # usually one: the batch's period
        realised = Realised(panel, timeline.keys, symbols)
        for h in horizons:
            hb = h // bar_minutes
            fams = [f for f in RETURN_FAMILIES if (h, f) in g_of]
            if not fams:
                continue
            real, session_ok = realised.returns(hb)
            closed = realised.scoreable(timeline.window[idx], lo, last, hb, session_ok)
            from_end = np.cumsum(closed[:, ::-1], axis=1)[:, ::-1]
            in_window = closed & (from_end <= params.ic_window_bars)  # the IC's window (Σ uses the same bars)
            for f in fams:
                g = g_of[(h, f)]
                ic = np.full(len(timeline.keys) + 1, np.nan)
                ic[np.flatnonzero(session_ok)] = spearman_rows(raw[g][:-1][session_ok], real[session_ok])
                ics = np.where(in_window, ic[timeline.window[idx]], np.nan)
                live, n = rolling_ic_rows(ics, params.ic_window_bars)
                prior = meta_number(models.get(return_target(h), f).meta, "validation_ic")  # null → NaN
                shrunk = shrunk_ic_rows(live, n, prior, params.ic_prior_bars)  # the IC before costs
                unc = uncovered_share(raw[g][timeline.at[idx]], spread[idx])
                with np.errstate(invalid="ignore"):
                    share = np.where(np.isfinite(unc * shrunk), np.abs(shrunk) * unc, 0.0)
                for k, v in (("ic_live", live), ("n_live", n.astype(float)), ("ic_shrunk", shrunk),
                             ("cost_share", share), ("mu", mu(shrunk, share, params.cost_penalty, params.mu_floor))):
                    cols[k][g, idx] = v
            std_h = std[[g_of[(h, f)] for f in fams]]
            for j, b in enumerate(idx.tolist()):  # Σ bar by bar (see the docstring)
                sigma[b] += _sigma_rows(std_h[:, timeline.window[b][in_window[j]]], h, fams)
    return _skill_frames_batch(groups, models, cols, sigma)


def _spread(features: list[pd.DataFrame], symbols: np.ndarray) -> np.ndarray:
    """(B, S) each bar's quoted spread (bps) per symbol of the axis (NaN where the bar has no feature row);
    one scatter for the batch. Errors: a bar whose features hold a symbol twice."""
    rows = stack_frames(features, list(range(len(features))), ["symbol", "spread_bps"])
    bar = rows["bar"].to_numpy(dtype=np.int64)
    pos = pd.Index(symbols).get_indexer(rows["symbol"].to_numpy(dtype=object))
    keep = pos >= 0
    key = bar[keep] * max(len(symbols), 1) + pos[keep]
    if len(np.unique(key)) != len(key):
        raise ValueError("cannot reindex on an axis with duplicate labels: a symbol twice in a bar's features")
    out = np.full((len(features), len(symbols)), np.nan)
    out[bar[keep], pos[keep]] = rows["spread_bps"].to_numpy(dtype=float)[keep]
    return out


def _skill_frames_batch(groups: list[tuple[int, str]], models: ModelSet, cols: dict[str, np.ndarray],
                        sigma_rows: list[list[tuple[int, str, str, float]]]) -> list[dict[str, pd.DataFrame]]:
    """Per bar its ``model_skill`` (a row per loaded horizon × family; ``cols``: name → (G, B)) and
    ``model_skill_sigma`` (``sigma_rows[b]``) frames: each table built once for the batch and split per bar
    by slicing (issue 12), every frame what the bar's own construction gives."""
    b_n, g_n = len(sigma_rows), len(groups)
    if groups:
        prior = np.array([meta_number(models.get(return_target(h), f).meta, "validation_ic") for h, f in groups],
                         dtype=float)
        whole = pd.DataFrame({
            "horizon": np.tile(np.array([h for h, _ in groups], dtype=np.int64), b_n),
            "family": np.tile(np.array([f for _, f in groups], dtype=object), b_n),
            "ic_live": cols["ic_live"].T.ravel(), "n_live": cols["n_live"].T.ravel(), "ic_prior": np.tile(prior, b_n),
            "ic_shrunk": cols["ic_shrunk"].T.ravel(), "cost_share": cols["cost_share"].T.ravel(),
            "mu": cols["mu"].T.ravel()})
        skills = [whole.iloc[b * g_n:(b + 1) * g_n].reset_index(drop=True) for b in range(b_n)]
    else:
        skills = [pd.DataFrame([], columns=SKILL_COLUMNS).astype({"horizon": np.int64}) for _ in range(b_n)]
    flat = [r for rows in sigma_rows for r in rows]
    ends = np.cumsum([len(rows) for rows in sigma_rows])
    all_sigma = pd.DataFrame({"horizon": np.array([r[0] for r in flat], dtype=np.int64),
                              "family_a": np.array([r[1] for r in flat], dtype=object),
                              "family_b": np.array([r[2] for r in flat], dtype=object),
                              "corr": np.array([r[3] for r in flat], dtype=float)}) if flat else None
    out = []
    for b in range(b_n):  # a bar without Σ rows gets the empty frame (an empty column infers no string dtype)
        lo, hi = (ends[b - 1] if b else 0), ends[b]
        sigma = all_sigma.iloc[lo:hi].reset_index(drop=True) if hi > lo else \
            pd.DataFrame([], columns=SIGMA_COLUMNS).astype({"horizon": np.int64})
        out.append({"model_skill": skills[b], "model_skill_sigma": sigma})
    return out


def compute_model_skill(window: BarWindow, features: pd.DataFrame, predictions: pd.DataFrame, models: ModelSet,
                        history: ChainHistory, params: Params | None = None) -> dict[str, pd.DataFrame]:
    """The skill of one bar: :func:`compute_model_skill_batch` of one."""
    return compute_model_skill_batch([window], [features], [predictions], models, history, params)[0]


def _sigma_rows(std: np.ndarray, h: int, fams: list[str]) -> list[tuple[int, str, str, float]]:
    """Σ: correlation of the families' standardized predictions ``std`` (F, K', S) over the IC's window (the
    same past bars the IC scores).

    Every (bar, symbol) of the window is one observation, pairwise complete. The grid lays them out in
    (bar, symbol name) order whatever order the rows came in, so the sums need no sort to be reproducible
    (symbols with no row are NaN and drop out, so a wider symbol axis gives the same observations).
    """
    obs = std.reshape(len(fams), -1).T
    corr = family_correlation(obs, canonical=False) if len(obs) else np.eye(len(fams))
    return [(h, a, b, float(corr[i, j])) for i, a in enumerate(fams) for j, b in enumerate(fams)]

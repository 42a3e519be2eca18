"""SPEC §4.2 inputs: each family's skill (μ) and the families' co-movement (Σ) at one horizon.

The caller passes only predictions whose horizon has fully elapsed (point in time); these functions
never look at the clock. Decisions where the spec is silent:
- a family with no usable skill estimate (no live IC and no registry prior) gets μ = μ_floor: unknown
  skill is weighted as the least skill, never as an invented number;
- a non-finite cost share counts as no skill information too (μ_floor), not as zero cost;
- Σ uses pairwise-complete observations, so a family missing for some symbols still correlates on
  the rest; fewer than 2 pairs or a zero variance leaves that entry NaN → 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from CONFIG.config_loader import get_cfg

MIN_IC_PAIRS = 3  # a rank correlation of 2 points is always ±1: not a measurement (definition)


@dataclass(frozen=True)
class Params:
    """Skill settings (``blending.*``)."""

    ic_window_bars: int
    ic_prior_bars: int
    cost_penalty: float
    mu_floor: float

    @classmethod
    def from_cfg(cls) -> Params:
        return cls(
            ic_window_bars=int(get_cfg("blending.ic_window_bars")),
            ic_prior_bars=int(get_cfg("blending.ic_prior_bars")),
            cost_penalty=float(get_cfg("blending.cost_penalty")),
            mu_floor=float(get_cfg("blending.mu_floor")),
        )


def average_rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (as Spearman requires)."""
    x = np.asarray(x, dtype=float)
    uniq, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts  # 0-based first position of each distinct value
    return (start + (counts + 1) / 2.0)[inverse]


def spearman_ic(pred: np.ndarray, realised: np.ndarray) -> float:
    """Cross-sectional Spearman rank correlation over pairs where both are finite; NaN if undefined."""
    p = np.asarray(pred, dtype=float).ravel()
    r = np.asarray(realised, dtype=float).ravel()
    ok = np.isfinite(p) & np.isfinite(r)
    if int(ok.sum()) < MIN_IC_PAIRS:
        return float("nan")
    p, r = _canonical(p[ok], r[ok])
    rp = average_rank(p)
    rr = average_rank(r)
    rp = rp - rp.mean()
    rr = rr - rr.mean()
    denom = math.sqrt(float(np.dot(rp, rp)) * float(np.dot(rr, rr)))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(rp, rr) / denom, -1.0, 1.0))


def rolling_ic_rows(ic: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``ic`` (k, K) (oldest first): (mean, n) over its last ``window`` finite values; (NaN, 0)
    for a row with none. Rows with the same n are averaged together (``np.mean`` along the row: the same
    pairwise sum, so the same bits, as for the row alone); a loop over distinct n only."""
    v = np.asarray(ic, dtype=float)
    ok = np.isfinite(v)
    keep = ok & (np.cumsum(ok[:, ::-1], axis=1)[:, ::-1] <= window)  # the last ``window`` finite values
    n = keep.sum(axis=1)
    packed = np.take_along_axis(v, np.argsort(~keep, axis=1, kind="stable"), axis=1)  # kept first, in order
    mean = np.full(len(v), np.nan)
    for count in np.unique(n[n > 0]).tolist():
        rows = np.flatnonzero(n == count)
        mean[rows] = np.mean(np.ascontiguousarray(packed[rows, :count]), axis=1)
    return mean, n


def rolling_ic(ic_by_bar: np.ndarray, params: Params | None = None) -> tuple[float, int]:
    """(mean, n) over the last ``ic_window_bars`` finite per-bar ICs (oldest first); (NaN, 0) if none."""
    params = params or Params.from_cfg()
    mean, n = rolling_ic_rows(np.asarray(ic_by_bar, dtype=float).reshape(1, -1), params.ic_window_bars)
    return float(mean[0]), int(n[0])


def shrunk_ic_rows(live_mean: np.ndarray, n_live: np.ndarray, prior_ic: float | np.ndarray,
                   prior_bars: int) -> np.ndarray:
    """Live IC shrunk toward the registry's validation IC: (n·live + prior_bars·prior)/(n + prior_bars),
    elementwise. With no live bars the prior alone; with no finite prior the live mean alone; neither → NaN."""
    live = np.asarray(live_mean, dtype=float)
    n = np.where(np.isfinite(live), np.asarray(n_live, dtype=np.int64), 0)
    prior = np.broadcast_to(np.asarray(prior_ic, dtype=float), live.shape)
    has_prior = np.isfinite(prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        both = (n * live + prior_bars * prior) / (n + prior_bars)
    out = np.where(~has_prior | (prior_bars <= 0), live, both)
    return np.where(n == 0, np.where(has_prior, prior, np.nan), out)


def shrunk_ic(live_mean: float, n_live: int, prior_ic: float, prior_bars: int) -> float:
    """:func:`shrunk_ic_rows` of one family."""
    return float(shrunk_ic_rows(np.array([live_mean], dtype=float), np.array([n_live]), prior_ic, prior_bars)[0])


def mu(ic: float | np.ndarray, cost_share: float | np.ndarray, cost_penalty: float,
       mu_floor: float) -> float | np.ndarray:
    """μ = max(IC − cost_penalty·cost_share, μ_floor); a non-finite input gives μ_floor."""
    ic_a = np.asarray(ic, dtype=float)
    cs = np.asarray(cost_share, dtype=float)
    with np.errstate(invalid="ignore"):
        val = ic_a - cost_penalty * cs
    out = np.where(np.isfinite(val), np.maximum(val, mu_floor), mu_floor)
    return float(out) if out.ndim == 0 else out


def family_mu(ic_by_bar: np.ndarray, prior_ic: float, cost_share: float,
              params: Params | None = None) -> dict[str, float]:
    """One family's μ and the numbers behind it (recorded in lineage): live IC, n, shrunk IC, μ."""
    params = params or Params.from_cfg()
    live, n = rolling_ic(ic_by_bar, params)
    ic = shrunk_ic(live, n, prior_ic, params.ic_prior_bars)
    return {"ic_live": live, "n_live": float(n), "ic_shrunk": ic,
            "mu": float(mu(ic, cost_share, params.cost_penalty, params.mu_floor))}


def family_correlation(std_preds: np.ndarray, canonical: bool = True) -> np.ndarray:
    """(F, F) correlation of the columns of ``std_preds`` (K, F), pairwise complete; NaN → 0, diag 1.

    ``canonical``: sort each pair's observations first so the result ignores the row order; a caller
    whose rows are already in a canonical order (the stage's (bar, symbol) grid) skips the sort.
    """
    x = np.asarray(std_preds, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"std_preds must be 2-D (K, F), got shape {x.shape}")
    n_fam = x.shape[1]
    corr = np.eye(n_fam)
    finite = np.isfinite(x)
    for i in range(n_fam):  # loops over family pairs (a handful), never over symbols
        for j in range(i + 1, n_fam):
            ok = finite[:, i] & finite[:, j]
            corr[i, j] = corr[j, i] = _pearson(x[ok, i], x[ok, j], canonical)
    return corr


def _canonical(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs sorted by value, so sums (and so every bit of the result) ignore the symbols' order."""
    order = np.lexsort((b, a))
    return a[order], b[order]


def _pearson(a: np.ndarray, b: np.ndarray, canonical: bool = True) -> float:
    if a.size < 2:
        return 0.0
    if canonical:
        a, b = _canonical(a, b)
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if not (np.isfinite(denom) and denom > 0.0):
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))

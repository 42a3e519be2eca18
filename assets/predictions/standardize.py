"""SPEC §4.1: put each family's raw predictions on one robust z scale before blending.

Why robust: a single outlier prediction must not shrink every other symbol's score, so the centre is the
median and the scale the MAD (× 1.4826, the normal-consistency factor) of the family's own recent
predictions at this horizon, then the score is clipped to ±clip.

Fallbacks (the spec is silent; chosen so that a bad input never becomes a confident number):
- non-finite raw (NaN, ±inf) → NaN: a missing prediction stays missing, it is not invented as 0;
- non-finite history values are ignored;
- fewer than ``min_history`` finite history values → the current cross-section (finite raws) is the
  reference instead (a cold start still ranks symbols against each other);
- MAD == 0 (e.g. a discrete model) → the standard deviation of the reference;
- standard deviation == 0 too (a constant reference) → every finite raw scores 0 (no information).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from CONFIG.config_loader import get_cfg

MAD_TO_SIGMA = 1.4826  # normal consistency constant of the MAD (a definition, not a tunable)


@dataclass(frozen=True)
class Params:
    """Standardization settings (``standardization.*``)."""

    clip: float
    min_history: int
    window_bars: int

    @classmethod
    def from_cfg(cls) -> Params:
        return cls(
            clip=float(get_cfg("standardization.clip")),
            min_history=int(get_cfg("standardization.min_history")),
            window_bars=int(get_cfg("standardization.window_bars")),
        )


def center_scale_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``values`` (k, M): (median, 1.4826·MAD) of its finite values, the std when the MAD is 0,
    scale 0 when degenerate, (NaN, 0) for a row with no finite value. Non-finite entries are padding (a row's
    reference is the set of its finite values: order never matters).

    Vectorised over rows: rows holding the same number n of finite values share one ``np.partition`` at the
    middle positions (a loop over distinct n, usually one); the middle values and their mean are the same
    bits as ``np.median`` of the sorted finite values (its mean adds from +0.0), so a bar's centre and scale
    do not depend on how many bars are standardized together. The std fallback (MAD 0: a discrete model)
    is rare and runs ``np.std`` row by row on the sorted finite values, as the per-bar function did."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-D (rows, values), got shape {v.shape}")
    ok = np.isfinite(v)
    v = np.where(ok, v, np.nan)  # NaN sorts after every finite value (±inf included)
    n = ok.sum(axis=1)
    center, mad = np.full(len(v), np.nan), np.full(len(v), np.nan)
    for count in np.unique(n[n > 0]).tolist():  # a loop over distinct counts, each vectorised over its rows
        rows = np.flatnonzero(n == count)
        center[rows] = _middle(v[rows], count)
        dev = np.abs(v[rows] - center[rows, None])
        mad[rows] = _middle(dev, count)
    with np.errstate(invalid="ignore"):
        scale = MAD_TO_SIGMA * mad
        bad = (n > 0) & ~(np.isfinite(scale) & (scale > 0.0))
    for r in np.flatnonzero(bad).tolist():  # MAD 0: the std of the sorted finite values
        scale[r] = float(np.std(np.sort(v[r][ok[r]])))
    with np.errstate(invalid="ignore"):
        scale = np.where(np.isfinite(scale) & (scale > 0.0), scale, 0.0)
    return center, scale


def _middle(v: np.ndarray, count: int) -> np.ndarray:
    """Per row the median of its ``count`` smallest values (the finite ones: NaN sorts last), as ``np.median``
    computes it: the middle value, or the mean of the two middle ones summed from +0.0 (bit for bit)."""
    m = count // 2
    if count % 2:
        return 0.0 + np.partition(v, m, axis=1)[:, m]
    part = np.partition(v, [m - 1, m], axis=1)
    return ((0.0 + part[:, m - 1]) + part[:, m]) / 2.0


def robust_center_scale(reference: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826·MAD) of the finite values, std when the MAD is 0; scale 0 when degenerate
    (:func:`center_scale_rows` of one row)."""
    center, scale = center_scale_rows(np.asarray(reference, dtype=float).reshape(1, -1))
    return float(center[0]), float(scale[0])


def reference_rows(raw: np.ndarray, history: np.ndarray, min_history: int) -> np.ndarray:
    """(k, ·) the reference each row standardizes against: its ``history`` row (k, M) when that holds
    ``min_history`` finite values, else its own cross-section ``raw`` row (k, N); NaN-padded."""
    x = np.asarray(raw, dtype=float)
    hist = np.asarray(history, dtype=float)
    use_hist = np.isfinite(hist).sum(axis=1) >= min_history
    width = max(x.shape[1], hist.shape[1])
    out = np.full((len(x), width), np.nan)
    out[use_hist, :hist.shape[1]] = hist[use_hist]
    out[~use_hist, :x.shape[1]] = x[~use_hist]
    return out


def standardize_rows(raw: np.ndarray, history: np.ndarray, clip: float,
                     min_history: int) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-scores of ``raw`` (k, N) row by row against ``history`` (k, M) (NaN-padded), clipped to
    ±``clip``, and each row's scale (k,); NaN stays NaN; a zero scale scores every finite raw 0."""
    x = np.asarray(raw, dtype=float)
    center, scale = center_scale_rows(reference_rows(x, history, min_history))
    finite = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.clip((x - center[:, None]) / scale[:, None], -clip, clip)
    out = np.where(scale[:, None] > 0.0, z, 0.0)
    return np.where(finite, out, np.nan), scale


def reference_center_scale(raw: np.ndarray, history: np.ndarray,
                           min_history: int | None = None) -> tuple[float, float]:
    """(centre, scale) a standardization uses: the history's when it holds ``min_history`` finite values,
    else the current cross-section's. Blending reuses the scale to map z back to a return."""
    if min_history is None:
        min_history = int(get_cfg("standardization.min_history"))
    ref = reference_rows(np.asarray(raw, dtype=float).reshape(1, -1),
                         np.asarray(history, dtype=float).reshape(1, -1), min_history)
    center, scale = center_scale_rows(ref)
    return float(center[0]), float(scale[0])


def standardize(raw: np.ndarray, history: np.ndarray, clip: float, min_history: int | None = None) -> np.ndarray:
    """Robust z-score of ``raw`` (N,) against ``history`` (K,), clipped to ±``clip``; NaN stays NaN
    (:func:`standardize_rows` of one row).

    ``min_history`` defaults to ``standardization.min_history``.
    """
    if min_history is None:
        min_history = int(get_cfg("standardization.min_history"))
    x = np.asarray(raw, dtype=float)
    z, _ = standardize_rows(x.reshape(1, -1), np.asarray(history, dtype=float).reshape(1, -1), clip, min_history)
    return z.reshape(x.shape)

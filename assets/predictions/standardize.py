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

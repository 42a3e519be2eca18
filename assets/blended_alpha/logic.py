"""SPEC §4.2: per horizon, weight the model families (ridge risk parity + temperature) and blend.

Decisions where the spec is silent:
- non-finite μ or Σ → equal weights with reason ``equal:nonfinite`` (never a weight from garbage);
- a numerically singular Σ + λI (condition number beyond 1/machine-eps) counts as singular;
- ``blend``: a family whose standardized score (or scale) is missing for a symbol is left out and the
  weights of the families present are renormalised; if no family with positive weight is present the
  symbol's alpha is NaN (recorded as missing, not 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from CONFIG.config_loader import get_cfg
from TRAINING.common.utils.determinism_ordering import sorted_items

REASON_RIDGE = "ridge"
REASON_SINGLE = "single"
REASON_EMPTY = "empty"
REASON_SINGULAR = "equal:singular"
REASON_ALL_ZERO = "equal:all_zero"
REASON_NONFINITE = "equal:nonfinite"


@dataclass(frozen=True)
class Params:
    """Blending settings (``blending.*``); ``temperature`` is ((horizon minutes, T), ...) sorted."""

    ridge_lambda: float
    temperature: tuple[tuple[int, float], ...]

    @classmethod
    def from_cfg(cls) -> Params:
        temps = get_cfg("blending.temperature") or {}
        return cls(
            ridge_lambda=float(get_cfg("blending.ridge_lambda")),
            temperature=tuple((int(h), float(t)) for h, t in sorted_items({int(k): v for k, v in temps.items()})),
        )


def _equal(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def ridge_weights_rows(mu: np.ndarray, sigma: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row (k bars): w ∝ (Σ + λI)^{-1} μ, negatives clipped to 0, sum 1; equal weights when that is
    undefined (non-finite input, a singular Σ + λI, no positive weight), with the reason per row.

    ``mu`` (k, F), ``sigma`` (k, F, F). The F × F systems are solved as one stack (LAPACK per matrix, the
    same routine as one at a time) and the row sums run left to right as ``np.sum`` does for a few
    families, so each row's weights are the same bits whatever the stack."""
    m = np.asarray(mu, dtype=float)
    k, n = m.shape
    if n == 0:
        return np.zeros((k, 0)), np.full(k, REASON_EMPTY, dtype=object)
    if n == 1:
        return np.ones((k, 1)), np.full(k, REASON_SINGLE, dtype=object)
    s = np.asarray(sigma, dtype=float)
    if s.shape != (k, n, n):
        raise ValueError(f"sigma must be ({k}, {n}, {n}), got {s.shape}")
    w = np.tile(_equal(n), (k, 1))
    reason = np.full(k, REASON_RIDGE, dtype=object)
    finite = np.isfinite(m).all(axis=1) & np.isfinite(s).all(axis=(1, 2)) & bool(np.isfinite(lam))
    reason[~finite] = REASON_NONFINITE
    rows = np.flatnonzero(finite)
    if not len(rows):
        return w, reason
    a = s[rows] + lam * np.eye(n)
    cond = np.linalg.cond(a)
    singular = ~np.isfinite(cond) | (cond > 1.0 / np.finfo(float).eps)
    reason[rows[singular]] = REASON_SINGULAR
    rows, a = rows[~singular], a[~singular]
    raw = np.full((len(rows), n), np.nan)
    try:
        raw[:] = np.linalg.solve(a, m[rows][:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # one exactly singular system in the stack: solve them one by one
        for j, r in enumerate(rows.tolist()):
            try:
                raw[j] = np.linalg.solve(a[j], m[r][:, None])[:, 0]
            except np.linalg.LinAlgError:
                pass  # stays NaN: singular
    bad = ~np.isfinite(raw).all(axis=1)
    reason[rows[bad]] = REASON_SINGULAR
    rows, raw = rows[~bad], raw[~bad]
    clipped = np.clip(raw, 0.0, None)
    total = clipped.sum(axis=1)
    zero = ~(np.isfinite(total) & (total > 0.0))
    reason[rows[zero]] = REASON_ALL_ZERO
    w[rows[~zero]] = clipped[~zero] / total[~zero, None]
    return w, reason


def ridge_weights(mu: np.ndarray, sigma: np.ndarray, lam: float) -> tuple[np.ndarray, str]:
    """w ∝ (Σ + λI)^{-1} μ, negatives clipped to 0, sum 1; equal weights when that is undefined
    (:func:`ridge_weights_rows` of one row)."""
    m = np.asarray(mu, dtype=float).ravel()
    n = m.size
    s = np.asarray(sigma, dtype=float)
    if n > 1 and s.shape != (n, n):
        raise ValueError(f"sigma must be ({n}, {n}), got {s.shape}")
    w, reason = ridge_weights_rows(m[None, :], s.reshape(1, n, n) if n > 1 else np.zeros((1, n, n)), lam)
    return w[0], str(reason[0])


def apply_temperature_rows(w: np.ndarray, t: float) -> np.ndarray:
    """Per row: w_f ← w_f^(1/T), renormalised (rows whose powers do not sum to a positive number unchanged)."""
    w = np.asarray(w, dtype=float)
    if not (np.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be > 0, got {t}")
    if t == 1.0 or w.shape[-1] == 0:
        return w.copy()
    p = np.power(np.clip(w, 0.0, None), 1.0 / t)
    total = p.sum(axis=-1)
    ok = np.isfinite(total) & (total > 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok[..., None], p / total[..., None], w)


def apply_temperature(w: np.ndarray, t: float) -> np.ndarray:
    """w_f ← w_f^(1/T), renormalised: T < 1 concentrates weight on the strongest family."""
    w = np.asarray(w, dtype=float)
    return apply_temperature_rows(w.reshape(1, -1), t).reshape(w.shape)


def temperature_for(h_minutes: int, params: Params | None = None) -> float:
    """T for a horizon from ``blending.temperature``; horizons not listed get 1.0 (no change)."""
    params = params or Params.from_cfg()
    return dict(params.temperature).get(int(h_minutes), 1.0)


def horizon_weights_rows(mu: np.ndarray, sigma: np.ndarray, h_minutes: int,
                         params: Params | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The family weights used at one horizon by each of k bars: ridge (or its fallback), then the temperature."""
    params = params or Params.from_cfg()
    w, reason = ridge_weights_rows(mu, sigma, params.ridge_lambda)
    return apply_temperature_rows(w, temperature_for(h_minutes, params)), reason


def horizon_weights(mu: np.ndarray, sigma: np.ndarray, h_minutes: int,
                    params: Params | None = None) -> tuple[np.ndarray, str]:
    """The family weights used at one horizon: ridge (or its fallback), then the temperature."""
    params = params or Params.from_cfg()
    w, reason = ridge_weights(mu, sigma, params.ridge_lambda)
    return apply_temperature(w, temperature_for(h_minutes, params)), reason


def blend(std_preds: np.ndarray, weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """α (N, H) = Σ_f w_f · z_f · scale_f over the families present for each symbol (renormalised)."""
    z = np.asarray(std_preds, dtype=float)
    w = np.asarray(weights, dtype=float)
    sc = np.asarray(scale, dtype=float)
    if z.ndim != 3 or w.shape != z.shape[1:] or sc.shape != z.shape[1:]:
        raise ValueError(f"shapes: std_preds {z.shape}, weights {w.shape}, scale {sc.shape}")
    w = np.where(np.isfinite(w) & (w > 0.0), w, 0.0)
    present = np.isfinite(z) & np.isfinite(sc)[None, :, :]
    w_eff = np.where(present, w[None, :, :], 0.0)
    contrib = np.where(present, z, 0.0) * np.where(np.isfinite(sc), sc, 0.0)[None, :, :]
    denom = w_eff.sum(axis=2)
    num = (w_eff * contrib).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = num / denom
    return np.where(denom > 0.0, alpha, np.nan)

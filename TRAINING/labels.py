"""Labels (pure, vectorised over bars and symbols): forward returns and triple-barrier peak/valley.

Inputs are (B, N) panels on the full bar grid of a window (bar t+h is row t+h) and a (B,) session id per
bar. A label at bar t reads prices of bars t+1…t+h only (plus the bar-t close and σ_t as the reference), so
changing anything after t+h changes no label at t; and it never crosses a session boundary: when t+h lies
in the next session (the overnight gap is not a 5-minute move) or a price in the window is missing, the label
is NaN — dropped for that horizon, never filled.

Barrier (``barrier.*``): half-width w_t = width_sigma · σ_t · √H in log-return units, σ_t the point-in-time
EWMA one-bar σ of the features (``sigma_bps`` / 1e4), H = horizon bars. Upper barrier log c_t + w_t, touched
when a bar's high reaches it; lower barrier log c_t − w_t, touched when a low reaches it. Lower touched first
→ peak = 1 (the price topped out at t); upper first → valley = 1; neither within H bars → both 0.
Same-bar touch of both (decision): the order inside a bar is unknown, so it is labelled as neither (0, 0)
rather than guessed; this errs toward lower P(peak)/P(valley), the side on which the gate does less.
"""

from __future__ import annotations

import numpy as np

from CONFIG.config_loader import get_cfg


def horizon_bars(minutes: int, bar_minutes: int | None = None) -> int:
    """Bars in a horizon; a horizon that is not a whole multiple of the bar interval is an error."""
    bar = int(bar_minutes if bar_minutes is not None else get_cfg("market.bar_minutes"))
    if minutes <= 0 or minutes % bar:
        raise ValueError(f"horizon {minutes}m is not a positive multiple of the bar interval {bar}m")
    return minutes // bar


def _same_session_ahead(session_id: np.ndarray, h: int) -> np.ndarray:
    """(B,) bool: bar t+h exists and belongs to the session of bar t."""
    sid = np.asarray(session_id)
    ok = np.zeros(len(sid), dtype=bool)
    if h < len(sid):
        ok[:-h] = sid[h:] == sid[:-h]
    return ok


def forward_returns(close: np.ndarray, session_id: np.ndarray, h: int) -> np.ndarray:
    """(B, N) log return from the close of t to the close of t+h bars; NaN across a session boundary."""
    if h < 1:
        raise ValueError(f"forward horizon must be at least one bar, got {h}")
    logc = np.log(np.asarray(close, dtype=float))
    out = np.full(logc.shape, np.nan)
    if h < len(logc):
        out[:-h] = logc[h:] - logc[:-h]
    out[~_same_session_ahead(session_id, h)] = np.nan
    return out


def forward_return_labels(close: np.ndarray, session_id: np.ndarray, horizons_minutes: list[int] | None = None,
                          bar_minutes: int | None = None) -> dict[int, np.ndarray]:
    """Forward log returns for every horizon (minutes → (B, N)), default ``horizons.minutes``."""
    horizons = horizons_minutes if horizons_minutes is not None else get_cfg("horizons.minutes")
    return {int(m): forward_returns(close, session_id, horizon_bars(m, bar_minutes)) for m in horizons}


def demean(y: np.ndarray) -> np.ndarray:
    """Cross-sectional demeaning per bar over the finite values (the idiosyncratic part of the return)."""
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    count = ok.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, y, 0.0).sum(axis=1, keepdims=True) / count
    return np.where(ok, y - mean, np.nan)


def barrier_labels(close: np.ndarray, high: np.ndarray, low: np.ndarray, sigma_bps: np.ndarray,
                   session_id: np.ndarray, h: int, width_sigma: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(peak, valley), each (B, N) in {0, 1} or NaN (window past the close, missing price or σ)."""
    if h < 1:
        raise ValueError(f"barrier horizon must be at least one bar, got {h}")
    k_sigma = float(width_sigma if width_sigma is not None else get_cfg("barrier.width_sigma"))
    logc, logh, logl = (np.log(np.asarray(a, dtype=float)) for a in (close, high, low))
    b = logc.shape[0]
    width = k_sigma * np.asarray(sigma_bps, dtype=float) / 1e4 * np.sqrt(h)
    upper, lower = logc + width, logc - width
    never = h + 1
    first_up = np.full(logc.shape, never)
    first_lo = np.full(logc.shape, never)
    known = np.isfinite(upper) & np.isfinite(lower) & _same_session_ahead(session_id, h)[:, None]
    for k in range(h, 0, -1):  # a loop over the horizon's bars; descending so the earliest touch wins
        hi_k = np.full(logc.shape, np.nan)
        lo_k = np.full(logc.shape, np.nan)
        if k < b:
            hi_k[:-k], lo_k[:-k] = logh[k:], logl[k:]
        known &= np.isfinite(hi_k) & np.isfinite(lo_k)
        with np.errstate(invalid="ignore"):
            first_up = np.where(hi_k >= upper, k, first_up)
            first_lo = np.where(lo_k <= lower, k, first_lo)
    peak = (first_lo < first_up).astype(float)
    valley = (first_up < first_lo).astype(float)
    peak[~known] = np.nan
    valley[~known] = np.nan
    return peak, valley

"""Share quantities at a fixed precision, the same function at the venue and in the engine's book.

Why: binary floats cannot hold 0.1 exactly, so with fractional shares ``0.1 + 0.2 − 0.3`` leaves
5.55e-17 shares and ten fills of 0.1 sum to 0.9999999999999999. A book that keeps such residue sends an
exit for 5.55e-17 shares or halts on a reconciliation "mismatch" of 1e-16. Every quantity that is summed
(positions at the venue, the engine's expected book, the P&L book) is therefore rounded to
``broker.qty_decimals`` decimals after each sum, with one function (numpy's round half to even), so both
sides round identically and compare equal.
"""

from __future__ import annotations

import numpy as np

from CONFIG.config_loader import get_cfg


def qty_decimals() -> int:
    return int(get_cfg("broker.qty_decimals"))


def round_qty(x: float | np.ndarray, decimals: int | None = None) -> float | np.ndarray:
    """``x`` rounded to ``decimals`` (default ``broker.qty_decimals``); −0.0 becomes 0.0. Arrays stay arrays."""
    d = qty_decimals() if decimals is None else decimals
    out = np.round(np.asarray(x, dtype=float), d) + 0.0
    return float(out) if out.ndim == 0 else out


def floor_qty(x: float, decimals: int) -> float:
    """The largest multiple of 10^-decimals not above ``x`` (a cap is never rounded up), forgiving a
    relative 1e-12 of float noise: 0.29 × 100 is 28.999999999999996 in binary and means 29."""
    scale = 10.0 ** decimals
    return float(np.floor(x * scale * (1 + 1e-12)) / scale)

"""Small vectorised helpers the pure stage modules share (reason codes, validity masks)."""

from __future__ import annotations

import numpy as np


def join_flags(n: int, flags: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Per row, the names of the flags set, joined by '|' in the order given ('' when none)."""
    out = np.full(n, "", dtype=object)
    for name, mask in flags:
        out = np.where(mask, np.where(out == "", name, out + "|" + name), out)
    return out.astype(str)


def positive(x: np.ndarray) -> np.ndarray:
    """Finite and strictly positive (a usable price, σ, ADV or spread)."""
    return np.isfinite(x) & (x > 0.0)

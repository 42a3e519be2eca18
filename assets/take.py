"""Columns of a small table taken onto another symbol order with one indexer, as ``reindex`` gives them.

Why: the stepping loop reindexed many columns of ≤ 100-row tables onto the same symbols bar after bar; each
``Series.reindex`` is a pandas round trip (index alignment, a new Series), so one ``Index.get_indexer`` per
source and a numpy take per column does the same for a fraction of the cost, with the same values and dtypes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def indexer(source: pd.Index, target: pd.Index | np.ndarray | list) -> np.ndarray:
    """Positions of ``target``'s labels in ``source`` (−1 where absent); ``source`` must be unique, as for
    ``reindex`` (else ``InvalidIndexError``)."""
    return source.get_indexer(target)


def taken(at: np.ndarray, values: np.ndarray, fill: float | bool | None = None) -> np.ndarray:
    """``values`` (one per row of the source) at ``at`` (:func:`indexer`): what ``Series.reindex`` gives (NaN
    where absent), or with ``fill`` what ``reindex(…).fillna(fill)`` gives (absent and NaN values both
    filled). Float values (returned as float64) and bool values with a bool ``fill`` only."""
    values = np.asarray(values)
    if fill is not None and values.dtype == bool:
        got = values[at] if len(values) else np.zeros(len(at), dtype=bool)
        return np.where(at >= 0, got, bool(fill))
    got = values[at].astype(float) if len(values) else np.full(len(at), np.nan)
    out = np.where(at >= 0, got, np.nan)
    return out if fill is None else np.where(np.isnan(out), float(fill), out)


def in_symbol_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame.sort_values("symbol", kind="mergesort")``, or ``frame`` itself when its string symbols are
    already in that order (a stable sort would move no row: the stages hand each other symbol-sorted tables)."""
    symbols = frame["symbol"]
    if pd.api.types.infer_dtype(symbols, skipna=False) in ("string", "empty") and symbols.is_monotonic_increasing:
        return frame   # checked in C: no Python loop over the symbols
    return frame.sort_values("symbol", kind="mergesort")


_STR = pd.Series(["x"]).dtype   # the type pandas gives text (what a new frame makes of Python strings)


def as_text(values: pd.Series) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """What a new frame makes of ``values.to_numpy()``, without the round trip through Python objects: a text
    column's own array when a frame would give its object values that type again (some text in it), else the
    numpy values (an empty or all-missing column: a frame keeps those ``object``)."""
    if values.dtype == _STR and len(values) and not values.isna().all():
        return values.array
    return values.to_numpy()


def as_text_at(values: pd.Series, at: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """What a new frame makes of ``values.to_numpy()[at]`` (``at`` a boolean mask or positions), by
    :func:`as_text`'s rule applied to the rows taken."""
    if values.dtype == _STR:
        got = values.array[at]
        if len(got) and not got.isna().all():
            return got
    return values.to_numpy()[at]


def one_row(row: dict) -> pd.DataFrame:
    """``pd.DataFrame([row])`` built column by column (the list-of-records path infers a 2-D object block
    first); the same frame when every value is a Python or numpy scalar of str, bool, int or float — else
    that path itself."""
    if all(type(v) in _SCALARS for v in row.values()):
        return pd.DataFrame({k: [v] for k, v in row.items()})
    return pd.DataFrame([row])


_SCALARS = frozenset({str, bool, int, float, np.float64, np.int64, np.bool_})

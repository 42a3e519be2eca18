"""Point-in-time history a bar's stages need: earlier bars' predictions and sizing raws.

Two providers with one interface, so the Dagster path and the replay loop feed the same pure functions the
same numbers: :class:`LineageHistory` reads what earlier runs recorded in DuckDB; :class:`MemoryHistory`
keeps what the replay loop produced (it also writes the same lineage tables). Only bars strictly before the
current one are ever returned.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from resources.lineage.store import LineageStore

PRED_HISTORY_COLUMNS = ["bar", "symbol", "horizon", "family", "raw", "std"]
SIZING_HISTORY_COLUMNS = ["bar", "symbol", "raw"]


class ChainHistory(Protocol):
    def predictions(self, bars: list[str]) -> pd.DataFrame:
        """Recorded predictions (``PRED_HISTORY_COLUMNS``) of the given earlier bars."""

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        """Recorded sizing raws (``SIZING_HISTORY_COLUMNS``) of the given earlier bars."""


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("bar", "symbol", "family") else float)
                         for c in columns})


class LineageHistory:
    """History from the lineage DuckDB file (recorded tables, never ``audit__`` ones)."""

    def __init__(self, store: LineageStore):
        self.store = store

    def _query(self, table: str, columns: list[str], bars: list[str], order: str) -> pd.DataFrame:
        if not bars or not self.store.path.exists():
            return _empty(columns)
        with self.store.connect(read_only=True) as con:
            if not self.store.has_table(con, table):
                return _empty(columns)
            frame = con.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE bar IN (SELECT unnest(?)) "
                                f"ORDER BY {order}", [bars]).df()
        return frame

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        return self._query("predictions", PRED_HISTORY_COLUMNS, bars, "bar, symbol, horizon, family")

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return self._query("sized_orders", SIZING_HISTORY_COLUMNS, bars, "bar, symbol")


class MemoryHistory:
    """History kept in memory by the replay loop (bounded to the bars it may still need)."""

    def __init__(self, keep_bars: int):
        self.keep = keep_bars
        self._pred: dict[str, pd.DataFrame] = {}
        self._size: dict[str, pd.DataFrame] = {}

    def add(self, bar: str, predictions: pd.DataFrame, sized: pd.DataFrame) -> None:
        """Keep one bar's rows, sorted as the lineage query returns them."""
        p = predictions.sort_values(["symbol", "horizon", "family"], kind="mergesort")
        s = sized.sort_values("symbol", kind="mergesort")
        self._pred[bar] = p[PRED_HISTORY_COLUMNS[1:]].assign(bar=bar)[PRED_HISTORY_COLUMNS].reset_index(drop=True)
        self._size[bar] = s[SIZING_HISTORY_COLUMNS[1:]].assign(bar=bar)[SIZING_HISTORY_COLUMNS].reset_index(drop=True)
        for store in (self._pred, self._size):
            for old in sorted(store)[:-self.keep]:
                del store[old]

    def _get(self, store: dict[str, pd.DataFrame], bars: list[str], columns: list[str]) -> pd.DataFrame:
        parts = [store[b] for b in sorted(bars) if b in store]
        if not parts:
            return _empty(columns)
        return pd.concat(parts, ignore_index=True)  # bars in key order, each already sorted

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        # Each bar's rows are stored in (symbol, horizon, family) order and bars are concatenated in key
        # order, so the result is already in LineageHistory's ORDER BY: no re-sort on every bar.
        return self._get(self._pred, bars, PRED_HISTORY_COLUMNS)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        return self._get(self._size, bars, SIZING_HISTORY_COLUMNS)

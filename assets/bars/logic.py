"""Pure logic of the ``bars`` stage: validate a point-in-time snapshot and pivot bars into a panel.

Why a panel: every later stage works on (time × symbol) arrays, so a bar is pivoted once, vectorised, and
no stage loops over symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PANEL_FIELDS = ("open", "high", "low", "close", "volume", "bid", "ask")


def validate_snapshot(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split bar rows into usable rows and recorded skips (symbol, ts, rule); never a silent fix.

    Duplicated (ts, symbol) rows or rows out of time order are an error: the source is broken and no
    ordering of them can be trusted.
    """
    if frame.duplicated(["ts", "symbol"]).any():
        dup = frame[frame.duplicated(["ts", "symbol"], keep=False)].iloc[0]
        raise ValueError(f"duplicated bar for {dup['symbol']} at {dup['ts']} (rule: one row per symbol and bar)")
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
    vol = frame["volume"].to_numpy(dtype=float)
    masks = {
        "high < low": (frame["high"] < frame["low"]).to_numpy(),
        "non-positive or missing price": ~(np.isfinite(prices) & (prices > 0)).all(axis=1),
        "NaN or negative volume": ~(np.isfinite(vol) & (vol >= 0)),
    }
    bad = np.zeros(len(frame), dtype=bool)
    rule = np.full(len(frame), "", dtype=object)
    for name, mask in masks.items():
        rule[mask & ~bad] = name
        bad |= mask
    skips = frame.loc[bad, ["ts", "symbol"]].assign(rule=rule[bad]).reset_index(drop=True)
    return frame[~bad].reset_index(drop=True), skips


@dataclass(frozen=True)
class Panel:
    """Bars as (T, N) arrays; NaN where a symbol has no bar (halted, missing, skipped)."""

    times: pd.DatetimeIndex
    symbols: np.ndarray
    fields: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def tail(self, n: int) -> Panel:
        return Panel(self.times[-n:], self.symbols, {k: v[-n:] for k, v in self.fields.items()})


def to_panel(frame: pd.DataFrame, times: pd.DatetimeIndex, symbols: np.ndarray) -> Panel:
    """Pivot long bars onto the given time grid and symbol order (sorted), vectorised."""
    t_idx = times.get_indexer(pd.DatetimeIndex(frame["ts"]))
    s_idx = np.searchsorted(symbols, frame["symbol"].to_numpy())
    s_idx = np.clip(s_idx, 0, len(symbols) - 1)
    ok = (t_idx >= 0) & (symbols[s_idx] == frame["symbol"].to_numpy())
    fields = {}
    for name in PANEL_FIELDS:
        arr = np.full((len(times), len(symbols)), np.nan)
        arr[t_idx[ok], s_idx[ok]] = frame[name].to_numpy(dtype=float)[ok]
        fields[name] = arr
    return Panel(times, np.asarray(symbols), fields)


@dataclass(frozen=True)
class BarWindow:
    """The ``bars`` asset of one bar: the snapshot of the whole universe and the history features need.

    ``snapshot`` has one row per universe symbol with ``status`` = ``ok``, ``missing`` (no bar: halted or
    absent) or ``skipped: <rule>`` (a bad row, see :func:`validate_snapshot`), prices NaN unless ``ok``.
    ``history`` holds the validated bar rows of the window (``times``), oldest first.
    """

    bar: str
    times: pd.DatetimeIndex
    snapshot: pd.DataFrame
    history: pd.DataFrame

    def panel(self) -> Panel:
        """The history as (T, N) arrays, pivoted once per window: features, predictions and skill all read
        it. The arrays are read-only so that no stage can change what another one sees."""
        cached = self.__dict__.get("_panel")
        if cached is None:
            cached = to_panel(self.history, self.times, self.snapshot["symbol"].to_numpy())
            for arr in cached.fields.values():
                arr.flags.writeable = False
            object.__setattr__(self, "_panel", cached)
        return cached


def build_window(bar: str, bar_ts: pd.Timestamp, times: pd.DatetimeIndex, raw: pd.DataFrame,
                 universe: np.ndarray, adv_shares: pd.Series) -> tuple[BarWindow, pd.DataFrame]:
    """Validate raw history rows and assemble the snapshot; returns the window and the skipped rows."""
    history, skips = validate_snapshot(raw)
    now = history[history["ts"] == bar_ts].set_index("symbol")
    snap = pd.DataFrame({"symbol": np.sort(np.asarray(universe, dtype=object))})
    snap = snap.join(now[list(PANEL_FIELDS)], on="symbol")
    status = np.where(snap["close"].notna(), "ok", "missing").astype(object)
    cur_skips = skips[skips["ts"] == bar_ts].set_index("symbol")["rule"]
    skipped = snap["symbol"].map(cur_skips)
    status = np.where(skipped.notna(), "skipped: " + skipped.fillna("").astype(str), status)
    snap.insert(1, "status", status)
    snap["adv_shares"] = snap["symbol"].map(adv_shares).astype(float)
    hist = history[history["symbol"].isin(snap["symbol"])].reset_index(drop=True)
    return BarWindow(bar, times, snap.reset_index(drop=True), hist), skips

"""The training panel: features of every bar of a window of sessions, computed by the live feature code.

Why the live functions: a model is only as good as the agreement between the features it was fitted on and
the ones it sees live, so every row here comes from :func:`assets.features.logic.feature_rows`, each row as on a
panel slice ending at that bar — the same call, the same inputs, the same bits as the ``features`` asset (a test
checks it against :func:`~assets.features.logic.feature_history`), vectorised over bars and symbols.

The time axis is the full calendar grid of the window (no bar skipped), so "h bars later" is an index shift;
a symbol without a bar (halted, missing, or a row the source skipped) is NaN in every array at that bar, as in
``feature_history``. Prices are back-adjusted by the source's corporate actions up to the window's last bar
(``assets.bars.logic.adjust_history``), so a split inside the window is no −69 % label.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.bars.logic import Panel, adjust_history, to_panel
from assets.features.logic import MARKET_COLUMNS, FeatureParams, feature_rows
from CONFIG.config_loader import get_cfg
from resources.market.sources import MarketDataSource, make_source


class TrainingDataError(ValueError):
    """A training window that cannot be used (no sessions, no bars); the message says which window."""


@dataclass(frozen=True)
class TrainingData:
    """Features, market columns and prices of every bar of the window (B bars × N symbols)."""

    X: np.ndarray                 # (B, N, F) model features, NaN where the symbol has no bar
    market: np.ndarray            # (B, N, M) market columns (MARKET_COLUMNS), e.g. sigma_bps
    times: pd.DatetimeIndex       # (B,) bar closes, UTC
    symbols: np.ndarray           # (N,) sorted
    sessions: np.ndarray          # (B,) session date of each bar (datetime.date objects)
    panel: Panel                  # bars of the window (close, high, low, …), same grid as X
    feature_names: tuple[str, ...]
    feature_version: str
    bar_minutes: int

    @property
    def session_id(self) -> np.ndarray:
        """(B,) int: ordinal of each bar's session within the window (labels never cross a change)."""
        _, ids = np.unique(self.sessions, return_inverse=True)
        return ids.astype(np.int64)

    @property
    def session_list(self) -> list[dt.date]:
        return sorted(set(self.sessions.tolist()))

    def market_column(self, name: str) -> np.ndarray:
        return self.market[:, :, MARKET_COLUMNS.index(name)]


def window_sessions(n_sessions: int, train_end: str | dt.date, source: MarketDataSource) -> list[dt.date]:
    """The ``n_sessions`` sessions strictly before ``train_end`` (fewer if the calendar starts later)."""
    end = pd.Timestamp(train_end).date()
    first = pd.Timestamp(source.calendar.start).date()
    days = [d for d in source.calendar.sessions(None, end) if d < end] if end > first else []
    if not days:
        raise TrainingDataError(f"no trading session before training.train_end={end} "
                                f"(the calendar and market data start {first})")
    return days[-n_sessions:]


def build_dataset(sessions: int | None = None, train_end: str | dt.date | None = None,
                  source: MarketDataSource | None = None) -> TrainingData:
    """Bars of the window (plus the features' lookback before it) → features of every window bar."""
    n_sessions = int(sessions if sessions is not None else get_cfg("training.train_sessions"))
    end = train_end if train_end is not None else get_cfg("training.train_end")
    src = source if source is not None else make_source()
    p = FeatureParams.from_cfg()
    cal = src.calendar
    days = window_sessions(n_sessions, end, src)
    per_day = [cal.session_bars(d) for d in days]
    times = pd.DatetimeIndex(np.concatenate([b.values for b in per_day])).tz_localize("UTC")
    bar_sessions = np.array([d for d, b in zip(days, per_day, strict=True) for _ in range(len(b))], dtype=object)
    lookback = p.lookback()
    grid = cal.previous_bars(times[-1], len(times) + lookback)
    if len(grid) < len(times) or not grid[-len(times):].equals(times):
        raise TrainingDataError(f"calendar grid for {days[0]}…{days[-1]} does not match its sessions' bars")
    frame = src.history(times[-1], len(grid))
    if hasattr(src, "adjustments_until"):  # corporate actions: features and labels on one price basis
        frame = adjust_history(frame, src.adjustments_until(times[-1]))
    symbols = np.array(sorted(src.symbols()))
    if frame.empty or not frame["ts"].isin(times).any():
        raise TrainingDataError(f"the market source has no bars in the training window {days[0]}…{days[-1]}")
    full = to_panel(frame, grid, symbols)
    X, market = _features(full, len(grid) - len(times), times, bar_sessions, src, p)
    start = len(grid) - len(times)
    panel = Panel(times, symbols, {k: v[start:] for k, v in full.fields.items()})
    return TrainingData(X, market, times, symbols, bar_sessions, panel, tuple(p.names), p.version,
                        int(get_cfg("market.bar_minutes")))


def _features(full: Panel, start: int, times: pd.DatetimeIndex, bar_sessions: np.ndarray,
              src: MarketDataSource, p: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """Features of rows ``start…`` of ``full``, each row as ``features_at`` on the slice ending there: one
    :func:`~assets.features.logic.feature_rows` block (bit-identical to the rows one by one); rows without
    enough history at the very start of the data get NaN."""
    nf, n = len(p.names), len(full.symbols)
    need = p.lookback() + 1
    tods = src.calendar.session_fraction(times)
    adv = {d: src.adv_shares(d).reindex(full.symbols).to_numpy(dtype=float)
           for d in sorted(set(bar_sessions.tolist()))}
    X = np.full((len(times), n, nf), np.nan)
    market = np.full((len(times), n, len(MARKET_COLUMNS)), np.nan)
    first = max(0, need - 1 - start)  # the first bar with a whole lookback before it
    if first < len(times):
        rows = slice(start + first, start + len(times))
        advs = np.stack([adv[d] for d in bar_sessions[first:]])
        with np.errstate(invalid="ignore", divide="ignore"):
            block = feature_rows(full, rows, tods[first:], advs, p)
        block = np.where(np.isfinite(full["close"][rows])[:, :, None], block, np.nan)
        X[first:], market[first:] = block[:, :, :nf], block[:, :, nf:]
    return X, market

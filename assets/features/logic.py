"""Pure logic of the ``features`` stage: the versioned feature list, computed vectorised over symbols.

Point in time by construction: the features of bar t read only the last ``lookback()+1`` rows of a panel
ending at t, so (a) no later bar can change them and (b) the features of an earlier bar recomputed from a
longer history are bit-identical to the ones computed live — the sequential models' windows, audits and
replay all rely on that. The EWMA σ is truncated to ``features.ewma_window_bars`` for the same reason.

Intraday returns only (SPEC §4): a bar's one-bar return is log(close/previous close) inside a session and
log(close/open) for the session's first bar; the close-to-open overnight gap is not a bar's return (counting it
inflated σ on 61 % of symbol-bars, up to 2.4×, and made an unadjusted split a −0.69 one-bar return for 48 bars)
and is its own feature. A session starts where consecutive bars of the calendar's grid lie more than one bar
interval apart (the overnight gap; bars inside a session are at most one interval apart on every grid).

Feature set ``features.version`` (model inputs, in this order):
  ret_k      log return over the last k bars without the overnight gaps inside them (log close_t − log
             close_{t−k} − the gaps between), k in ``features.return_lookbacks``
  resid_k    ret_k minus its cross-sectional mean (idiosyncratic move), same k
  vol_w      realised volatility (RMS of one-bar intraday log returns) over w bars, w in ``features.vol_windows``
  rvol       log(volume / mean volume over ``features.volume_window`` bars)
  range      mean (high − low)/close over ``features.range_window`` bars
  spread_bps quoted spread (ask − bid)/mid in bps (estimated when the source has no quote)
  tod        fraction of the session elapsed at the bar close (half days included)
  overnight  this session's overnight gap: log(first bar's open / previous session's last close)
Market columns (not model inputs; used by arbitration and sizing): price, sigma_bps (EWMA one-bar intraday σ,
bps), sigma_daily_bps, adv_shares, adv_bar_dollars, mid; data columns from the bar's snapshot: quote_age_bars,
spread_estimated, hold_reason (see ``assets/bars/logic.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow, Panel
from CONFIG.config_loader import get_cfg
from resources.market.calendar import get_calendar, parse_bar_key

MARKET_COLUMNS = ["price", "mid", "sigma_bps", "sigma_daily_bps", "adv_shares", "adv_bar_dollars"]
DATA_COLUMNS = {"quote_age_bars": np.nan, "spread_estimated": False, "hold_reason": ""}  # from the snapshot


@dataclass(frozen=True)
class FeatureParams:
    version: str
    return_lookbacks: tuple[int, ...]
    vol_windows: tuple[int, ...]
    volume_window: int
    range_window: int
    ewma_halflife_bars: float
    ewma_window_bars: int
    min_valid_share: float
    bars_per_session: int
    bar_minutes: int = 5

    @classmethod
    def from_cfg(cls) -> FeatureParams:
        return cls(
            version=get_cfg("features.version"),
            return_lookbacks=tuple(get_cfg("features.return_lookbacks")),
            vol_windows=tuple(get_cfg("features.vol_windows")),
            volume_window=get_cfg("features.volume_window"),
            range_window=get_cfg("features.range_window"),
            ewma_halflife_bars=float(get_cfg("features.ewma_halflife_bars")),
            ewma_window_bars=get_cfg("features.ewma_window_bars"),
            min_valid_share=get_cfg("features.min_valid_share"),
            bars_per_session=get_calendar().bars_per_full_session(),
            bar_minutes=int(get_cfg("market.bar_minutes")),
        )

    @property
    def names(self) -> list[str]:
        return ([f"ret_{k}" for k in self.return_lookbacks] + [f"resid_{k}" for k in self.return_lookbacks]
                + [f"vol_{w}" for w in self.vol_windows] + ["rvol", "range", "spread_bps", "tod", "overnight"])

    def lookback(self) -> int:
        """Bars before t that a feature of t may read (the overnight gap: back to the previous session's close)."""
        return max(max(self.return_lookbacks), max(self.vol_windows), self.volume_window,
                   self.range_window, self.ewma_window_bars, self.bars_per_session)


def _window_stat(values: np.ndarray, min_share: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted nan-mean over axis 0, NaN where fewer than ``min_share`` of the rows are present."""
    ok = np.isfinite(values)
    w = np.ones(values.shape[0]) if weights is None else weights
    wv = np.where(ok, w[:, None], 0.0)
    total = wv.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (np.where(ok, values, 0.0) * wv).sum(axis=0) / total
    return np.where(ok.mean(axis=0) >= min_share, out, np.nan)


def session_starts(times: pd.DatetimeIndex, bar_minutes: int) -> np.ndarray:
    """(T,) True at a bar that opens a session: more than one bar interval after the previous bar of the grid
    (the first row of a window is not known to be one: False)."""
    out = np.zeros(len(times), dtype=bool)
    if len(times) > 1:
        gaps = np.diff(pd.DatetimeIndex(times).asi8)
        out[1:] = gaps > int(bar_minutes) * 60 * 10**9
    return out


def intraday_returns(panel: Panel, bar_minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """(T−1, N) one-bar intraday log returns of rows 1… (a session's first bar: close over its own open) and
    (T, N) the overnight gap at each session's first row (log open − previous row's log close), 0 elsewhere."""
    logc, logo = np.log(panel["close"]), np.log(panel["open"])
    new = session_starts(panel.times, bar_minutes)
    gap = np.zeros(logc.shape)
    if new.any():
        rows = np.nonzero(new)[0]
        gap[rows] = logo[rows] - logc[rows - 1]
    r1 = np.where(new[1:, None], logc[1:] - logo[1:], logc[1:] - logc[:-1])
    return r1, gap


def features_at(panel: Panel, tod: float, adv_shares: np.ndarray, p: FeatureParams) -> np.ndarray:
    """The (N, F) model features and (N, M) market columns of the panel's last row, concatenated."""
    need = p.lookback() + 1
    if len(panel.times) < need:
        raise ValueError(f"features need {need} bars of history, the panel has {len(panel.times)}")
    tail = panel.tail(need)
    c = tail["close"]
    logc = np.log(c)
    with np.errstate(invalid="ignore"):
        r1, gap = intraday_returns(tail, p.bar_minutes)  # (need-1, N) intraday one-bar log returns
    cols = []
    with np.errstate(invalid="ignore"):
        # the k-bar move less the overnight gaps inside it (their sum is exactly 0.0 within one session, NaN
        # when a gap inside is unknown)
        rets = [logc[-1] - logc[-1 - k] - gap[-k:].sum(axis=0) for k in p.return_lookbacks]
    cols += rets
    with np.errstate(invalid="ignore"):
        cols += [r - np.nanmean(r) if np.isfinite(r).any() else r for r in rets]
    for w in p.vol_windows:
        cols.append(np.sqrt(_window_stat(r1[-w:] ** 2, p.min_valid_share)))
    vol = panel["volume"][-p.volume_window:]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols.append(np.log(vol[-1] / _window_stat(vol, p.min_valid_share)))
        hl = (panel["high"][-p.range_window:] - panel["low"][-p.range_window:]) / panel["close"][-p.range_window:]
        cols.append(_window_stat(hl, p.min_valid_share))
        bid, ask = panel["bid"][-1], panel["ask"][-1]
        mid = (bid + ask) / 2
        spread = (ask - bid) / mid * 1e4
    cols.append(spread)
    cols.append(np.full(c.shape[1], tod))
    starts = np.nonzero(session_starts(tail.times, p.bar_minutes))[0]
    cols.append(gap[starts[-1]] if len(starts) else np.full(c.shape[1], np.nan))
    lam = 0.5 ** (1.0 / p.ewma_halflife_bars)
    weights = lam ** np.arange(p.ewma_window_bars - 1, -1, -1, dtype=float)
    sigma = np.sqrt(_window_stat(r1[-p.ewma_window_bars:] ** 2, p.min_valid_share, weights)) * 1e4
    price = c[-1]
    market = [price, mid, sigma, sigma * np.sqrt(p.bars_per_session), adv_shares,
              adv_shares * price / p.bars_per_session]
    return np.column_stack(cols + market)


def feature_frame(panel: Panel, tod: float, adv_shares: np.ndarray, p: FeatureParams) -> pd.DataFrame:
    """Features of the panel's last bar for the symbols that have a bar then (others: recorded absent)."""
    values = features_at(panel, tod, adv_shares, p)
    frame = pd.DataFrame(values, columns=p.names + MARKET_COLUMNS)
    frame.insert(0, "symbol", panel.symbols)
    present = np.isfinite(panel["close"][-1])
    return frame[present].reset_index(drop=True)


def feature_history(panel: Panel, tods: np.ndarray, adv_shares: np.ndarray, p: FeatureParams,
                    n_last: int) -> np.ndarray:
    """(n_last, N, F) model features of the panel's last ``n_last`` bars, each exactly as computed live."""
    nf = len(p.names)
    end = len(panel.times)
    out = np.empty((n_last, len(panel.symbols), nf))
    for k in range(n_last):  # a loop over bars of the window, never over symbols
        sub = Panel(panel.times[: end - n_last + 1 + k], panel.symbols,
                    {f: v[: end - n_last + 1 + k] for f, v in panel.fields.items()})
        out[k] = features_at(sub, float(tods[k]), adv_shares, p)[:, :nf]
        missing = ~np.isfinite(sub["close"][-1])
        out[k][missing] = np.nan
    return out


def features_for_window(window: BarWindow, p: FeatureParams | None = None) -> pd.DataFrame:
    """Features of the window's bar (shared by the asset, replay and tests); ``valid`` marks complete rows."""
    p = p or FeatureParams.from_cfg()
    tod = float(get_calendar().session_fraction(pd.DatetimeIndex([parse_bar_key(window.bar)]))[0])
    adv = window.snapshot["adv_shares"].to_numpy(dtype=float)
    frame = feature_frame(window.panel(), tod, adv, p)
    frame.insert(1, "valid", np.isfinite(frame[p.names].to_numpy()).all(axis=1))
    frame.insert(2, "feature_version", p.version)
    snap = window.snapshot.set_index("symbol").reindex(frame["symbol"])
    for col, default in DATA_COLUMNS.items():  # what the gate needs to know about the bar's data
        values = snap[col] if col in snap else pd.Series(default, index=snap.index)
        frame[col] = values.where(values.notna(), default).to_numpy().astype(type(default))
    return frame

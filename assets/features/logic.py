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
from resources.market.calendar import get_calendar

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


def _window_stats(values: np.ndarray, ends: slice, width: int, min_share: float,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """(B, N) weighted nan-mean of the ``width`` rows ending at each row of ``ends`` (consecutive rows of
    ``values`` (T, N)); NaN where fewer than ``min_share`` of those rows are present.

    The sums run row by row, oldest first, starting from the first row (what numpy's reduction over the
    leading axis of a (width, N) window does), so each bar's value is the same bits whatever the batch."""
    lo = ends.start - width + 1
    b_n = ends.stop - ends.start
    w = np.ones(width) if weights is None else weights
    total = num = count = None
    for i in range(width):  # a loop over the window's rows, vectorised over bars and symbols
        v = values[lo + i: lo + i + b_n]
        ok = np.isfinite(v)
        wv = np.where(ok, w[i], 0.0)
        term = np.where(ok, v, 0.0) * wv
        if total is None:
            total, num, count = wv, term, ok.astype(np.int64)
        else:
            total, num, count = total + wv, num + term, count + ok
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / total
    return np.where(count / width >= min_share, out, np.nan)


def _window_sums(values: np.ndarray, ends: slice, width: int) -> np.ndarray:
    """(B, N) sum of the ``width`` rows ending at each row of ``ends``, row by row, oldest first."""
    lo = ends.start - width + 1
    b_n = ends.stop - ends.start
    total = values[lo: lo + b_n]
    for i in range(1, width):
        total = total + values[lo + i: lo + i + b_n]
    return total


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


def feature_rows(panel: Panel, rows: slice, tods: np.ndarray, adv_shares: np.ndarray,
                 p: FeatureParams) -> np.ndarray:
    """(B, N, F + M) model features and market columns of the consecutive panel rows ``rows`` (B of them),
    each row computed as if the panel ended there: it reads only its own last ``lookback()+1`` rows, so a
    later row cannot move an earlier one, and every value is the same bits as the row computed alone
    (``tests/unit/test_feature_rows.py``). ``tods`` (B,) each row's session fraction, ``adv_shares`` (B, N)
    or (N,). Raises ValueError when the first row has fewer than ``lookback()+1`` rows of history.

    Returns of a row use its own window only: the window's first row never opens a session (what a panel
    ending at the row sees), so the overnight gap is taken only from a session start after it."""
    need = p.lookback() + 1
    first, stop = rows.start, rows.stop
    if first + 1 < need:
        raise ValueError(f"features need {need} bars of history, the panel has {first + 1}")
    sub = panel.slice(first - need + 1, stop)  # the rows any of the B windows reads
    b_n, n = stop - first, len(panel.symbols)
    at = slice(need - 1, need - 1 + b_n)  # the B rows in ``sub``
    c = sub["close"]
    with np.errstate(invalid="ignore", divide="ignore"):
        logc, logo = np.log(c), np.log(sub["open"])
    new = session_starts(sub.times, p.bar_minutes)
    gap = np.zeros(logc.shape)
    if new.any():
        idx = np.nonzero(new)[0]
        gap[idx] = logo[idx] - logc[idx - 1]
    r1 = np.full(logc.shape, np.nan)  # r1[j]: the one-bar return into row j (row 0 has none)
    r1[1:] = np.where(new[1:, None], logc[1:] - logo[1:], logc[1:] - logc[:-1])
    cols = []
    with np.errstate(invalid="ignore"):
        # the k-bar move less the overnight gaps inside it (their sum is exactly 0.0 within one session, NaN
        # when a gap inside is unknown)
        rets = [logc[at] - logc[at.start - k: at.stop - k] - _window_sums(gap, at, k) for k in p.return_lookbacks]
    cols += rets
    for r in rets:
        finite = np.isfinite(r).any(axis=1)
        with np.errstate(invalid="ignore"):
            centre = np.nanmean(np.where(finite[:, None], r, 0.0), axis=1)
        cols.append(np.where(finite[:, None], r - centre[:, None], r))
    with np.errstate(invalid="ignore"):
        r2 = r1 ** 2
    for w in p.vol_windows:
        cols.append(np.sqrt(_window_stats(r2, at, w, p.min_valid_share)))
    vol = sub["volume"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols.append(np.log(vol[at] / _window_stats(vol, at, p.volume_window, p.min_valid_share)))
        hl = (sub["high"] - sub["low"]) / c
        cols.append(_window_stats(hl, at, p.range_window, p.min_valid_share))
        bid, ask = sub["bid"][at], sub["ask"][at]
        mid = (bid + ask) / 2
        spread = (ask - bid) / mid * 1e4
    cols.append(spread)
    cols.append(np.broadcast_to(np.asarray(tods, dtype=float)[:, None], (b_n, n)))
    # the last session start inside each row's window, its first row excluded
    last = np.maximum.accumulate(np.where(new, np.arange(len(new)), -1))[at]
    has = last > np.arange(b_n)
    cols.append(np.where(has[:, None], gap[np.maximum(last, 0)], np.nan))
    lam = 0.5 ** (1.0 / p.ewma_halflife_bars)
    weights = lam ** np.arange(p.ewma_window_bars - 1, -1, -1, dtype=float)
    with np.errstate(invalid="ignore"):
        sigma = np.sqrt(_window_stats(r2, at, p.ewma_window_bars, p.min_valid_share, weights)) * 1e4
    price = c[at]
    adv = np.broadcast_to(np.asarray(adv_shares, dtype=float), (b_n, n))
    market = [price, mid, sigma, sigma * np.sqrt(p.bars_per_session), adv, adv * price / p.bars_per_session]
    return np.stack(cols + market, axis=-1)


def features_at(panel: Panel, tod: float, adv_shares: np.ndarray, p: FeatureParams) -> np.ndarray:
    """The (N, F) model features and (N, M) market columns of the panel's last row, concatenated
    (:func:`feature_rows` of one row)."""
    end = len(panel.times)
    return feature_rows(panel, slice(end - 1, end), np.array([tod]), adv_shares, p)[0]


def feature_frame(panel: Panel, tod: float, adv_shares: np.ndarray, p: FeatureParams) -> pd.DataFrame:
    """Features of the panel's last bar for the symbols that have a bar then (others: recorded absent)."""
    return _frame(features_at(panel, tod, adv_shares, p), panel.symbols, panel["close"][-1], p)


def _frame(values: np.ndarray, symbols: np.ndarray, close: np.ndarray, p: FeatureParams) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=p.names + MARKET_COLUMNS)
    frame.insert(0, "symbol", symbols)
    return frame[np.isfinite(close)].reset_index(drop=True)


def feature_history(panel: Panel, tods: np.ndarray, adv_shares: np.ndarray, p: FeatureParams,
                    n_last: int) -> np.ndarray:
    """(n_last, N, F) model features of the panel's last ``n_last`` bars, each exactly as computed live
    (NaN where the symbol has no bar at that row)."""
    end = len(panel.times)
    return masked_history(feature_rows(panel, slice(end - n_last, end), tods, adv_shares, p)[:, :, :len(p.names)],
                          panel["close"][end - n_last:end])


def masked_history(model_rows: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Model feature rows (B, N, F) with NaN where ``close`` (B, N) is missing (a symbol without a bar)."""
    return np.where(np.isfinite(close)[:, :, None], model_rows, np.nan)


def features_for_window(window: BarWindow, p: FeatureParams | None = None) -> pd.DataFrame:
    """Features of the window's bar (shared by the asset, replay and tests); ``valid`` marks complete rows."""
    return features_for_windows([window], p)[0][0]


def features_for_windows(windows: list[BarWindow], p: FeatureParams | None = None,
                         history_bars: int = 0) -> list[tuple[pd.DataFrame, np.ndarray | None]]:
    """Per window its features frame (:func:`features_for_window`) and, with ``history_bars`` = T > 0, the
    (T, N, F) model features of its last T bars (:func:`feature_history`: the sequential models' windows).

    Windows of one period (``MarketDataResource.windows``) are computed as one (B + T − 1, N, ·) block of
    :func:`feature_rows` over the period's panel; any other window alone on its own panel. Same bits either
    way (``tests/unit/test_feature_rows.py``)."""
    p = p or FeatureParams.from_cfg()
    cal = get_calendar()
    out: list[tuple[pd.DataFrame, np.ndarray | None]] = []
    i = 0
    while i < len(windows):  # runs of windows that are consecutive rows of one period's panel
        panel, row = windows[i].__dict__.get("_period") or (windows[i].panel(), len(windows[i].panel().times) - 1)
        j = i + 1
        while j < len(windows) and windows[j].__dict__.get("_period", (None,))[0] is panel \
                and windows[j].__dict__["_period"][1] == row + (j - i):
            j += 1
        run = windows[i:j]
        extra = max(history_bars - 1, 0)
        if j - i > 1 and any(len(w.times) < p.lookback() + 1 + extra for w in run):
            # a window too short for its features alone must fail (or not) exactly as it does alone
            panel, row, j = windows[i].panel(), len(windows[i].times) - 1, i + 1
            run = windows[i:j]
        rows = slice(row - extra, row + len(run))
        tods = cal.session_fraction(panel.times[rows])
        adv = np.stack([w.snapshot["adv_shares"].to_numpy(dtype=float) for w in [run[0]] * extra + run])
        block = feature_rows(panel, rows, tods, adv, p)
        close = panel["close"][rows]
        for k, window in enumerate(run):
            hist = masked_history(block[k: k + history_bars, :, :len(p.names)], close[k: k + history_bars]) \
                if history_bars else None
            out.append((_bar_frame(block[extra + k], panel.symbols, close[extra + k], window, p), hist))
        i = j
    return out


def _bar_frame(values: np.ndarray, symbols: np.ndarray, close: np.ndarray, window: BarWindow,
               p: FeatureParams) -> pd.DataFrame:
    """One bar's features frame from its (N, F + M) block row: the symbols with a bar (finite ``close``), in
    the panel's order, with ``valid`` (every model feature finite), ``feature_version``, the feature and
    market columns, and ``DATA_COLUMNS`` from the bar's snapshot (its default where the snapshot has no such
    symbol or value). Arrays and one frame construction per bar (issue 12: was a frame, a filter, two inserts
    and a snapshot reindex)."""
    keep = np.flatnonzero(np.isfinite(close))
    rows = values[keep]
    snap = window.snapshot
    snap_symbols = snap["symbol"].to_numpy()
    sym = symbols[keep]
    if len(snap_symbols) == len(symbols) and (snap_symbols == symbols).all():
        pos = keep
    else:
        pos = pd.Index(snap_symbols).get_indexer(sym)
    names = p.names + MARKET_COLUMNS
    data = {"symbol": pd.array(sym, dtype="str"), "valid": np.isfinite(rows[:, :len(p.names)]).all(axis=1), "feature_version": p.version,
            **{name: rows[:, j] for j, name in enumerate(names)}}
    for col, default in DATA_COLUMNS.items():  # what the gate needs to know about the bar's data
        data[col] = _data_column(snap[col].to_numpy() if col in snap else None, pos, default)
    return pd.DataFrame(data)


def _data_column(values: np.ndarray | None, pos: np.ndarray, default) -> np.ndarray:
    """The snapshot's ``values`` at ``pos`` (−1: a symbol it lacks), missing and NaN values as ``default``,
    typed as ``default`` (float, bool, str)."""
    if values is None:
        return np.full(len(pos), default).astype(type(default))
    got = values[np.maximum(pos, 0)] if len(values) else np.full(len(pos), default, dtype=object)
    missing = (pos < 0) | pd.isna(got)
    if missing.any():
        got = np.where(missing, np.asarray(default, dtype=object), got.astype(object))
    return got.astype(type(default))

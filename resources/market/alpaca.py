"""The ``alpaca`` market source: bars from Alpaca's Market Data API v2 through alpaca-py's
``StockHistoricalDataClient``, converted to the engine's data contract (SPEC §10), cached as files.

Time stamps: Alpaca stamps a bar at its **start** (the 09:30 bar covers 09:30–09:35); the engine names a
bar by its **close** in UTC. Every bar is shifted by ``market.bar_minutes`` and kept only if that close is a
bar close of the calendar; anything else (an extended-hours bar, a bar off the grid) is a recorded skip
(:meth:`AlpacaSource.drain_skips`, rule and the vendor's own start stamp), never silently moved.

Requests: only regular-session spans are asked for (one request per session of the window and batch of
``market.alpaca.symbols_per_request`` symbols); alpaca-py follows ``next_page_token`` to the end. The same
transport as the broker adapter (timeouts, 429 waits by the rate-limit headers, bounded retries of reads).

ADV: the mean daily volume of Alpaca's daily bars (``1Day``, stamped at the session's midnight New York)
over the ``features.adv_sessions`` sessions strictly before the asked session; a symbol with none is NaN.

Quotes: the bars carry no bid/ask; they are estimated from the bar (:func:`estimate_bid_ask`).

Cache: every bar fetched is merged into ``market.alpaca.cache_dir/<SYMBOL>.csv`` in the ``files`` schema
(``ts`` = bar close UTC, OHLCV), first seen wins, written atomically; ``market.source: files`` with
``market.files_dir`` pointing there reads it, so a past window never depends on the vendor answering again.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assets.bars.logic import SKIP_COLUMNS
from assets.bars.quality import QualityParams, estimated_spread, row_rules, segments
from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.alpaca.transport import RetryPolicy, call, harden
from resources.credentials import AlpacaKeys
from resources.market.calendar import TradingCalendar, get_calendar
from resources.market.simulator import BAR_COLUMNS

SKIP_FILE = "alpaca"             # the `file` of a skip the vendor source records (it has no file)
CACHE_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
_RAW = {"t": "start", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


class AlpacaDataError(ValueError):
    """A universe or answer that cannot be used; the message names the key or the symbol."""


def universe(symbols: Sequence[Any], symbols_file: str | None) -> np.ndarray:
    """The configured symbols (list and/or file, one per line, ``#`` comments), sorted and unique. A
    non-string entry (YAML reads ``ON`` or ``YES`` as booleans) is an error asking to quote it."""
    out = list(symbols or [])
    if symbols_file:
        path = Path(symbols_file)
        if not path.is_file():
            raise AlpacaDataError(f"market.alpaca.symbols_file {path} does not exist")
        out += [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    bad = [s for s in out if not isinstance(s, str)]
    if bad:
        raise AlpacaDataError(f"market.alpaca.symbols: {bad[0]!r} is not a symbol (YAML turned it into "
                              f"{type(bad[0]).__name__}); quote it, e.g. 'ON'")
    clean = sorted({s.strip().upper() for s in out if s.strip()})
    if not clean:
        raise AlpacaDataError("market.source=alpaca needs a universe: market.alpaca.symbols or symbols_file")
    return np.array(clean, dtype=object)


def bars_frame(raw: Mapping[str, Iterable[Mapping[str, Any]]]) -> pd.DataFrame:
    """alpaca-py's raw bars (``{symbol: [{"t","o","h","l","c","v",…}]}``) → one frame, ``start`` in UTC."""
    rows = [{"symbol": sym, **{_RAW[k]: b.get(k) for k in _RAW}} for sym, bars in sorted(raw.items()) for b in bars]
    frame = pd.DataFrame(rows, columns=["symbol", *_RAW.values()])
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    for col in ("open", "high", "low", "close", "volume"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def estimate_bid_ask(rows: pd.DataFrame, tz: str, params: QualityParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask of bars without quotes: close ∓ half the Abdi–Ranaldo spread estimate of each symbol's own
    recent bars (the files source's estimator, :func:`assets.bars.quality.estimated_spread`; point in time:
    a row's estimate reads only that symbol's rows up to it). ``rows`` sorted by (symbol, ts)."""
    p = params or QualityParams.from_cfg()
    sym = rows["symbol"].to_numpy(dtype=object)
    days = rows["ts"].dt.tz_convert(tz).dt.date.to_numpy()
    new_session = np.ones(len(rows), dtype=bool)
    new_session[1:] = (days[1:] != days[:-1]) | (sym[1:] != sym[:-1])
    close = rows["close"].to_numpy(dtype=float)
    s = estimated_spread(close, rows["high"].to_numpy(dtype=float), rows["low"].to_numpy(dtype=float),
                         segments(sym), new_session, p.spread_window, p.spread_floor_bps)
    return close * (1 - s / 2), close * (1 + s / 2)


def to_contract(frame: pd.DataFrame, closes: pd.DatetimeIndex,
                bar_minutes: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Vendor bars (start stamps) → rows of the data contract (``BAR_COLUMNS``, ts = close) on ``closes``,
    the skipped rows (ts = the would-be close, symbol, rule) and the split-like jumps at an open (symbol, ts,
    split_ratio, reason). Duplicates keep the first row. The files source's row rules (non-positive or
    missing prices, high < low, open or close outside high–low, bad volume) and price sanity (unconfirmed
    jumps, implausible new levels, split-like opens: ``resources.market.files.price_rules``) apply to the
    vendor's rows too, each decided from the symbol's earlier rows in the fetched window: a vendor is not
    trusted more than a file."""
    from resources.market.adjustments import empty_adjustments
    from resources.market.files import price_rules

    ts = frame["start"] + pd.Timedelta(minutes=bar_minutes)
    on_grid = ts.isin(closes).to_numpy()
    dup = pd.DataFrame({"ts": ts, "symbol": frame["symbol"]}).duplicated().to_numpy()
    skips = pd.DataFrame({
        "file": SKIP_FILE, "ts": ts[~on_grid | dup], "symbol": frame["symbol"][~on_grid | dup], "rows": 1,
        "rule": np.where(dup[~on_grid | dup], "duplicated bar from the vendor",
                         "vendor bar (start " + frame["start"][~on_grid | dup].dt.strftime("%Y-%m-%dT%H:%MZ")
                         + ") is not a regular-session bar of the calendar")}, columns=SKIP_COLUMNS)
    keep = frame[on_grid & ~dup]
    out = pd.DataFrame({"ts": ts[on_grid & ~dup], "symbol": keep["symbol"], "open": keep["open"],
                        "high": keep["high"], "low": keep["low"], "close": keep["close"], "volume": keep["volume"]})
    out = out.sort_values(["symbol", "ts"], kind="mergesort").reset_index(drop=True)
    out["bid"] = out["ask"] = np.nan
    params = QualityParams.from_cfg()
    rule = row_rules(out, False, params.quote_tolerance_bps).astype(object)
    live = rule == ""
    days = out["ts"].dt.tz_convert(get_cfg("market.timezone")).dt.date.to_numpy().astype("datetime64[D]")
    found, flags = price_rules(out[live].reset_index(drop=True), days[live], empty_adjustments(), params)
    rule[np.nonzero(live)[0]] = found
    bad = rule != ""
    skips = pd.concat([skips, pd.DataFrame({"file": SKIP_FILE, "ts": out["ts"][bad], "symbol": out["symbol"][bad],
                                            "rows": 1, "rule": rule[bad]}, columns=SKIP_COLUMNS)],
                      ignore_index=True)
    out = out[~bad].reset_index(drop=True)
    out["bid"], out["ask"] = estimate_bid_ask(out, get_cfg("market.timezone"))
    out = out[BAR_COLUMNS]
    return (out.sort_values(["ts", "symbol"], kind="mergesort").reset_index(drop=True), skips.reset_index(drop=True),
            flags)


def daily_volumes(frame: pd.DataFrame, sessions: Sequence[dt.date], tz: str) -> pd.DataFrame:
    """Daily bars → (symbol, session, volume) for the given sessions (a daily bar is stamped at its
    session's midnight in the exchange's time zone)."""
    day = frame["start"].dt.tz_convert(tz).dt.date
    out = pd.DataFrame({"symbol": frame["symbol"], "session": day, "volume": frame["volume"]})
    return out[out["session"].isin(set(sessions))].reset_index(drop=True)


class BarCache:
    """Per-symbol CSV files in the ``files`` schema; a bar already cached is never rewritten."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def write(self, rows: pd.DataFrame) -> int:
        """Merge the rows (``BAR_COLUMNS``) into the cache; returns how many rows were new."""
        new = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        for sym, part in rows.groupby("symbol", sort=True):
            path = self.dir / f"{sym}.csv"
            old = pd.read_csv(path, parse_dates=["ts"]) if path.exists() else pd.DataFrame(columns=CACHE_COLUMNS)
            if len(old):
                old["ts"] = pd.to_datetime(old["ts"], utc=True)
            add = part.loc[~part["ts"].isin(old["ts"]), CACHE_COLUMNS]
            if add.empty:
                continue
            merged = pd.concat([old, add], ignore_index=True).sort_values("ts", kind="mergesort")
            merged["ts"] = pd.to_datetime(merged["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{sym}.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                merged.to_csv(fh, index=False)
            os.replace(tmp, path)
            new += len(add)
        return new


class AlpacaSource:
    """Alpaca bars behind :class:`resources.market.sources.MarketDataSource`. ``sleep``/``clock`` reach the
    transport's rate-limit waits (tests)."""

    def __init__(self, keys: AlpacaKeys, symbols: Sequence[str] | None = None, calendar: TradingCalendar | None = None,
                 cache_dir: str | Path | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        from alpaca.data.historical.stock import StockHistoricalDataClient  # the [brokers] extra

        self._secrets = keys.secrets
        self.client = harden(StockHistoricalDataClient(keys.key_id, keys.secret, raw_data=True),
                             RetryPolicy.from_config(get_cfg("market.alpaca.timeout_seconds")), sleep, clock)
        self._symbols = universe(symbols if symbols is not None else get_cfg("market.alpaca.symbols"),
                                 None if symbols is not None else get_cfg("market.alpaca.symbols_file"))
        self.calendar = calendar or get_calendar()
        self.cache = BarCache(Path(cache_dir) if cache_dir else resolve_path("market.alpaca.cache_dir"))
        self._skips: list[pd.DataFrame] = []
        self._flags = pd.DataFrame(columns=["symbol", "ts", "split_ratio", "reason"])
        self._adv: dict[dt.date, pd.Series] = {}
        self.requests = 0

    def __repr__(self) -> str:
        return f"AlpacaSource({len(self._symbols)} symbols, feed={get_cfg('market.alpaca.feed')})"

    def symbols(self) -> np.ndarray:
        return self._symbols

    def _fetch(self, start: pd.Timestamp, end: pd.Timestamp, timeframe: Any) -> pd.DataFrame:
        from alpaca.data.enums import Adjustment, DataFeed
        from alpaca.data.requests import StockBarsRequest

        per = get_cfg("market.alpaca.symbols_per_request")
        parts = []
        for i in range(0, len(self._symbols), per):
            batch = list(self._symbols[i:i + per])
            req = StockBarsRequest(symbol_or_symbols=batch, timeframe=timeframe, start=start.to_pydatetime(),
                                   end=end.to_pydatetime(), feed=DataFeed(get_cfg("market.alpaca.feed")),
                                   adjustment=Adjustment(get_cfg("market.alpaca.adjustment")))
            self.requests += 1
            parts.append(bars_frame(call(self.client.get_stock_bars, req, secrets=self._secrets, what="bars")))
        return pd.concat(parts, ignore_index=True) if parts else bars_frame({})

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        """Bars (``BAR_COLUMNS``) of the ``n_bars`` bar closes up to and including ``bar``."""
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        minutes = self.calendar.bar_minutes
        closes = self.calendar.previous_bars(bar, n_bars)
        step = pd.Timedelta(minutes=minutes)
        sessions = pd.Series(closes, index=closes).map(self.calendar.session_of)
        frames = [self._fetch(span.min() - step, span.max() - step, TimeFrame(minutes, TimeFrameUnit.Minute))
                  for _, span in sessions.index.to_series().groupby(sessions.to_numpy(), sort=True)]
        rows, skips, flags = to_contract(pd.concat(frames, ignore_index=True), pd.DatetimeIndex(closes), minutes)
        if len(skips):
            self._skips.append(skips)
        self._flags = flags
        self.cache.write(rows)
        return rows

    def flags_between(self, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
        """Split-like jumps at an open in the last fetched window, start ≤ ts ≤ end (``start`` None: all): the
        symbol is held as for files (Alpaca's ``adjustment: raw`` bars are not split-adjusted)."""
        f = self._flags
        ts = pd.to_datetime(f["ts"], utc=True)
        keep = (ts <= end) & (True if start is None else ts >= start)
        return f[keep.to_numpy()].reset_index(drop=True)

    def drain_skips(self) -> pd.DataFrame:
        """The rows skipped since the last call (ts, symbol, rule), then forgotten."""
        out = pd.concat(self._skips, ignore_index=True) if self._skips else pd.DataFrame(columns=SKIP_COLUMNS)
        self._skips = []
        return out

    def adv_shares(self, session: dt.date) -> pd.Series:
        """Mean daily volume over ``features.adv_sessions`` sessions strictly before ``session``."""
        from alpaca.data.timeframe import TimeFrame

        if session not in self._adv:
            n = get_cfg("features.adv_sessions")
            days = [d for d in self.calendar.sessions(None, session) if d < session][-n:]
            if not days:
                return pd.Series(np.nan, index=self._symbols, name="adv_shares")
            tz = get_cfg("market.timezone")
            start = pd.Timestamp(days[0]).tz_localize(tz).tz_convert("UTC")
            end = pd.Timestamp(days[-1]).tz_localize(tz).tz_convert("UTC")
            vols = daily_volumes(self._fetch(start, end, TimeFrame.Day), days, tz)
            adv = vols.groupby("symbol")["volume"].mean().reindex(self._symbols)
            self._adv = {session: adv.rename("adv_shares")}
        return self._adv[session]

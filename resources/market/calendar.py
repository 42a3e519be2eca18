"""The trading calendar: which bars exist, and their keys.

Why a maintained package: holidays and half days (2026-11-26 closed; 2026-11-27 closes 13:00 New York,
42 five-minute bars) come from ``exchange_calendars``, not from a hand-written list that goes stale.
Every bar is named by its close time in UTC, ``YYYY-MM-DDTHH:MMZ``; exchange-local time appears only at
the edges (display, session dates).

The bar grid (SPEC §10: grids match what vendors publish; the session's last, possibly shorter, bar is
included; half days end at their early close), ``market.bar_alignment``:

* ``clock`` (default): bar closes sit on multiples of the bar interval of the exchange's local clock, strictly
  after the open, and the session's close is always the last bar. This is what Polygon, Alpaca and IBKR
  (``useRTH``) publish: hourly bars close at 10:00, 11:00 … 16:00 New York (the first one 30 minutes long),
  and a 13:00 half day closes 10:00, 11:00, 12:00, 13:00.
* ``session``: bar closes at open + k × interval, and the close (a shorter last bar when the session is not a
  whole number of intervals): hourly 10:30, 11:30 … 15:30, 16:00.

For 1, 5 and 15 minutes on XNYS (a 09:30 open, 390 minutes) the two are the same grid. A bar is named by its
close; its open is the previous close of the same session, or the session's open for the first bar.

Why a session table: building the exchange calendar costs ~0.5 s, and every Dagster run process, CLI call
and code-server load used to pay it. The engine needs only each session's date, open and close, so those
are read from the package once, kept in ``<var_dir>/cache`` (keyed by exchange, span and package version)
and answered with numpy from then on.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path

KEY_FORMAT = "%Y-%m-%dT%H:%MZ"


def bar_key(ts: pd.Timestamp | dt.datetime) -> str:
    """The partition key of a bar close: UTC minutes, e.g. ``2026-11-24T14:35Z``."""
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"bar time {ts!r} is naive: bar times are UTC-aware inside the engine")
    return t.tz_convert("UTC").strftime(KEY_FORMAT)


def bar_keys(times: pd.DatetimeIndex) -> list[str]:
    """:func:`bar_key` of every time of a UTC-aware index, formatted in one vectorised call (partitions and
    per-bar history windows name tens to thousands of bars at a time)."""
    times = pd.DatetimeIndex(times)
    if times.tz is None:
        raise ValueError("bar times are naive: bar times are UTC-aware inside the engine")
    utc = times.tz_convert("UTC").tz_localize(None).to_numpy()
    return [k + "Z" for k in np.datetime_as_string(utc, unit="m")]  # KEY_FORMAT, "%Y-%m-%dT%H:%MZ"


def parse_bar_key(key: str) -> pd.Timestamp:
    """Inverse of :func:`bar_key`; a malformed key is a clear error."""
    try:
        return pd.Timestamp(dt.datetime.strptime(key, KEY_FORMAT).replace(tzinfo=dt.UTC))
    except ValueError as exc:
        raise ValueError(f"bar key {key!r} is not of the form YYYY-MM-DDTHH:MMZ (UTC bar close)") from exc


CALENDAR_PAD_DAYS = 60  # sessions kept beyond the span, so windows that reach across its edges still resolve


ALIGNMENTS = ("clock", "session")


@dataclass(frozen=True)
class SessionTable:
    """Every session of the padded span: local date, open and close (UTC, ns), and the exchange's time zone."""

    days: np.ndarray    # datetime64[D], ascending
    opens: np.ndarray   # datetime64[ns], UTC
    closes: np.ndarray  # datetime64[ns], UTC
    tz: str

    @property
    def open_offsets(self) -> np.ndarray:
        """(S,) timedelta64[ns]: local wall time − UTC at each session's open (the clock grid is local)."""
        cached = self.__dict__.get("_offsets")
        if cached is None:
            utc = pd.DatetimeIndex(self.opens).tz_localize("UTC")
            cached = (utc.tz_convert(self.tz).tz_localize(None) - utc.tz_localize(None)).to_numpy()
            object.__setattr__(self, "_offsets", cached)
        return cached

    def index(self, day: dt.date | str | pd.Timestamp) -> int:
        """Position of a session; a ``ValueError`` naming the date if it is not one (or out of range)."""
        d = np.datetime64(pd.Timestamp(day).date(), "D")
        if d < self.days[0] or d > self.days[-1]:
            raise ValueError(f"{d} is outside the calendar's range {self.days[0]}…{self.days[-1]}")
        i = int(np.searchsorted(self.days, d))
        if i == len(self.days) or self.days[i] != d:
            raise ValueError(f"{d} is not a trading session")
        return i

    def in_range(self, start: str | dt.date, end: str | dt.date) -> slice:
        lo = np.datetime64(pd.Timestamp(start).date(), "D")
        hi = np.datetime64(pd.Timestamp(end).date(), "D")
        if lo < self.days[0] or hi > self.days[-1]:
            raise ValueError(f"{lo}…{hi} is outside the calendar's range {self.days[0]}…{self.days[-1]}")
        return slice(int(np.searchsorted(self.days, lo)), int(np.searchsorted(self.days, hi, side="right")))


def grid(opens: np.ndarray, closes: np.ndarray, offsets: np.ndarray, bar_minutes: int,
         alignment: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bar grid of sessions (see the module docstring): (closes, opens, session position) of every bar,
    flat, in time order. ``opens``/``closes``/``offsets`` are per session (datetime64[ns] UTC, timedelta64)."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"market.bar_alignment={alignment!r} is not one of {ALIGNMENTS}")
    step = np.timedelta64(int(bar_minutes), "m").astype("timedelta64[ns]")
    if not len(opens):
        empty = np.array([], dtype="datetime64[ns]")
        return empty, empty, np.array([], dtype=np.int64)
    if alignment == "clock":
        local = (opens + offsets).astype(np.int64)
        first = opens + (step - (local % step.astype(np.int64)).astype("timedelta64[ns]"))
    else:
        first = opens + step
    n_max = int(((closes - first) // step).max()) + 1 if len(first) else 0
    inner = first[:, None] + step * np.arange(max(n_max, 0))[None, :]
    full = np.concatenate([inner, closes[:, None]], axis=1)
    keep = np.concatenate([inner < closes[:, None], np.ones((len(closes), 1), dtype=bool)], axis=1)
    bar_close = full[keep]  # row-major: sessions in order, bars in order within each
    session = np.broadcast_to(np.arange(len(opens))[:, None], full.shape)[keep]
    bar_open = np.empty_like(bar_close)
    bar_open[1:] = bar_close[:-1]
    first_of_session = np.ones(len(bar_close), dtype=bool)
    first_of_session[1:] = session[1:] != session[:-1]
    bar_open[first_of_session] = opens[session[first_of_session]]
    return bar_close, bar_open, session


@dataclass(frozen=True)
class TradingCalendar:
    """Sessions and bar closes of one exchange for one bar interval and grid alignment."""

    code: str
    bar_minutes: int
    start: str
    end: str
    alignment: str = "clock"

    @property
    def _table(self) -> SessionTable:
        return _session_table(self.code, self.start, self.end)

    @property
    def tz(self) -> str:
        return self._table.tz

    def sessions(self, start: str | dt.date | None = None, end: str | dt.date | None = None) -> list[dt.date]:
        t = self._table
        return [d.item() for d in t.days[t.in_range(start or self.start, end or self.end)]]

    def session_bars(self, session: dt.date | str) -> pd.DatetimeIndex:
        """Bar close times (UTC) of one session on the configured grid; the close is the last bar (half days
        end early)."""
        return _session_bars(self.code, self.start, self.end, self.bar_minutes, self.alignment,
                             pd.Timestamp(session).date())

    def bars_per_full_session(self) -> int:
        """Bars of the longest session of the span (a regular full day): 78 five-minute bars, 7 hourly bars on
        the clock grid (the first one 30 minutes)."""
        return _bars_per_full_session(self.code, self.start, self.end, self.bar_minutes, self.alignment)

    def bar_grid(self, start: str | dt.date | None = None, end: str | dt.date | None = None
                 ) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray]:
        """(closes, opens, session dates as datetime64[D]) of every bar of the sessions from ``start`` to
        ``end`` (inclusive), vectorised. A bar's open is the previous close of its session or the open."""
        t = self._table
        span = t.in_range(start or self.start, end or self.end)
        c, o, s = grid(t.opens[span], t.closes[span], t.open_offsets[span], self.bar_minutes, self.alignment)
        return (pd.DatetimeIndex(c).tz_localize("UTC"), pd.DatetimeIndex(o).tz_localize("UTC"),
                t.days[span][s])

    def bar_closes(self, start: str | dt.date | None = None, end: str | dt.date | None = None) -> pd.DatetimeIndex:
        """Every bar close of the sessions from ``start`` to ``end`` (inclusive), in one vectorised step."""
        return self.bar_grid(start, end)[0]

    @property
    def first_day(self) -> dt.date:
        """The first session the calendar can answer for (its span padded by ``CALENDAR_PAD_DAYS``)."""
        return self._table.days[0].item()

    @property
    def last_day(self) -> dt.date:
        return self._table.days[-1].item()

    def session_days(self, bars: pd.DatetimeIndex) -> np.ndarray:
        """(B,) datetime64[D]: the exchange-local session date of each bar close (vectorised)."""
        bars = pd.DatetimeIndex(bars)
        if not len(bars):
            return np.array([], dtype="datetime64[D]")
        return bars.tz_convert(self.tz).tz_localize(None).normalize().to_numpy().astype("datetime64[D]")

    def session_of(self, bar: pd.Timestamp) -> dt.date:
        """The session a bar close belongs to (a close at the session close belongs to it)."""
        return pd.Timestamp(bar).tz_convert(self.tz).date()

    def is_session(self, day: dt.date | str) -> bool:
        t = self._table
        t.in_range(day, day)  # out of range: an error, not False
        d = np.datetime64(pd.Timestamp(day).date(), "D")
        i = int(np.searchsorted(t.days, d))
        return i < len(t.days) and t.days[i] == d

    def is_bar(self, bar: pd.Timestamp) -> bool:
        day = self.session_of(bar)
        if not self.is_session(day):
            return False
        return bool(pd.Timestamp(bar) in self.session_bars(day))

    def previous_bars(self, bar: pd.Timestamp, n: int) -> pd.DatetimeIndex:
        """The ``n`` bar closes up to and including ``bar``, oldest first, across sessions."""
        bar = pd.Timestamp(bar)
        t = self._table
        need_days = int(np.ceil(n / max(1, self.bars_per_full_session() // 2))) + 2
        last = int(np.searchsorted(t.days, np.datetime64(self.session_of(bar), "D"), side="right")) - 1
        if last < 0:
            raise ValueError(f"{bar} is before the calendar's range")
        first = max(0, last - need_days + 1)
        closes = self.bar_closes(t.days[first].item(), t.days[last].item())
        closes = closes[closes <= bar]
        return closes[-n:]

    def latest_closed_bar(self, now: pd.Timestamp | dt.datetime) -> pd.Timestamp | None:
        """The latest bar whose close is ≤ ``now`` (None before the first session in range)."""
        now = pd.Timestamp(now).tz_convert("UTC")
        day = pd.Timestamp(now.tz_convert(self.tz).date())
        lo = max(pd.Timestamp(self.start), day - pd.Timedelta(days=10))
        hi = min(pd.Timestamp(self.end), day)
        if hi < lo:
            return None
        closes = self.bar_closes(lo.date(), hi.date())
        closes = closes[closes <= now]
        return closes[-1] if len(closes) else None

    def session_fraction(self, bars: pd.DatetimeIndex) -> np.ndarray:
        """Per bar close: the fraction of its session elapsed (1.0 at the close, half days included)."""
        bars = pd.DatetimeIndex(bars)
        if not len(bars):
            return np.empty(0)
        t = self._table
        days = bars.tz_convert(self.tz).tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
        i = np.searchsorted(t.days, days)
        if (i >= len(t.days)).any() or (t.days[np.minimum(i, len(t.days) - 1)] != days).any():
            raise ValueError("session_fraction: a bar outside every trading session")
        at = bars.tz_convert("UTC").tz_localize(None).to_numpy()
        return (at - t.opens[i]) / (t.closes[i] - t.opens[i])


@lru_cache(maxsize=8)
def _session_table(code: str, start: str, end: str) -> SessionTable:
    """The padded span's sessions, from the cache file when it exists, else from ``exchange_calendars``."""
    pad_start = (pd.Timestamp(start) - pd.Timedelta(days=CALENDAR_PAD_DAYS)).date().isoformat()
    pad_end = (pd.Timestamp(end) + pd.Timedelta(days=CALENDAR_PAD_DAYS)).date().isoformat()
    cache = (resolve_path("paths.var_dir") / "cache"
             / f"calendar-{code}-{pad_start}-{pad_end}-xc{version('exchange-calendars')}.npz")
    if cache.exists():
        with np.load(cache) as z:
            return SessionTable(z["days"], z["opens"], z["closes"], str(z["tz"]))
    table = _from_exchange_calendars(code, pad_start, pad_end)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")  # atomic: a reader never sees half a file
    with os.fdopen(fd, "wb") as f:
        np.savez(f, days=table.days, opens=table.opens, closes=table.closes, tz=np.str_(table.tz))
    Path(tmp).replace(cache)
    return table


def _from_exchange_calendars(code: str, start: str, end: str) -> SessionTable:
    import exchange_calendars as xc  # ~0.5 s with the calendar build: only when the cache is cold

    cal = xc.get_calendar(code, start=start, end=end)
    days = cal.sessions.to_numpy().astype("datetime64[D]")
    opens = cal.opens.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    closes = cal.closes.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    return SessionTable(days, opens, closes, str(cal.tz))


@lru_cache(maxsize=4096)
def _session_bars(code: str, start: str, end: str, bar_minutes: int, alignment: str,
                  session: dt.date) -> pd.DatetimeIndex:
    table = _session_table(code, start, end)
    try:
        i = table.index(session)
    except ValueError:
        raise ValueError(f"{session} is not a {code} trading session") from None
    closes, _, _ = grid(table.opens[i:i + 1], table.closes[i:i + 1], table.open_offsets[i:i + 1], bar_minutes,
                        alignment)
    return pd.DatetimeIndex(closes).tz_localize("UTC")


@lru_cache(maxsize=32)
def _bars_per_full_session(code: str, start: str, end: str, bar_minutes: int, alignment: str) -> int:
    table = _session_table(code, start, end)
    i = int(np.argmax(table.closes - table.opens))
    closes, _, _ = grid(table.opens[i:i + 1], table.closes[i:i + 1], table.open_offsets[i:i + 1], bar_minutes,
                        alignment)
    return len(closes)


def get_calendar() -> TradingCalendar:
    """The configured calendar (code, bar interval, alignment, and the span from the simulator start to
    partitions end)."""
    start = min(get_cfg("simulator.start_date"), get_cfg("market.partitions_start"))
    return TradingCalendar(get_cfg("market.calendar"), get_cfg("market.bar_minutes"), start,
                           get_cfg("market.partitions_end"), get_cfg("market.bar_alignment"))

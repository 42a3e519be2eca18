"""The trading calendar: which bars exist, and their keys.

Why a maintained package: holidays and half days (2026-11-26 closed; 2026-11-27 closes 13:00 New York,
42 five-minute bars) come from ``exchange_calendars``, not from a hand-written list that goes stale.
Every bar is named by its close time in UTC, ``YYYY-MM-DDTHH:MMZ``; exchange-local time appears only at
the edges (display, session dates).

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


@dataclass(frozen=True)
class SessionTable:
    """Every session of the padded span: local date, open and close (UTC, ns), and the exchange's time zone."""

    days: np.ndarray    # datetime64[D], ascending
    opens: np.ndarray   # datetime64[ns], UTC
    closes: np.ndarray  # datetime64[ns], UTC
    tz: str

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


@dataclass(frozen=True)
class TradingCalendar:
    """Sessions and bar closes of one exchange for one bar interval."""

    code: str
    bar_minutes: int
    start: str
    end: str

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
        """Bar close times (UTC) of one session: open+interval … close; half days end early."""
        return _session_bars(self.code, self.start, self.end, self.bar_minutes, pd.Timestamp(session).date())

    def bars_per_full_session(self) -> int:
        return int(390 // self.bar_minutes)

    def bar_closes(self, start: str | dt.date | None = None, end: str | dt.date | None = None) -> pd.DatetimeIndex:
        """Every bar close of the sessions from ``start`` to ``end`` (inclusive), in one vectorised step."""
        t = self._table
        span = t.in_range(start or self.start, end or self.end)
        opens, closes = t.opens[span], t.closes[span]
        if not len(opens):
            return pd.DatetimeIndex([], tz="UTC")
        step = np.timedelta64(self.bar_minutes, "m")
        n_max = int((closes - opens).max() // step)
        grid = opens[:, None] + step * np.arange(1, n_max + 1)[None, :]  # (sessions, bars), row-major = time order
        return pd.DatetimeIndex(grid[grid <= closes[:, None]]).tz_localize("UTC")

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
def _session_bars(code: str, start: str, end: str, bar_minutes: int, session: dt.date) -> pd.DatetimeIndex:
    table = _session_table(code, start, end)
    try:
        i = table.index(session)
    except ValueError:
        raise ValueError(f"{session} is not a {code} trading session") from None
    o, c = table.opens[i], table.closes[i]
    step = np.timedelta64(bar_minutes, "m")
    closes = o + step * np.arange(1, int((c - o) // step) + 1)
    return pd.DatetimeIndex(closes).tz_localize("UTC")


def get_calendar() -> TradingCalendar:
    """The configured calendar (code, bar interval, and the span from the simulator start to partitions end)."""
    start = min(get_cfg("simulator.start_date"), get_cfg("market.partitions_start"))
    return TradingCalendar(get_cfg("market.calendar"), get_cfg("market.bar_minutes"), start,
                           get_cfg("market.partitions_end"))

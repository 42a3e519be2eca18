"""The trading calendar: which bars exist, and their keys.

Why a maintained package: holidays and half days (2026-11-26 closed; 2026-11-27 closes 13:00 New York,
42 five-minute bars) come from ``exchange_calendars``, not from a hand-written list that goes stale.
Every bar is named by its close time in UTC, ``YYYY-MM-DDTHH:MMZ``; exchange-local time appears only at
the edges (display, session dates).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars as xc
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg

KEY_FORMAT = "%Y-%m-%dT%H:%MZ"


def bar_key(ts: pd.Timestamp | dt.datetime) -> str:
    """The partition key of a bar close: UTC minutes, e.g. ``2026-11-24T14:35Z``."""
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"bar time {ts!r} is naive: bar times are UTC-aware inside the engine")
    return t.tz_convert("UTC").strftime(KEY_FORMAT)


def parse_bar_key(key: str) -> pd.Timestamp:
    """Inverse of :func:`bar_key`; a malformed key is a clear error."""
    try:
        return pd.Timestamp(dt.datetime.strptime(key, KEY_FORMAT).replace(tzinfo=dt.UTC))
    except ValueError as exc:
        raise ValueError(f"bar key {key!r} is not of the form YYYY-MM-DDTHH:MMZ (UTC bar close)") from exc


@dataclass(frozen=True)
class TradingCalendar:
    """Sessions and bar closes of one exchange for one bar interval."""

    code: str
    bar_minutes: int
    start: str
    end: str

    @property
    def _cal(self) -> xc.ExchangeCalendar:
        return _exchange_calendar(self.code, self.start, self.end)

    def sessions(self, start: str | dt.date | None = None, end: str | dt.date | None = None) -> list[dt.date]:
        s = self._cal.sessions_in_range(pd.Timestamp(start or self.start), pd.Timestamp(end or self.end))
        return [d.date() for d in s]

    def session_bars(self, session: dt.date | str) -> pd.DatetimeIndex:
        """Bar close times (UTC) of one session: open+interval … close; half days end early."""
        return _session_bars(self.code, self.start, self.end, self.bar_minutes, pd.Timestamp(session).date())

    def bars_per_full_session(self) -> int:
        return int(390 // self.bar_minutes)

    def bar_closes(self, start: str | dt.date | None = None, end: str | dt.date | None = None) -> pd.DatetimeIndex:
        days = self.sessions(start, end)
        if not days:
            return pd.DatetimeIndex([], tz="UTC")
        return pd.DatetimeIndex(np.concatenate([self.session_bars(d).tz_convert(None).to_numpy() for d in days])
                                ).tz_localize("UTC")

    def session_of(self, bar: pd.Timestamp) -> dt.date:
        """The session a bar close belongs to (a close at the session close belongs to it)."""
        local = pd.Timestamp(bar).tz_convert(self._cal.tz)
        return local.date()

    def is_bar(self, bar: pd.Timestamp) -> bool:
        day = self.session_of(bar)
        if not self._cal.is_session(pd.Timestamp(day)):
            return False
        return bool(pd.Timestamp(bar) in self.session_bars(day))

    def previous_bars(self, bar: pd.Timestamp, n: int) -> pd.DatetimeIndex:
        """The ``n`` bar closes up to and including ``bar``, oldest first, across sessions."""
        bar = pd.Timestamp(bar)
        day = pd.Timestamp(self.session_of(bar))
        need_days = int(np.ceil(n / max(1, self.bars_per_full_session() // 2))) + 2
        first = self._cal.sessions_window(day, -need_days)[0] if need_days else day
        closes = self.bar_closes(first.date(), day.date())
        closes = closes[closes <= bar]
        return closes[-n:]

    def latest_closed_bar(self, now: pd.Timestamp | dt.datetime) -> pd.Timestamp | None:
        """The latest bar whose close is ≤ ``now`` (None before the first session in range)."""
        now = pd.Timestamp(now).tz_convert("UTC")
        day = pd.Timestamp(now.tz_convert(self._cal.tz).date())
        lo = max(pd.Timestamp(self.start), day - pd.Timedelta(days=10))
        hi = min(pd.Timestamp(self.end), day)
        if hi < lo:
            return None
        closes = self.bar_closes(lo.date(), hi.date())
        closes = closes[closes <= now]
        return closes[-1] if len(closes) else None

    def session_fraction(self, bars: pd.DatetimeIndex) -> np.ndarray:
        """Per bar close: the fraction of its session elapsed (1.0 at the close, half days included)."""
        out = np.empty(len(bars))
        local_days = pd.DatetimeIndex(bars).tz_convert(self._cal.tz).normalize().tz_localize(None)
        for day in local_days.unique():  # a loop over sessions, not bars or symbols
            mask = local_days == day
            o, c = self._cal.session_open(day), self._cal.session_close(day)
            out[mask] = (pd.DatetimeIndex(bars)[mask] - o).total_seconds() / (c - o).total_seconds()
        return out


@lru_cache(maxsize=8)
def _exchange_calendar(code: str, start: str, end: str) -> xc.ExchangeCalendar:
    pad_start = (pd.Timestamp(start) - pd.Timedelta(days=60)).date().isoformat()
    pad_end = (pd.Timestamp(end) + pd.Timedelta(days=60)).date().isoformat()
    return xc.get_calendar(code, start=pad_start, end=pad_end)


@lru_cache(maxsize=4096)
def _session_bars(code: str, start: str, end: str, bar_minutes: int, session: dt.date) -> pd.DatetimeIndex:
    cal = _exchange_calendar(code, start, end)
    ts = pd.Timestamp(session)
    if not cal.is_session(ts):
        raise ValueError(f"{session} is not a {code} trading session")
    o, c = cal.session_open(ts), cal.session_close(ts)
    closes = pd.date_range(o + pd.Timedelta(minutes=bar_minutes), c, freq=f"{bar_minutes}min")
    return closes.tz_convert("UTC")


def get_calendar() -> TradingCalendar:
    """The configured calendar (code, bar interval, and the span from the simulator start to partitions end)."""
    start = min(get_cfg("simulator.start_date"), get_cfg("market.partitions_start"))
    return TradingCalendar(get_cfg("market.calendar"), get_cfg("market.bar_minutes"), start,
                           get_cfg("market.partitions_end"))

"""The market-data contract of the ``files`` source (SPEC §10): time conventions, the grid check, a diagnosis.

A file's ``ts`` is read in ``market.files_timezone`` (an IANA zone such as ``America/New_York``, ``UTC``, or a
fixed offset such as ``+05:30``; a time written with an offset keeps it and the key does not apply) under
``market.files_stamp``: ``close`` (``ts`` is the bar's close, the engine's convention) or ``open`` (``ts`` is
the bar's start; the bar is the grid bar that opens then). Inside the engine every bar is its UTC close.

Why a check at load: a file in another zone, stamp or bar interval than configured does not fail loudly by
itself. It loads with most rows "outside the session" and the rest shifted by hours, or with one-minute bars
taken for five-minute ones. So each file is checked against the calendar's grid before a row is used
(:func:`diagnose`), and a file that does not fit is refused with one :class:`DataError` naming the file,
what was seen and the key to set:

1. **interval**: the most common spacing of consecutive rows within a day. A spacing below
   ``market.bar_minutes`` (finer bars), or a regular spacing above it (≥ 90 % of the day's gaps a multiple of
   it: coarser bars), is refused with the interval the file looks like;
2. **grid**: the share of rows (inside the calendar's range) that are bars of the grid under the configured
   zone and stamp. Below ``market.files_min_grid_share`` the file is tried under other zones (a list of
   exchange zones and every whole or half hour offset) and the other stamp; the best fit is named in the
   refusal ("rows sit 4 h off the grid: looks like America/New_York wall time"). Extended-hours files (rows
   before the open or after the close, the session's own rows on the grid and covering it) are accepted and
   their out-of-session rows are recorded skips;
3. **stamp**: bars stamped at their open put a row at the session's open (09:30) and none at its close
   (16:00); stamped at their close, the reverse. A file with rows at the open and none at the close under
   ``files_stamp: close`` (or the mirror) is refused. A file that covers only part of its sessions (neither
   edge) cannot show its stamp: it is accepted with that warning.

Rows that survive the file check but are not bars (off the grid, outside the regular session, outside the
calendar's range, unparseable) are recorded skips with their rule (:func:`match_grid`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.market.calendar import TradingCalendar

STAMPS = ("close", "open")
# Zones tried, in this order, when a file does not fit the configured one (a tie goes to the earlier one);
# then every fixed offset from −12:00 to +14:00 in half hours.
NAMED_ZONES = ("UTC", "America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
               "Europe/Berlin", "Asia/Tokyo", "Asia/Hong_Kong", "Asia/Kolkata", "Australia/Sydney")
SAMPLE_ROWS = 4000     # rows a hypothesis is scored on (evenly spaced): the check costs the same for any file
STAMP_EDGE_SHARE = 0.5  # sessions with a row at an edge, above which that edge "has rows" (stamp check)
REGULAR_SHARE = 0.9     # share of a day's gaps that are multiples of the spacing for "coarser, regular bars"

RULE_UNPARSEABLE = "unparseable timestamp"
RULE_OUT_OF_RANGE = "outside the calendar's range"
RULE_OUT_OF_SESSION = "outside the regular session"
RULE_OFF_GRID = "not on the bar grid"

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2}):?(\d{2})$")
_AWARE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


class DataError(ValueError):
    """Market data that cannot be used; the message names the file, what was seen and the key to set."""


@dataclass(frozen=True)
class Convention:
    """How a file's ``ts`` is read: zone (name as configured), stamp and the bar interval."""

    timezone: str
    stamp: str
    bar_minutes: int

    @classmethod
    def from_cfg(cls) -> Convention:
        return cls(str(get_cfg("market.files_timezone")), str(get_cfg("market.files_stamp")),
                   int(get_cfg("market.bar_minutes")))


def parse_zone(name: str) -> dt.tzinfo:
    """``UTC``, an IANA name, or a fixed offset ``±HH:MM`` (also ``UTC+05:30``); anything else is a
    :class:`DataError` naming ``market.files_timezone``."""
    text = str(name).strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    m = _OFFSET.match(text)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        return dt.timezone(dt.timedelta(minutes=minutes if m.group(1) == "+" else -minutes))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise DataError(f"market.files_timezone={name!r} is not a time zone (an IANA name such as "
                        "America/New_York, UTC, or a fixed offset such as +05:30)") from None


def offset_name(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class RawTimes:
    """A file's times: ``wall`` the clock reading as written (naive; for times written with an offset, their
    UTC reading), ``aware`` whether the file states offsets, ``ok`` whether each row parsed."""

    wall: np.ndarray   # datetime64[ns], NaT where unparseable
    aware: bool
    ok: np.ndarray


def read_times(column: pd.Series) -> RawTimes:
    """Parse a ``ts`` column (strings, datetimes naive or aware); never raises on a bad row (``ok`` False)."""
    col = pd.Series(column)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        wall = col.dt.tz_convert("UTC").dt.tz_localize(None)
        aware = True
    elif pd.api.types.is_datetime64_any_dtype(col.dtype):
        wall, aware = col, False
    else:
        text = col.astype(str).str.strip()
        aware = bool(len(text)) and bool(text.head(100).str.contains(_AWARE).mean() > 0.5)
        parsed = pd.to_datetime(text, errors="coerce", utc=aware, format="ISO8601")
        wall = parsed.dt.tz_localize(None) if aware else parsed
    values = pd.DatetimeIndex(wall).as_unit("ns").to_numpy()
    return RawTimes(values, aware, ~np.isnat(values))


def localize(wall: np.ndarray, zone: dt.tzinfo) -> np.ndarray:
    """UTC instants (datetime64[ns]) of wall-clock readings in ``zone``; NaT for a reading the zone skips or
    repeats (DST changes fall outside any session)."""
    idx = pd.DatetimeIndex(wall)
    if zone is dt.UTC:
        return idx.to_numpy()
    local = idx.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return local.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy()


def instants(raw: RawTimes, convention: Convention) -> np.ndarray:
    """The rows' UTC instants under the convention's zone (offsets written in the file win)."""
    return raw.wall if raw.aware else localize(raw.wall, parse_zone(convention.timezone))


@dataclass(frozen=True)
class Grid:
    """The bar grid of the sessions a file spans, as sorted numpy arrays (UTC, ns)."""

    closes: np.ndarray
    opens: np.ndarray
    days: np.ndarray            # session date of each bar
    first_day: np.datetime64    # the calendar's range
    last_day: np.datetime64

    @classmethod
    def spanning(cls, calendar: TradingCalendar, times: np.ndarray) -> Grid:
        """The grid of every session from the day before the earliest time to the day after the latest, clipped
        to the calendar's range."""
        lo_cal = np.datetime64(calendar.first_day, "D")
        hi_cal = np.datetime64(calendar.last_day, "D")
        t = times[~np.isnat(times)]
        if not len(t):
            empty = np.array([], dtype="datetime64[ns]")
            return cls(empty, empty, np.array([], dtype="datetime64[D]"), lo_cal, hi_cal)
        lo = max(t.min().astype("datetime64[D]") - 1, lo_cal)
        hi = min(t.max().astype("datetime64[D]") + 1, hi_cal)
        if lo > hi:
            empty = np.array([], dtype="datetime64[ns]")
            return cls(empty, empty, np.array([], dtype="datetime64[D]"), lo_cal, hi_cal)
        closes, opens, days = calendar.bar_grid(lo.item(), hi.item())
        return cls(closes.tz_localize(None).as_unit("ns").to_numpy(), opens.tz_localize(None).as_unit("ns").to_numpy(),
                   days, lo_cal, hi_cal)


@dataclass(frozen=True)
class GridMatch:
    """Per row: the bar close it is (NaT if none), the rule that makes it no bar ("" if it is one), and the
    session date of that bar."""

    close: np.ndarray
    rule: np.ndarray
    bar: np.ndarray  # index into the grid, -1 if none


def match_grid(times: np.ndarray, grid: Grid, stamp: str, tz: str) -> GridMatch:
    """Map UTC instants to bars: under ``close`` a row is the bar that closes at its time, under ``open`` the
    bar that opens then. Vectorised (``searchsorted`` on the sorted grid)."""
    if stamp not in STAMPS:
        raise DataError(f"market.files_stamp={stamp!r} is not one of {STAMPS}")
    n = len(times)
    rule = np.full(n, "", dtype=object)
    bad = np.isnat(times)
    rule[bad] = RULE_UNPARSEABLE
    days = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    if (~bad).any():
        days[~bad] = pd.DatetimeIndex(times[~bad]).tz_localize("UTC").tz_convert(tz).tz_localize(
            None).normalize().to_numpy().astype("datetime64[D]")
    out_range = ~bad & ((days < grid.first_day) | (days > grid.last_day))
    rule[out_range] = RULE_OUT_OF_RANGE
    bar = np.full(n, -1, dtype=np.int64)
    live = ~bad & ~out_range
    if live.any() and len(grid.closes):
        keys = grid.closes if stamp == "close" else grid.opens
        t = times[live]
        i = np.searchsorted(keys, t)
        i_c = np.minimum(i, len(keys) - 1)
        exact = (i < len(keys)) & (keys[i_c] == t)
        bar_live = np.where(exact, i_c, -1)
        if stamp == "close":  # inside a session: open < t ≤ close of the bar whose close is the first ≥ t
            j = np.minimum(np.searchsorted(grid.closes, t, side="left"), len(grid.closes) - 1)
            inside = (grid.opens[j] < t) & (t <= grid.closes[j])
        else:               # open ≤ t < close
            j = np.minimum(np.searchsorted(grid.closes, t, side="right"), len(grid.closes) - 1)
            inside = (grid.opens[j] <= t) & (t < grid.closes[j])
        bar[live] = bar_live
        r = np.where(exact, "", np.where(inside, RULE_OFF_GRID, RULE_OUT_OF_SESSION))
        rule[live] = r
    elif live.any():
        rule[live] = RULE_OUT_OF_SESSION
    close = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    close[bar >= 0] = grid.closes[bar[bar >= 0]]
    return GridMatch(close, rule, bar)


@dataclass(frozen=True)
class Fit:
    """How well a file's times fit the grid under one hypothesis (zone, stamp)."""

    zone: str
    stamp: str
    share: float      # of rows inside the calendar's range: share that are bars
    coverage: float   # bars present / grid bars of the sessions with a bar
    session_share: float  # of rows inside a session: share that are bars
    open_share: float     # of sessions with rows inside them: share with a row at the session's open
    close_share: float    # … with a row at the session's close
    sessions: int
    shift: np.ndarray | None = None  # the hypothesis's instants (for the shift vs the configured one)


def fit(times: np.ndarray, grid: Grid, stamp: str, tz: str, zone: str = "") -> Fit:
    m = match_grid(times, grid, stamp, tz)
    in_range = (m.rule != RULE_UNPARSEABLE) & (m.rule != RULE_OUT_OF_RANGE)
    is_bar = m.bar >= 0
    in_session = is_bar | (m.rule == RULE_OFF_GRID)
    share = float(is_bar[in_range].mean()) if in_range.any() else 0.0
    session_share = float(is_bar[in_session].mean()) if in_session.any() else 0.0
    t = times[in_range]
    if not len(grid.closes) or not len(t):
        return Fit(zone, stamp, share, 0.0, session_share, 0.0, 0.0, 0, times)
    bars = np.unique(m.bar[is_bar])
    covered = np.unique(grid.days[bars]) if len(bars) else np.array([], dtype="datetime64[D]")
    coverage = len(bars) / max(1, int(np.isin(grid.days, covered).sum()))
    # the sessions' edges, whatever the stamp: a row at the open (09:30) or at the close (16:00) instant
    j = np.minimum(np.searchsorted(grid.closes, t, side="left"), len(grid.closes) - 1)
    inside = (grid.opens[j] <= t) & (t <= grid.closes[j])
    with_rows = np.unique(grid.days[j[inside]])
    first_of_day = np.ones(len(grid.days), dtype=bool)
    first_of_day[1:] = grid.days[1:] != grid.days[:-1]
    last_of_day = np.ones(len(grid.days), dtype=bool)
    last_of_day[:-1] = grid.days[1:] != grid.days[:-1]
    mine = np.isin(grid.days, with_rows)
    n_s = max(1, len(with_rows))
    at_open = int(np.isin(grid.opens[first_of_day & mine], t).sum())
    at_close = int(np.isin(grid.closes[last_of_day & mine], t).sum())
    return Fit(zone, stamp, share, float(coverage), session_share, at_open / n_s, at_close / n_s,
               len(covered), times)


def spacing_minutes(times: np.ndarray, tz: str) -> tuple[float | None, float]:
    """(the most common gap between consecutive rows of the same local day in minutes, the share of those
    gaps that are multiples of it); (None, 0) with fewer than two rows in any day."""
    t = np.unique(times[~np.isnat(times)])
    if len(t) < 2:
        return None, 0.0
    days = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert(tz).tz_localize(None).normalize().to_numpy()
    same = days[1:] == days[:-1]
    gaps = (np.diff(t)[same] / np.timedelta64(1, "s")) / 60.0
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return None, 0.0
    values, counts = np.unique(np.round(gaps, 6), return_counts=True)
    mode = float(values[np.argmax(counts)])
    regular = float(np.mean(np.isclose(np.mod(gaps + 1e-9, mode), 0.0, atol=1e-6))) if mode > 0 else 0.0
    return mode, regular


@dataclass
class FileDiagnosis:
    """What the check saw in one file, and its verdict (``ok``, ``warn`` — accepted with findings — or
    ``refused``). ``skips`` counts every skipped row by rule (time rules here, row rules added by the
    source)."""

    file: str
    symbol: str
    rows: int = 0
    first: str = ""
    last: str = ""
    sessions: int = 0
    interval_minutes: float | None = None
    stamp: str = ""
    timezone: str = ""
    grid_share: float = 0.0
    coverage: float = 0.0
    skips: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    verdict: str = "ok"
    error: str = ""

    def refuse(self, message: str) -> None:
        self.verdict, self.error = "refused", f"{self.file}: {message}"

    def warn(self, message: str) -> None:
        self.findings.append(message)
        if self.verdict == "ok":
            self.verdict = "warn"

    def render(self) -> str:
        head = f"{self.file}  [{self.verdict.upper()}]"
        interval = "—" if self.interval_minutes is None else f"{self.interval_minutes:g} min"
        lines = [head,
                 f"  rows {self.rows}, {self.first} … {self.last}, {self.sessions} session(s)",
                 f"  detected: interval {interval}, stamp {self.stamp or '—'}, time zone {self.timezone or '—'}",
                 f"  on the grid: {self.grid_share:.1%} of rows, covering {self.coverage:.1%} of their sessions' bars"]
        if self.skips:
            lines.append("  skipped rows: " + ", ".join(f"{rule}: {n}" for rule, n in sorted(self.skips.items())))
        lines += [f"  note: {f}" for f in self.findings]
        if self.error:
            lines.append(f"  REFUSED: {self.error}")
        return "\n".join(lines)


def _sample(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).astype(np.int64)) if n else np.array([], int)


def _hypotheses(raw: RawTimes, sample: np.ndarray, configured: Convention, calendar_tz: str
                ) -> list[tuple[str, np.ndarray]]:
    zones: list[str] = []
    for z in (configured.timezone, calendar_tz, *NAMED_ZONES):
        if z not in zones:
            zones.append(z)
    zones += [offset_name(m) for m in range(-12 * 60, 14 * 60 + 1, 30) if m != 0]
    wall = raw.wall[sample]
    return [(z, localize(wall, parse_zone(z))) for z in zones]


def _median_minutes(delta: np.ndarray) -> int | None:
    """The median of a timedelta array in whole minutes (None when every entry is NaT)."""
    d = delta[~np.isnat(delta)]
    return int(np.median(d / np.timedelta64(1, "m"))) if len(d) else None


def _fmt_shift(delta: np.ndarray) -> str:
    """How far the rows (as read) sit from where the fitting convention puts them: "4 h early" when they were
    read 4 hours before their bars (e.g. New York wall time read as UTC), "… late" the other way."""
    minutes = _median_minutes(delta)
    if minutes is None:
        return ""
    h, m = divmod(abs(minutes), 60)
    return f"{h} h" + (f" {m:02d} min" if m else "") + (" early" if minutes > 0 else " late")


def diagnose(file: str, symbol: str, raw: RawTimes, calendar: TradingCalendar, convention: Convention,
             min_grid_share: float, min_coverage: float) -> tuple[FileDiagnosis, np.ndarray]:
    """Check one file's times against the calendar under ``convention``; returns the diagnosis and the rows'
    UTC instants under the configured convention (what the source maps to bars when the file is accepted)."""
    diag = FileDiagnosis(file=file, symbol=symbol, rows=len(raw.wall))
    tz = calendar.tz
    times = instants(raw, convention)
    ok = times[~np.isnat(times)]
    if not len(ok):
        diag.refuse("no row with a readable ts (column ts: ISO 8601 times; see market.files_timezone)")
        return diag, times
    diag.first, diag.last = (pd.Timestamp(ok.min(), tz="UTC").isoformat(), pd.Timestamp(ok.max(), tz="UTC").isoformat())
    grid = Grid.spanning(calendar, times)
    base = fit(times, grid, convention.stamp, tz, convention.timezone)
    m_all = match_grid(times, grid, convention.stamp, tz)
    in_range = (m_all.rule != RULE_UNPARSEABLE) & (m_all.rule != RULE_OUT_OF_RANGE)
    diag.sessions, diag.grid_share, diag.coverage = base.sessions, base.share, base.coverage
    diag.stamp, diag.timezone = convention.stamp, ("offsets in the file" if raw.aware else convention.timezone)
    if not in_range.any():
        diag.refuse(f"every row ({diag.first} … {diag.last}) lies outside the calendar's range "
                    f"{grid.first_day} … {grid.last_day}: set market.partitions_start and market.partitions_end "
                    "(the calendar spans them, padded) to cover the file")
        return diag, times
    spacing, regular = spacing_minutes(times[in_range], tz)
    diag.interval_minutes = spacing
    b = convention.bar_minutes
    if spacing is not None and spacing < b - 1e-9:
        diag.refuse(f"rows are {spacing:g} minute(s) apart: looks like {spacing:g}-minute bars, but "
                    f"market.bar_minutes is {b} (set market.bar_minutes: {spacing:g}, or resample the file to "
                    f"{b}-minute bars)")
        return diag, times
    if spacing is not None and spacing > b + 1e-9 and regular >= REGULAR_SHARE and base.coverage < min_coverage:
        diag.refuse(f"rows are {spacing:g} minutes apart ({regular:.0%} of a day's gaps are multiples of it) and "
                    f"cover {base.coverage:.0%} of the {b}-minute grid: looks like {spacing:g}-minute bars "
                    f"(set market.bar_minutes: {spacing:g})")
        return diag, times
    if base.share < min_grid_share:
        _refuse_or_accept_off_grid(diag, raw, convention, calendar, grid, base, min_grid_share, min_coverage)
        if diag.verdict == "refused":
            return diag, times
    _check_stamp(diag, base, convention)
    if diag.verdict != "refused" and base.coverage < min_coverage:
        diag.warn(f"the rows cover {base.coverage:.0%} of the bars of their sessions (missing bars are "
                  "'missing' in the engine)")
    return diag, times


def _refuse_or_accept_off_grid(diag: FileDiagnosis, raw: RawTimes, convention: Convention,
                               calendar: TradingCalendar, grid: Grid, base: Fit, min_grid_share: float,
                               min_coverage: float) -> None:
    """The configured convention puts too few rows on the grid: name the convention that fits, or accept an
    extended-hours file, or refuse saying nothing fits."""
    tz = calendar.tz
    sample = _sample(len(raw.wall))
    own = instants(raw, convention)[sample]
    best: Fit | None = None
    for zone, times in _hypotheses(raw, sample, convention, tz):
        for stamp in STAMPS:
            f = fit(times, grid, stamp, tz, zone)
            if best is None or (f.share, f.coverage) > (best.share, best.coverage):
                best = f
    b = convention.bar_minutes
    where = f"the {b}-minute bar grid of {calendar.code}"
    seen = f"only {base.share:.0%} of the rows sit on {where}"
    other = "session" if calendar.alignment == "clock" else "clock"
    other_cal = replace(calendar, alignment=other)
    aligned = fit(own, Grid.spanning(other_cal, own), convention.stamp, tz, convention.timezone)
    if aligned.share >= min_grid_share and aligned.share > base.share and aligned.share >= (best.share if best else 0):
        diag.refuse(f"{seen} (market.bar_alignment: {calendar.alignment}), {aligned.share:.0%} on the "
                    f"{other}-aligned grid: looks like {other}-aligned bars (set market.bar_alignment: {other})")
        return
    if best is not None and best.share >= min_grid_share and (best.share > base.share):
        shift = _fmt_shift(best.shift - own) if best.shift is not None else ""
        # offsets written in the file that put the rows where the fitting hypothesis does are right: only the
        # stamp (or nothing) differs, and the message must name market.files_stamp, not the offsets
        offsets_right = raw.aware and best.shift is not None and _median_minutes(best.shift - own) == 0
        same_zone = (best.zone == convention.timezone and not raw.aware) or offsets_right
        stamp_note = f" stamped at their {best.stamp}" if best.stamp != convention.stamp else ""
        keys = []
        if not same_zone:
            keys.append(f"market.files_timezone: {best.zone}")
        if best.stamp != convention.stamp:
            keys.append(f"market.files_stamp: {best.stamp}")
        if raw.aware and not same_zone:
            diag.refuse(f"{seen} (the rows sit {shift}): the timestamps carry UTC offsets, yet read as wall "
                        f"time they look like {best.zone}{stamp_note}; market.files_timezone does not apply to "
                        "times written with an offset: fix the offsets in the file")
        elif same_zone:
            diag.refuse(f"{seen}: looks like bars{stamp_note} (set {', '.join(keys)})")
        else:
            diag.refuse(f"{seen}; the rows sit {shift}: looks like {best.zone} wall time{stamp_note} "
                        f"(set {', '.join(keys)})")
        diag.timezone = "offsets in the file" if offsets_right else best.zone
        diag.stamp = best.stamp
        return
    if base.session_share >= min_grid_share and base.coverage >= min_coverage:
        diag.warn(f"{1 - base.share:.0%} of the rows lie outside the regular session (extended hours?): "
                  "they are recorded skips")
        return
    diag.refuse(f"{seen} and no time zone or stamp convention fits (best: {best.zone if best else '—'}, "
                f"{best.share if best else 0:.0%}); check market.bar_minutes, market.bar_alignment, "
                "market.files_timezone and market.files_stamp against the file")


def _check_stamp(diag: FileDiagnosis, base: Fit, convention: Convention) -> None:
    """Rows at the session's open and none at its close mean bars stamped at their open (and the mirror)."""
    opens, closes = base.open_share >= STAMP_EDGE_SHARE, base.close_share >= STAMP_EDGE_SHARE
    if convention.stamp == "close" and opens and not closes:
        diag.stamp = "open"
        diag.refuse(f"rows sit at the session's open in {base.open_share:.0%} of the sessions and at its close in "
                    f"{base.close_share:.0%}: looks like bars stamped at their open (set market.files_stamp: open)")
    elif convention.stamp == "open" and closes and not opens:
        diag.stamp = "close"
        diag.refuse(f"rows sit at the session's close in {base.close_share:.0%} of the sessions and at its open "
                    f"in {base.open_share:.0%}: looks like bars stamped at their close "
                    "(set market.files_stamp: close)")
    elif diag.verdict == "refused":
        return
    elif opens != closes:
        diag.stamp = "open" if opens else "close"
    elif not opens:
        diag.stamp = "unknown"
        if diag.timezone == "offsets in the file":  # the offsets fix the instants: only the stamp is open
            diag.warn("no row at the session's open or close: the file covers only part of its sessions, so its "
                      f"stamp convention cannot be checked (read as market.files_stamp: {convention.stamp}; a "
                      "file stamped the other way is read one bar off)")
        else:  # decision: not guessed from volume or spread shapes (too weak on a few hours); said plainly
            diag.timezone = f"{convention.timezone} (unchecked)"
            diag.warn("no row at the session's open or close: the file covers only part of its sessions, so "
                      "neither its time zone nor its stamp convention can be checked (read as "
                      f"market.files_timezone: {convention.timezone}, market.files_stamp: {convention.stamp}); "
                      "a file written in another zone whose rows still fall inside the session (e.g. Chicago "
                      "wall time read as New York) is read shifted by the zones' difference: check both keys "
                      "against the vendor's documentation, or write the times with their UTC offset")

"""What the bar sensor decides, as a pure function (no Dagster), so it can be tested tick by tick.

Rules (SPEC §7): during market hours only; one run per newly closed bar, ``run_key`` = the bar, so a bar is
never traded twice; a missed bar is never traded late — only the latest closed bar is requested and the
bars skipped since the last request are recorded (they travel as a run tag and land in lineage).

After the close: the session's closing bar (16:00, 13:00 on a half day) is requested once, as an
**observe-only** run (tag ``tradegraph/observe_only``: features, marks and P&L are recorded; no order is
made — the engine itself refuses orders on that bar, whatever the tag says), while it is fresh (younger
than ``market.stale_after_intervals`` bar intervals: 16:09 yes, 16:10 no). No bar after the closing bar
exists in the calendar, so nothing else is ever requested until the next session's first bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.market.calendar import TradingCalendar, bar_key, parse_bar_key


@dataclass(frozen=True)
class Decision:
    bar: str | None                 # the bar to run, or None
    skipped: tuple[str, ...]        # closed bars since the cursor that will never be traded
    reason: str                     # why nothing is requested (when bar is None)
    observe_only: bool = False      # the bar is its session's closing bar: no order will be made


def decide(now: pd.Timestamp, cursor: str | None, cal: TradingCalendar) -> Decision:
    """The sensor's decision at market time ``now`` given the last requested bar ``cursor``."""
    latest = cal.latest_closed_bar(now)
    if latest is None:
        return Decision(None, (), "no closed bar in the calendar span yet")
    interval = pd.Timedelta(minutes=cal.bar_minutes)
    session = cal.session_bars(cal.session_of(latest))
    closing = latest == session[-1]
    if now - latest >= interval * get_cfg("market.stale_after_intervals"):
        return Decision(None, (), f"market closed (latest bar {bar_key(latest)} closed at {latest})")
    key = bar_key(latest)
    if cursor == key:
        return Decision(None, (), f"bar {key} already requested" + (" (the closing bar: market closed)"
                                                                    if closing else ""))
    if cursor is not None and parse_bar_key(cursor) > latest:
        return Decision(None, (), f"cursor {cursor} is ahead of the clock ({key})")
    skipped: tuple[str, ...] = ()
    if cursor is not None:  # bars missed in this session (earlier sessions' misses are not listed)
        skipped = tuple(bar_key(t) for t in session if parse_bar_key(cursor) < t < latest)
    return Decision(key, skipped, "", closing)

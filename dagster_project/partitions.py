"""One partition per regular-session bar of the trading calendar; the key is the bar close in UTC.

Why static keys from the calendar rather than a cron TimeWindowPartitionsDefinition: a cron over trading
hours cannot express half days (2026-11-27 ends at 13:00) or holidays without a long exclusion list, its last
window of the day runs to the next open, and listing its keys costs seconds per call
(``docs/dagster_notes.md``). Keys from ``exchange_calendars`` are exact and cheap (one vectorised
format over the cached session table: every run process and code-server load builds them). The span is
``market.partitions_start``…``market.partitions_end``; more than 100k keys is refused (narrow the span for
1-minute bars).
"""

from __future__ import annotations

import dagster as dg

from CONFIG.config_loader import get_cfg
from resources.market.calendar import bar_keys, get_calendar

MAX_PARTITIONS = 100_000


def bar_partition_keys() -> list[str]:
    cal = get_calendar()
    closes = cal.bar_closes(get_cfg("market.partitions_start"), get_cfg("market.partitions_end"))
    keys = bar_keys(closes)
    if len(keys) > MAX_PARTITIONS:
        raise ValueError(f"{len(keys)} bar partitions from market.partitions_start to market.partitions_end: "
                         f"keep it under {MAX_PARTITIONS} (narrow the span)")
    return keys


bar_partitions = dg.StaticPartitionsDefinition(bar_partition_keys())

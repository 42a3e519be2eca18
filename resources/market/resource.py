"""The market data resource: chooses the source named by config and answers point-in-time questions."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from assets.bars.logic import BarWindow, build_window
from CONFIG.config_loader import effective_config_hash, get_cfg
from resources.market.calendar import parse_bar_key
from resources.market.sources import MarketDataSource, make_source

_SOURCES: dict[tuple, MarketDataSource] = {}


class MarketDataResource(dg.ConfigurableResource):
    """Market data for the graph: ``simulator`` (embedded default), ``files`` or a vendor adapter.

    Empty fields fall back to CONFIG (``market.source``, ``market.files_dir``).
    """

    source: str = ""
    files_dir: str = ""

    def get_source(self) -> MarketDataSource:
        """One source object per process and configuration (the simulator caches its sessions)."""
        key = (self.source, self.files_dir, effective_config_hash())
        if key not in _SOURCES:
            _SOURCES.clear()
            _SOURCES[key] = make_source(self.source or None, self.files_dir or None)
        return _SOURCES[key]

    def window(self, bar: str) -> tuple[BarWindow, pd.DataFrame]:
        """The point-in-time ``bars`` window for the bar key (history of ``market.history_bars``)."""
        src = self.get_source()
        ts = parse_bar_key(bar)
        if not src.calendar.is_bar(ts):
            raise ValueError(f"{bar} is not a bar close of the {src.calendar.code} calendar "
                             f"({src.calendar.bar_minutes}m bars)")
        times = src.calendar.previous_bars(ts, get_cfg("market.history_bars"))
        raw = src.history(ts, len(times))
        adv = src.adv_shares(src.calendar.session_of(ts))
        return build_window(bar, ts, times, raw, src.symbols(), adv)

"""The market data resource: chooses the source named by config and answers point-in-time questions."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from assets.bars.logic import BarWindow, build_window
from CONFIG.config_loader import effective_config_hash, get_cfg
from resources.credentials import ALPACA_KEY_ENV, ALPACA_SECRET_ENV
from resources.market.calendar import parse_bar_key
from resources.market.sources import MarketDataSource, make_source

_SOURCES: dict[tuple, MarketDataSource] = {}


class MarketDataResource(dg.ConfigurableResource):
    """Market data for the graph: ``market.source`` = ``simulator`` (embedded default), ``files``
    (``market.files_dir``), ``alpaca`` (Alpaca's market data API; keys APCA_API_KEY_ID / APCA_API_SECRET_KEY from
    the code location's environment) or a vendor adapter. No field: the source and its folder come from the
    deployment's configuration, never from a launch (Dagster rejects run config for this resource)."""

    @classmethod
    def from_config(cls) -> MarketDataResource:
        """The resource (kept for callers: there is nothing to configure per launch)."""
        return cls()

    def get_source(self) -> MarketDataSource:
        """One source object per process and configuration (the simulator caches its sessions)."""
        source = get_cfg("market.source")
        keys = ((dg.EnvVar(ALPACA_KEY_ENV).get_value() or None, dg.EnvVar(ALPACA_SECRET_ENV).get_value() or None)
                if source == "alpaca" else (None, None))
        key = (effective_config_hash(), keys[0] is not None)
        if key not in _SOURCES:
            _SOURCES.clear()
            _SOURCES[key] = make_source(None, None, keys)
        return _SOURCES[key]

    def window(self, bar: str) -> tuple[BarWindow, pd.DataFrame]:
        """The point-in-time ``bars`` window for the bar key (history of ``market.history_bars``), with the rows
        the source skipped in (previous bar close, bar close], its split-like jumps inside the window and the
        corporate actions in effect (sources without them: none)."""
        src = self.get_source()
        ts = parse_bar_key(bar)
        if not src.calendar.is_bar(ts):
            raise ValueError(f"{bar} is not a bar close of the {src.calendar.code} calendar "
                             f"({src.calendar.bar_minutes}m bars, market.bar_alignment: {src.calendar.alignment})")
        times = src.calendar.previous_bars(ts, get_cfg("market.history_bars"))
        raw = src.history(ts, len(times))
        adv = src.adv_shares(src.calendar.session_of(ts))
        prev = src.calendar.previous_bars(ts, 2)
        skips, parts = None, None
        if hasattr(src, "skips_between"):
            parts = [src.skips_between(prev[0] if len(prev) > 1 else None, ts), src.unplaced_skips()]
        elif hasattr(src, "drain_skips"):  # a vendor source's own skips (rows it would not deliver)
            parts = [src.drain_skips()]
        if parts is not None:
            skips = pd.concat([q for q in parts if len(q)], ignore_index=True) if any(len(q) for q in parts) else None
        # every split-like jump up to the bar, also before the window: a hold lasts until an adjustments entry
        # explains the jump (the book is on the old basis for as long as it is not adjusted)
        flags = src.flags_between(None, ts) if hasattr(src, "flags_between") else None
        adjustments = src.adjustments_until(ts) if hasattr(src, "adjustments_until") else None
        if adjustments is not None:  # only the actions that touch the window (later ones are not known yet)
            adjustments = adjustments[(adjustments["effective_open"] > times[0]).to_numpy()].reset_index(drop=True)
        return build_window(bar, ts, times, raw, src.symbols(), adv, skips=skips, flags=flags,
                            adjustments=adjustments)

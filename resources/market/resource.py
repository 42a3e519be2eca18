"""The market data resource: chooses the source named by config and answers point-in-time questions."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow, build_windows
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
        corporate actions in effect (sources without them: none). The period of one bar (:meth:`windows`)."""
        return self.windows([bar])[0]

    def windows(self, bars: list[str]) -> list[tuple[BarWindow, pd.DataFrame]]:
        """The windows of many bars, each exactly what :meth:`window` gives for it alone.

        Consecutive bar closes of the calendar share one period: its history is read, validated and pivoted
        once and each bar's window is a view of it (``assets.bars.logic.build_windows``); point in time as
        :meth:`window` (bar t's window holds only rows ≤ t and the actions in effect at t). A gap in ``bars``
        starts a new period. A source that hands out its own skips only once (``drain_skips``: a vendor's) is
        read bar by bar, so each bar records the skips it saw."""
        src = self.get_source()
        stamps = [parse_bar_key(b) for b in bars]
        for bar, ts in zip(bars, stamps, strict=True):
            if not src.calendar.is_bar(ts):
                raise ValueError(f"{bar} is not a bar close of the {src.calendar.code} calendar "
                                 f"({src.calendar.bar_minutes}m bars, market.bar_alignment: {src.calendar.alignment})")
        if len(bars) > 1 and hasattr(src, "drain_skips") and not hasattr(src, "skips_between"):
            return [w for bar in bars for w in self.windows([bar])]
        out: list[tuple[BarWindow, pd.DataFrame]] = []
        start = 0
        while start < len(bars):  # one period per run of consecutive bars
            end = start + 1
            grid = src.calendar.previous_bars(stamps[-1], get_cfg("market.history_bars") + len(bars) - start)
            pos = grid.get_indexer(pd.DatetimeIndex(stamps[start:]))
            while end < len(bars) and pos[end - start - 1] >= 0 and pos[end - start] == pos[end - start - 1] + 1:
                end += 1
            out += self._period(src, bars[start:end], stamps[start:end])
            start = end
        return out

    def _period(self, src: MarketDataSource, bars: list[str],
                stamps: list[pd.Timestamp]) -> list[tuple[BarWindow, pd.DataFrame]]:
        """Windows of consecutive bar closes from one read of the source."""
        n_hist = get_cfg("market.history_bars")
        times = src.calendar.previous_bars(stamps[-1], n_hist + len(bars) - 1)
        ends = len(times) - len(bars) + np.arange(len(bars))  # each bar's row in the period's grid
        raw = src.history(stamps[-1], len(times))
        advs: dict[object, pd.Series] = {}
        adv, skips, flags, adjustments, spans = [], [], [], [], []
        for ts, end in zip(stamps, ends, strict=True):  # a loop over bars: the source's per-bar records
            lo = max(0, int(end) - n_hist + 1)
            spans.append((lo, int(end) + 1))
            session = src.calendar.session_of(ts)
            if session not in advs:
                advs[session] = src.adv_shares(session)
            adv.append(advs[session])
            parts = None
            if hasattr(src, "skips_between"):
                parts = [src.skips_between(times[end - 1] if end > 0 else None, ts), src.unplaced_skips()]
            elif hasattr(src, "drain_skips"):  # a vendor source's own skips (rows it would not deliver)
                parts = [src.drain_skips()]
            cut = None
            if parts is not None:
                cut = pd.concat([q for q in parts if len(q)], ignore_index=True) if any(len(q) for q in parts) \
                    else None
            skips.append(cut)
            # every split-like jump up to the bar, also before the window: a hold lasts until an adjustments
            # entry explains the jump (the book is on the old basis for as long as it is not adjusted)
            flags.append(src.flags_between(None, ts) if hasattr(src, "flags_between") else None)
            actions = src.adjustments_until(ts) if hasattr(src, "adjustments_until") else None
            if actions is not None:  # only the actions that touch the window (later ones are not known yet)
                actions = actions[(actions["effective_open"] > times[lo]).to_numpy()].reset_index(drop=True)
            adjustments.append(actions)
        return build_windows(bars, pd.DatetimeIndex(stamps), times, raw, src.symbols(), adv, spans, skips=skips,
                             flags=flags, adjustments=adjustments)

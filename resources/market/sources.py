"""Market data sources behind one interface: the embedded simulator, a directory of files, a vendor.

Every source answers point-in-time questions only: the bars up to a bar close, the ADV of the sessions
strictly before a session, the latest closed bar at a wall-clock instant. Nothing after the asked bar is
ever read, so the features of bar t cannot depend on later data.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.market.calendar import TradingCalendar, get_calendar
from resources.market.contract import DataError
from resources.market.files import FilesSource
from resources.market.simulator import BAR_COLUMNS, MarketSimulator

__all__ = ["DataError", "FilesSource", "MarketDataSource", "SimulatorSource", "VendorClient", "VendorSource",
           "make_source"]


class MarketDataSource(Protocol):
    """What the engine needs from market data (all times UTC bar closes)."""

    calendar: TradingCalendar

    def symbols(self) -> np.ndarray: ...

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        """Bars (``BAR_COLUMNS``) of the ``n_bars`` bar closes up to and including ``bar``."""

    def adv_shares(self, session: dt.date) -> pd.Series:
        """Average daily volume over ``features.adv_sessions`` sessions strictly before ``session``."""

    # Optional (the files source has them; a source without them has no skips, flags or actions):
    #   skips_between(start, end) / unplaced_skips() -> rows skipped at load (file, symbol, ts, rule, rows)
    #   flags_between(start, end) -> split-like jumps (symbol, ts, split_ratio, reason)
    #   adjustments_until(bar) -> corporate actions effective by the bar (resources/market/adjustments.py)


class SimulatorSource:
    """The embedded default: the deterministic simulated market."""

    def __init__(self, sim: MarketSimulator | None = None):
        self.sim = sim or MarketSimulator()
        self.calendar = self.sim.cal

    def symbols(self) -> np.ndarray:
        return self.sim.symbols

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        closes = self.calendar.previous_bars(bar, n_bars)
        return self.sim.bars_between(closes[0], closes[-1])

    def adv_shares(self, session: dt.date) -> pd.Series:
        return self.sim.adv_shares(session, get_cfg("features.adv_sessions"))


class VendorClient(Protocol):
    """What a real market data vendor's client must offer (an adapter wraps the vendor's library)."""

    def get_bars(self, symbols: list[str], start: pd.Timestamp, end: pd.Timestamp,
                 bar_minutes: int) -> pd.DataFrame: ...

    def get_daily_volume(self, symbols: list[str], sessions: list[dt.date]) -> pd.DataFrame: ...


class VendorSource:
    """A real vendor behind the same interface; needs a :class:`VendorClient` and a universe."""

    def __init__(self, client: VendorClient, symbols: list[str], calendar: TradingCalendar | None = None):
        self.client, self._symbols = client, np.array(sorted(symbols))
        self.calendar = calendar or get_calendar()

    def symbols(self) -> np.ndarray:
        return self._symbols

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        closes = self.calendar.previous_bars(bar, n_bars)
        frame = self.client.get_bars(list(self._symbols), closes[0], closes[-1], self.calendar.bar_minutes)
        return frame[BAR_COLUMNS].sort_values(["ts", "symbol"], kind="mergesort").reset_index(drop=True)

    def adv_shares(self, session: dt.date) -> pd.Series:
        days = [d for d in self.calendar.sessions(None, session) if d < session][-get_cfg("features.adv_sessions"):]
        vols = self.client.get_daily_volume(list(self._symbols), days)
        return vols.groupby("symbol")["volume"].mean().rename("adv_shares")


def make_source(kind: str | None = None, files_dir: str | None = None,
                alpaca_keys: tuple[str | None, str | None] = (None, None)) -> MarketDataSource:
    """The source named by ``market.source`` (or ``kind``). ``alpaca_keys``: a resource's ``EnvVar`` values
    (else the environment's ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY``)."""
    kind = kind or get_cfg("market.source")
    if kind == "alpaca":
        from resources.credentials import AlpacaKeys
        from resources.market.alpaca import AlpacaSource

        return AlpacaSource(AlpacaKeys.resolve(*alpaca_keys))
    if kind == "simulator":
        return SimulatorSource()
    if kind == "files":
        directory = files_dir or get_cfg("market.files_dir")
        if not directory:
            raise DataError("market.source=files needs market.files_dir")
        return FilesSource(directory)
    raise DataError("market.source=vendor needs a VendorClient: construct VendorSource(client, symbols) "
                    "in resources/market/resource.py for your vendor's library")

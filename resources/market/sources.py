"""Market data sources behind one interface: the embedded simulator, a directory of files, a vendor.

Every source answers point-in-time questions only: the bars up to a bar close, the ADV of the sessions
strictly before a session, the latest closed bar at a wall-clock instant. Nothing after the asked bar is
ever read, so the features of bar t cannot depend on later data.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.market.calendar import TradingCalendar, get_calendar
from resources.market.simulator import BAR_COLUMNS, MarketSimulator

PRICE_COLUMNS = ["open", "high", "low", "close", "bid", "ask"]


class DataError(ValueError):
    """Market data that cannot be used; the message names the file, row and rule."""


class MarketDataSource(Protocol):
    """What the engine needs from market data (all times UTC bar closes)."""

    calendar: TradingCalendar

    def symbols(self) -> np.ndarray: ...

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        """Bars (``BAR_COLUMNS``) of the ``n_bars`` bar closes up to and including ``bar``."""

    def adv_shares(self, session: dt.date) -> pd.Series:
        """Average daily volume over ``features.adv_sessions`` sessions strictly before ``session``."""


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


class FilesSource:
    """A directory of ``<SYMBOL>.parquet`` or ``<SYMBOL>.csv`` files, one row per bar.

    Schema: ``ts`` (bar close; tz-aware, or naive meaning UTC), ``open, high, low, close, volume`` and
    optionally ``bid, ask`` (absent: estimated from the bar as close ± ¼·(high−low)/close, floored at 1 bp).
    File-level faults are errors naming the file and row: duplicated or out-of-order timestamps, a missing
    column. Row-level faults are recorded skips (the rest trades): high < low, a non-positive price, NaN
    volume, a bar that is not a close of the trading calendar; see :attr:`skips`.
    """

    def __init__(self, directory: str | Path, calendar: TradingCalendar | None = None):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise DataError(f"market.files_dir {self.dir} is not a directory")
        self.calendar = calendar or get_calendar()
        self._frames: dict[str, pd.DataFrame] = {}
        self.skips: list[dict] = []
        self._load()

    def _files(self) -> list[Path]:
        files = sorted(p for p in self.dir.iterdir() if p.suffix in (".parquet", ".csv"))
        if not files:
            raise DataError(f"{self.dir}: no .parquet or .csv bar files")
        return files

    def _load(self) -> None:
        for path in self._files():
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            self._frames[path.stem] = self._check_file(path, frame)

    def _check_file(self, path: Path, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("ts", "open", "high", "low", "close", "volume") if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}")
        ts = pd.to_datetime(frame["ts"], utc=True)
        dup = ts.duplicated(keep="first").to_numpy()
        if dup.any():
            row = int(np.argmax(dup))
            raise DataError(f"{path}: row {row}: duplicated timestamp {ts.iloc[row]} (rule: unique bars)")
        back = (ts.diff() <= pd.Timedelta(0)).to_numpy()
        if back.any():
            row = int(np.argmax(back))
            raise DataError(f"{path}: row {row}: timestamp {ts.iloc[row]} is not after the previous row "
                            "(rule: bars in time order)")
        out = frame.assign(ts=ts, symbol=path.stem)
        if "bid" not in out or "ask" not in out:
            half = np.maximum((out["high"] - out["low"]) / 4, out["close"] * 0.5e-4)
            out["bid"], out["ask"] = out["close"] - half, out["close"] + half
        return self._drop_bad_rows(path, out[BAR_COLUMNS])

    def _drop_bad_rows(self, path: Path, frame: pd.DataFrame) -> pd.DataFrame:
        prices = frame[PRICE_COLUMNS].to_numpy(dtype=float)
        rules = {
            "high < low": (frame["high"] < frame["low"]).to_numpy(),
            "non-positive or missing price": ~(prices > 0).all(axis=1),
            "NaN volume": frame["volume"].isna().to_numpy(),
        }
        closes = self.calendar.bar_closes(frame["ts"].min().date(), frame["ts"].max().date()) \
            if len(frame) else pd.DatetimeIndex([], tz="UTC")
        rules["bar outside the session"] = ~frame["ts"].isin(closes).to_numpy()
        bad = np.zeros(len(frame), dtype=bool)
        for rule, mask in rules.items():
            for row in np.nonzero(mask & ~bad)[0]:
                self.skips.append({"file": str(path), "row": int(row), "rule": rule,
                                   "ts": frame["ts"].iloc[row].isoformat()})
            bad |= mask
        return frame[~bad].reset_index(drop=True)

    def symbols(self) -> np.ndarray:
        return np.array(sorted(self._frames))

    def history(self, bar: pd.Timestamp, n_bars: int) -> pd.DataFrame:
        closes = self.calendar.previous_bars(bar, n_bars)
        parts = [f[(f["ts"] >= closes[0]) & (f["ts"] <= closes[-1])] for _, f in sorted(self._frames.items())]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=BAR_COLUMNS)
        return frame.sort_values(["ts", "symbol"], kind="mergesort").reset_index(drop=True)

    def adv_shares(self, session: dt.date) -> pd.Series:
        n = get_cfg("features.adv_sessions")
        days = self.calendar.sessions(None, session)
        prior = set(d for d in days if d < session)
        prior = set(sorted(prior)[-n:])
        out = {}
        for sym, f in sorted(self._frames.items()):
            local = f["ts"].map(self.calendar.session_of)
            daily = f[local.isin(prior)].groupby(local)["volume"].sum()
            out[sym] = float(daily.mean()) if len(daily) else np.nan
        return pd.Series(out, name="adv_shares")


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

"""The market as the venue sees it at one bar, and who may reach the live venue: shared by ``positions``
(settling the venue) and ``executions`` (sending orders), so both use the same quotes and the same rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from assets.take import indexer, taken
from resources.brokers.paper import FrameQuotes, Quote
from resources.market.calendar import bar_key, get_calendar
from resources.market.clock import market_now


def quotes_frame(snapshot: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Per symbol (index) the :class:`Quote` of this bar: bid/ask/mid, open, close and volume from the
    snapshot (symbols without a usable bar: NaN), σ_daily and ADV from the features."""
    fast = _quotes_by_indexer(snapshot, features)
    if fast is not None:
        return fast
    f = features.set_index("symbol")
    s = snapshot[snapshot["status"] == "ok"].set_index("symbol").reindex(f.index)
    return pd.DataFrame({"mid": (s["bid"] + s["ask"]) / 2, "bid": s["bid"], "ask": s["ask"],
                         "volume": s["volume"], "sigma_daily_bps": f["sigma_daily_bps"],
                         "adv": f["adv_shares"], "open": s["open"], "close": s["close"]},
                        index=f.index)[list(Quote.__dataclass_fields__)]


def _quotes_by_indexer(snapshot: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame | None:
    """:func:`quotes_frame` with one indexer from the snapshot's ``ok`` rows to the features' symbols (no
    set_index of either table); None unless both sides' symbols are unique and the prices are float64."""
    prices = ("bid", "ask", "volume", "open", "close")
    if not all(snapshot[c].dtype == np.float64 for c in prices):
        return None
    symbols = pd.Index(features["symbol"])
    ok = (snapshot["status"] == "ok").to_numpy(dtype=bool)
    source = pd.Index(snapshot["symbol"].to_numpy()[ok])
    if not (symbols.is_unique and source.is_unique):
        return None
    at = indexer(source, symbols)
    col = {c: taken(at, snapshot[c].to_numpy()[ok]) for c in prices}
    return pd.DataFrame({"mid": (col["bid"] + col["ask"]) / 2, "bid": col["bid"], "ask": col["ask"],
                         "volume": col["volume"], "sigma_daily_bps": features["sigma_daily_bps"].to_numpy(),
                         "adv": features["adv_shares"].to_numpy(), "open": col["open"], "close": col["close"]},
                        index=symbols)[list(Quote.__dataclass_fields__)]


def quotes_provider(snapshot: pd.DataFrame, features: pd.DataFrame) -> FrameQuotes:
    return FrameQuotes(quotes_frame(snapshot, features))


def live_refusal(bar: str) -> str | None:
    """Why a live run may not reach the broker for this bar (it is not the latest closed bar), or None."""
    now = market_now()
    latest = get_calendar().latest_closed_bar(now)
    if latest is None or bar_key(latest) != bar:
        return (f"refused: {bar} is not the live bar (market time {now:%Y-%m-%d %H:%M:%S}Z, latest closed bar "
                f"{bar_key(latest) if latest is not None else 'none'}); a past bar never reaches a broker")
    return None

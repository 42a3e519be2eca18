"""The market as the venue sees it at one bar, and who may reach the live venue: shared by ``positions``
(settling the venue) and ``executions`` (sending orders), so both use the same quotes and the same rule."""

from __future__ import annotations

import pandas as pd

from resources.brokers.paper import FrameQuotes, Quote
from resources.market.calendar import bar_key, get_calendar
from resources.market.clock import market_now


def quotes_frame(snapshot: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Per symbol (index) the :class:`Quote` of this bar: bid/ask/mid, open, close and volume from the
    snapshot (symbols without a usable bar: NaN), σ_daily and ADV from the features."""
    f = features.set_index("symbol")
    s = snapshot[snapshot["status"] == "ok"].set_index("symbol").reindex(f.index)
    return pd.DataFrame({"mid": (s["bid"] + s["ask"]) / 2, "bid": s["bid"], "ask": s["ask"],
                         "volume": s["volume"], "sigma_daily_bps": f["sigma_daily_bps"],
                         "adv": f["adv_shares"], "open": s["open"], "close": s["close"]},
                        index=f.index)[list(Quote.__dataclass_fields__)]


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

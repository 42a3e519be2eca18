"""Venue harnesses for the broker tests: the paper broker, Alpaca (mocked HTTP) and IBKR (faked wire client).

Each harness gives a :class:`Broker` and ``advance(ratio)``: make the venue trade what is due. For a real
venue that is the next poll answering filled; for the paper venue it is working its open orders at the
next bar (its next-bar fill model: a market order fills at the next bar's open, a market-on-close order at the
session's closing bar, so ``advance`` settles the next bar, and the closing bar when a MOC order is working).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pandas as pd
import pytest
import responses

from CONFIG.config_loader import use_config
from resources.brokers.paper import BarClock, FrameQuotes, PaperBroker
from resources.brokers.protocol import Broker, OrderType
from resources.credentials import AlpacaKeys

KEY_ID, SECRET = "PKTEST1234567890ABCD", "sEcReT-0123456789abcdefghijklmnopqrstuv"
PRICES = {"AAA": 100.0, "BBB": 50.0}
T0 = dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC)


@dataclass
class Venue:
    name: str
    broker: Broker
    advance: Callable[[float], None]
    order_types: frozenset[OrderType]
    partial: bool                          # the harness can fill part of an order
    extra: dict = field(default_factory=dict)


def _paper(tmp_path, memory: bool = False) -> Venue:
    """The paper venue on its file book, or (``memory``) on the replay's memory book loaded from that file."""
    from resources.market.calendar import get_calendar

    frame = pd.DataFrame({s: (p, p - 0.01, p + 0.01, 1e9, 150.0, 1e9, p, p) for s, p in PRICES.items()},
                         index=["mid", "bid", "ask", "volume", "sigma_daily_bps", "adv", "open", "close"]).T
    clock = BarClock(T0)
    make = PaperBroker.in_memory if memory else PaperBroker
    broker = make(tmp_path / "paper.duckdb", quotes=FrameQuotes(frame), clock=clock)
    closing_bar = get_calendar().session_bars(T0.date())[-1].to_pydatetime()

    def advance(ratio: float = 1.0) -> None:
        clock.set(clock() + dt.timedelta(minutes=5))
        broker.settle()
        if any(o.order_type is OrderType.MOC for o in broker.open_orders()):
            clock.set(closing_bar)
            broker.settle()

    return Venue("paper-memory" if memory else "paper", broker, advance, frozenset({OrderType.MARKET, OrderType.MOC}),
                 partial=False)


def _alpaca(rsps: responses.RequestsMock) -> Venue:
    from resources.brokers.alpaca.execution import AlpacaBroker
    from tests.brokers.alpaca_mock import AlpacaVenue

    venue = AlpacaVenue(prices=PRICES).install(rsps)
    sleeps: list[float] = []
    broker = AlpacaBroker(AlpacaKeys(KEY_ID, SECRET), sleep=sleeps.append, clock=lambda: 1_750_000_000.0)
    return Venue("alpaca", broker, lambda ratio=1.0: venue.advance(ratio), frozenset(OrderType), partial=True,
                 extra={"venue": venue, "sleeps": sleeps})


def _ibkr() -> Venue:
    from resources.brokers.ibkr.execution import IbkrBroker, IbkrSettings
    from tests.brokers.fake_ib import FakeGateway, fake_ib

    gateway = FakeGateway(PRICES)
    sleeps: list[float] = []
    settings = IbkrSettings("127.0.0.1", 4002, 17, "", "SMART", "USD", 1.0, 3, 0.5, 4.0, 0.05, False)
    broker = IbkrBroker(settings, ib_factory=lambda: fake_ib(gateway), sleep=sleeps.append)
    return Venue("ibkr", broker, lambda ratio=1.0: gateway.advance(ratio), frozenset(OrderType), partial=True,
                 extra={"gateway": gateway, "sleeps": sleeps})


@pytest.fixture
def venue_config(tmp_path) -> Iterator[None]:
    with use_config({"paths": {"paper_broker_db": str(tmp_path / "paper.duckdb")},
                     "broker": {"partial_remainder": "carry", "submit_timeout_seconds": 2.0}}):
        yield


@pytest.fixture
def alpaca(venue_config) -> Iterator[Venue]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield _alpaca(rsps)


@pytest.fixture
def ibkr(venue_config) -> Iterator[Venue]:
    v = _ibkr()
    yield v
    v.broker.close()


@pytest.fixture(params=["paper", "paper-memory", "alpaca", "ibkr"])
def venue(request, tmp_path, venue_config) -> Iterator[Venue]:
    if request.param.startswith("paper"):
        v = _paper(tmp_path, memory=request.param == "paper-memory")
        yield v
        v.broker.close()
    elif request.param == "alpaca":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            yield _alpaca(rsps)
    else:
        v = _ibkr()
        yield v
        v.broker.close()

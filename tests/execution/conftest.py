"""Execution-layer fixtures: config pointing every state file at tmp_path, a fixed market, a bar clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pandas as pd
import pytest

from CONFIG.config_loader import use_config
from resources.brokers.paper import BarClock, FrameQuotes, PaperBroker, Settlement

T0 = dt.datetime(2025, 6, 2, 14, 0, tzinfo=dt.UTC)  # a bar close (10:00 New York)
T1 = T0 + dt.timedelta(minutes=5)                    # the next bar: a market order decided at T0 fills here
SESSION = dt.date(2025, 6, 2)
CLOSE = dt.datetime(2025, 6, 2, 20, 0, tzinfo=dt.UTC)  # the session's closing bar (16:00 New York)
QUOTE_COLUMNS = ["mid", "bid", "ask", "volume", "sigma_daily_bps", "adv", "open", "close"]

# mid, bid, ask, bar volume (shares), σ_daily (bps), ADV (shares), the bar's open and close
MARKET = {
    "AAA": (100.0, 99.99, 100.01, 1000.0, 150.0, 1_000_000.0, 100.0, 100.0),
    "BBB": (50.0, 49.99, 50.01, 10_000.0, 200.0, 4_000_000.0, 50.0, 50.0),
}


def make_quotes(**changes: tuple[float, ...]) -> FrameQuotes:
    rows = {**MARKET, **changes}
    return FrameQuotes(pd.DataFrame.from_dict(rows, orient="index", columns=QUOTE_COLUMNS[:len(next(iter(
        rows.values())))]))


def next_bar(broker: PaperBroker, clock: BarClock, minutes: int = 5, quotes: FrameQuotes | None = None) -> Settlement:
    """Move the clock ``minutes`` on and settle the venue there (with ``quotes`` as that bar's market)."""
    clock.set(clock.ts + dt.timedelta(minutes=minutes))
    if quotes is not None:
        broker.quotes = quotes
    return broker.settle()


@pytest.fixture
def configure(tmp_path) -> Iterator[Callable[..., None]]:
    """``configure(broker={...}, kill_switch={...})``: overrides on top of tmp paths (nesting keeps paths).
    The kill switch at the tmp path is armed (``init``), as every deployment's first start does."""
    from tests.conftest import arm_switches

    stack = ExitStack()

    def apply(**sections: dict) -> None:
        over: dict = {"paths": {"paper_broker_db": str(tmp_path / "paper.duckdb"),
                                "kill_switch_state": str(tmp_path / "kill_switch.json")}}
        for name, values in sections.items():
            over.setdefault(name, {}).update(values)
        stack.enter_context(use_config(over))

    apply()
    arm_switches(tmp_path / "kill_switch.json")
    with stack:
        yield apply


@pytest.fixture
def limits(configure):
    """The kill switch's limits from the test configuration."""
    from resources.kill_switch.logic import Limits

    return Limits.from_config()


@pytest.fixture
def opened(limits):
    """A kill-switch state opened for ``SESSION`` at $1 M of equity."""
    from resources.kill_switch.logic import KillSwitchState, on_session_open

    return on_session_open(KillSwitchState(), SESSION, 1_000_000.0, T0, limits=limits).state


@pytest.fixture
def clock() -> BarClock:
    return BarClock(T0)


@pytest.fixture
def book_kind() -> str:
    """Where the paper venue's book lives: ``file`` (DuckDB) here; ``test_paper_broker`` runs both."""
    return "file"


@pytest.fixture
def make_broker(configure, book_kind) -> Iterator[Callable[..., PaperBroker]]:
    """``make_broker(db_path=None, quotes=..., clock=...)``: a paper broker on the ``book_kind`` book (a memory
    book is a fresh account in memory: ``db_path`` is ignored)."""
    made: list[PaperBroker] = []

    def make(db_path=None, **kw) -> PaperBroker:
        made.append(PaperBroker(db_path, **kw) if book_kind == "file" else PaperBroker.in_memory(**kw))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker, clock) -> PaperBroker:
    return make_broker(quotes=make_quotes(), clock=clock)

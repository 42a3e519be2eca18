"""The broker as a Dagster resource: builds the adapter named by ``broker.adapter``.

Why a factory method instead of one long-lived broker object: the paper adapter needs the fill bar's
quotes and clock, which only the asset knows, and must not keep the DuckDB file open between calls. A
real broker adapter is added by one more branch in :meth:`BrokerResource.get_broker` (and its name in
CONFIG/schema.py ``broker.adapter``); everything downstream speaks :class:`Broker`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from dagster import ConfigurableResource

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.paper import PaperBroker, QuoteProvider
from resources.brokers.protocol import Broker


class BrokerResource(ConfigurableResource):
    """``adapter``/``db_path`` default to ``broker.adapter`` / ``paths.paper_broker_db`` from config."""

    adapter: str | None = None
    db_path: str | None = None

    def adapter_name(self) -> str:
        return self.adapter or get_cfg("broker.adapter")

    def get_broker_for(self, account: str, quotes: QuoteProvider | None = None,
                       clock: Callable[[], dt.datetime] | None = None) -> Broker:
        """The ``live`` account (the configured adapter) or the ``replay`` paper account — replay can only
        ever reach its own paper book (``paths.replay_broker_db``)."""
        if account == "replay":
            return PaperBroker(resolve_path("paths.replay_broker_db"), quotes=quotes, clock=clock)
        if account != "live":
            raise ValueError(f"unknown account {account!r} (live | replay)")
        return self.get_broker(quotes, clock)

    def get_broker(self, quotes: QuoteProvider | None = None,
                   clock: Callable[[], dt.datetime] | None = None) -> Broker:
        """A broker ready to trade: ``quotes``/``clock`` are the fill bar's market and time (paper only;
        queries such as positions and account work without them)."""
        name = self.adapter_name()
        if name == "paper":
            return PaperBroker(self.db_path, quotes=quotes, clock=clock)
        raise ValueError(f"broker.adapter {name!r}: no such adapter (available: paper)")

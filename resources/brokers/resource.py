"""The broker as a Dagster resource: builds the adapter named by ``broker.kind`` (paper | alpaca | ibkr).

Why a factory method instead of one long-lived broker object: the paper adapter needs the fill bar's
quotes and clock, which only the asset knows, and must not keep the DuckDB file open between calls. The
real venues are built once per process and configuration (an IB API client id can hold one connection;
Alpaca's order-id map is worth keeping) and reused by every asset of the run.

Resources are configured by the deployment, not by a launch (issue 15): the resource has **no field**, so
Dagster rejects any run config entry for it (``DagsterInvalidConfigError``) before a run starts. The kind
(``broker.kind``) and the paper broker's file (``paths.paper_broker_db``) come from CONFIG; credentials are read
inside the resource with ``dagster.EnvVar(...).get_value()`` from the code location's environment (never a
config field, never in the run config, the UI or the event log).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from dagster import ConfigurableResource, EnvVar

from CONFIG.config_loader import get_cfg
from resources.brokers.paper import QuoteProvider
from resources.brokers.protocol import Broker
from resources.brokers.venues import KINDS, broker_for, broker_kind, forget_venues, live_broker

__all__ = ["KINDS", "BrokerResource", "forget_venues", "venue_label"]


def venue_label(kind: str) -> str:
    """Where orders of ``kind`` go, for the UI (no secret: endpoints and the gateway address)."""
    if kind == "alpaca":
        return "Alpaca " + ("LIVE-MONEY api.alpaca.markets" if get_cfg("broker.live_money")
                            else "paper-api.alpaca.markets")
    if kind == "ibkr":
        live = "live-money allowed" if get_cfg("broker.live_money") else "paper accounts only"
        return f"IB Gateway/TWS {get_cfg('broker.ibkr.host')}:{get_cfg('broker.ibkr.port')} ({live})"
    return "embedded paper broker (paths.paper_broker_db)"


class BrokerResource(ConfigurableResource):
    """Where the live account's orders go: ``broker.kind`` = ``paper`` (the embedded paper broker at
    ``paths.paper_broker_db``, default), ``alpaca`` (Alpaca's paper endpoint unless live money is switched on
    twice) or ``ibkr`` (TWS / IB Gateway). Replay mode always trades its own paper account. Read from the
    deployment's configuration and environment (APCA_API_KEY_ID, APCA_API_SECRET_KEY, TRADEGRAPH_LIVE_MONEY);
    nothing here can be set by a launch."""

    @classmethod
    def from_config(cls) -> BrokerResource:
        """The resource (kept for callers: there is nothing to configure per launch)."""
        return cls()

    @staticmethod
    def venue(kind: str | None = None) -> str:
        """``broker.kind`` and where its orders go (shown in ``executions``' metadata)."""
        kind = kind or get_cfg("broker.kind")
        return f"{kind}: {venue_label(kind)}"

    def kind_name(self) -> str:
        return broker_kind()

    def adapter_name(self) -> str:
        """The configured kind (the name the assets record as the book's source)."""
        return self.kind_name()

    def get_broker_for(self, account: str, quotes: QuoteProvider | None = None,
                       clock: Callable[[], dt.datetime] | None = None) -> Broker:
        """The ``live`` account (the configured adapter) or the ``replay`` paper account — replay can only
        ever reach its own paper book (``paths.replay_broker_db``): :func:`resources.brokers.venues.broker_for`."""
        return broker_for(account, quotes, clock, env=_env)

    def get_broker(self, quotes: QuoteProvider | None = None,
                   clock: Callable[[], dt.datetime] | None = None) -> Broker:
        """A broker ready to trade: ``quotes``/``clock`` are the fill bar's market and time (paper only;
        queries such as positions and account work without them; a real venue has its own)."""
        return live_broker(quotes, clock, env=_env)


def _env(name: str) -> str | None:
    """A credential from the code location's environment (``dagster.EnvVar``), None when unset."""
    return EnvVar(name).get_value() or None

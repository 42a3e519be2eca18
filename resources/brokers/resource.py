"""The broker as a Dagster resource: builds the adapter named by ``broker.kind`` (paper | alpaca | ibkr).

Why a factory method instead of one long-lived broker object: the paper adapter needs the fill bar's
quotes and clock, which only the asset knows, and must not keep the DuckDB file open between calls. The
real venues are built once per process and configuration (an IB API client id can hold one connection;
Alpaca's order-id map is worth keeping) and reused by every asset of the run.

Credentials reach the resource as ``dagster.EnvVar`` fields, wired by :meth:`BrokerResource.from_config`
only for the venue the configuration names (an ``EnvVar`` whose variable is unset fails the run, so the
default paper setup must not name one). The UI and the recorded run config show the variables' names,
never their values; the fields are excluded from ``repr``. Outside Dagster (CLI paths building
``BrokerResource()``) the same variables are read from the environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.paper import PaperBroker, QuoteProvider
from resources.brokers.protocol import Broker
from resources.credentials import (
    ALPACA_KEY_ENV,
    ALPACA_SECRET_ENV,
    LIVE_MONEY_ENV,
    AlpacaKeys,
    live_money_allowed,
    require_live_money,
)

KINDS = ("paper", "alpaca", "ibkr")
_VENUES: dict[tuple, Broker] = {}


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
    """Where the live account's orders go: ``paper`` (the embedded paper broker, default), ``alpaca`` (Alpaca's
    paper endpoint unless live money is switched on twice) or ``ibkr`` (TWS / IB Gateway). Replay mode always
    trades its own paper account. Credentials come from environment variables (shown here by name only)."""

    kind: str = Field(default="", description="paper | alpaca | ibkr (empty: broker.kind from CONFIG)")
    venue: str = Field(default="", description="broker.kind and where its orders go (shown in the UI)")
    db_path: str | None = Field(default=None, description="paper broker file (default paths.paper_broker_db)")
    alpaca_api_key: str | None = Field(default=None, repr=False, description=f"env {ALPACA_KEY_ENV}")
    alpaca_secret_key: str | None = Field(default=None, repr=False, description=f"env {ALPACA_SECRET_ENV}")
    live_money_ack: str | None = Field(default=None, repr=False, description=f"env {LIVE_MONEY_ENV}")

    @classmethod
    def from_config(cls) -> BrokerResource:
        """The resource for the configured ``broker.kind``, with ``EnvVar`` fields for exactly the variables
        that venue needs (so the UI shows the kind, the venue and the variable names)."""
        kind = get_cfg("broker.kind")  # shown, not pinned: a run reads broker.kind from its own config
        fields: dict[str, Any] = {"venue": f"{kind}: {venue_label(kind)}"}
        if kind == "alpaca":
            fields.update(alpaca_api_key=EnvVar(ALPACA_KEY_ENV), alpaca_secret_key=EnvVar(ALPACA_SECRET_ENV))
        if kind != "paper" and get_cfg("broker.live_money"):
            fields["live_money_ack"] = EnvVar(LIVE_MONEY_ENV)
        return cls(**fields)

    def kind_name(self) -> str:
        kind = self.kind or get_cfg("broker.kind")
        if kind not in KINDS:
            raise ValueError(f"broker.kind {kind!r}: no such adapter (available: {', '.join(KINDS)})")
        return kind

    def adapter_name(self) -> str:
        """The configured kind (the name the assets record as the book's source)."""
        return self.kind_name()

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
        queries such as positions and account work without them; a real venue has its own)."""
        name = self.kind_name()
        if name == "paper":
            return PaperBroker(self.db_path, quotes=quotes, clock=clock)
        live = get_cfg("broker.live_money")
        if live:
            require_live_money(live, self.live_money_ack, f"broker.kind={name} with broker.live_money: true")
        if name == "alpaca":
            keys = AlpacaKeys.resolve(self.alpaca_api_key, self.alpaca_secret_key)
            fingerprint = hashlib.sha256("|".join(keys.secrets).encode()).hexdigest()
            key = ("alpaca", live, fingerprint)
            if key not in _VENUES:
                from resources.brokers.alpaca.execution import AlpacaBroker

                _VENUES[key] = AlpacaBroker(keys, live=live)
            return _VENUES[key]
        from resources.brokers.ibkr.execution import IbkrBroker, IbkrSettings

        settings = IbkrSettings.from_config()
        key = ("ibkr", settings)
        if key not in _VENUES:
            _VENUES[key] = IbkrBroker(settings, live_money=live_money_allowed(live, self.live_money_ack))
        return _VENUES[key]


def forget_venues() -> None:
    """Drop the process's venue adapters (tests; a configuration change)."""
    for broker in _VENUES.values():
        close = getattr(broker, "close", None)
        if close is not None:
            close()
    _VENUES.clear()

"""The broker adapter named by ``broker.kind`` (paper | alpaca | ibkr), built without Dagster.

Why a module of its own: the Dagster resource (:mod:`resources.brokers.resource`) and the kill switch's witness
(``tradegraph kill-switch …`` on a missing state file: no Dagster import, issue 15's fast CLI) build the same
adapter. Credentials come from ``env`` (a name → value function): the resource passes ``dagster.EnvVar``'s
reader, the CLI ``os.environ.get`` — the same process environment, read at the call.

The real venues are built once per process and configuration (an IB API client id can hold one connection;
Alpaca's order-id map is worth keeping) and reused; the paper adapter is built per call (it needs the fill
bar's quotes and clock, and must not keep the DuckDB file open between calls).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable

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
Env = Callable[[str], str | None]
_VENUES: dict[tuple, Broker] = {}


def os_env(name: str) -> str | None:
    """A credential from this process's environment (None when unset or empty)."""
    return os.environ.get(name) or None


def broker_kind() -> str:
    """``broker.kind``, checked against the adapters there are."""
    kind = get_cfg("broker.kind")
    if kind not in KINDS:
        raise ValueError(f"broker.kind {kind!r}: no such adapter (available: {', '.join(KINDS)})")
    return kind


def broker_for(account: str, quotes: QuoteProvider | None = None, clock: Callable[[], dt.datetime] | None = None,
               env: Env = os_env) -> Broker:
    """The ``live`` account (the configured adapter) or the ``replay`` paper account — replay can only ever
    reach its own paper book (``paths.replay_broker_db``). Raises ValueError for another account."""
    if account == "replay":
        return PaperBroker(resolve_path("paths.replay_broker_db"), quotes=quotes, clock=clock)
    if account != "live":
        raise ValueError(f"unknown account {account!r} (live | replay)")
    return live_broker(quotes, clock, env)


def live_broker(quotes: QuoteProvider | None = None, clock: Callable[[], dt.datetime] | None = None,
                env: Env = os_env) -> Broker:
    """The configured adapter, ready to trade: ``quotes``/``clock`` are the fill bar's market and time (paper
    only; a real venue has its own). Live money needs ``broker.live_money`` and the environment's consent."""
    name = broker_kind()
    if name == "paper":
        return PaperBroker(None, quotes=quotes, clock=clock)
    live = get_cfg("broker.live_money")
    if live:
        require_live_money(live, env(LIVE_MONEY_ENV), f"broker.kind={name} with broker.live_money: true")
    if name == "alpaca":
        keys = AlpacaKeys.resolve(env(ALPACA_KEY_ENV), env(ALPACA_SECRET_ENV))
        key = ("alpaca", live, hashlib.sha256("|".join(keys.secrets).encode()).hexdigest())
        if key not in _VENUES:
            from resources.brokers.alpaca.execution import AlpacaBroker

            _VENUES[key] = AlpacaBroker(keys, live=live)
        return _VENUES[key]
    from resources.brokers.ibkr.execution import IbkrBroker, IbkrSettings

    settings = IbkrSettings.from_config()
    key = ("ibkr", settings)
    if key not in _VENUES:
        _VENUES[key] = IbkrBroker(settings, live_money=live_money_allowed(live, env(LIVE_MONEY_ENV)))
    return _VENUES[key]


def forget_venues() -> None:
    """Drop the process's venue adapters (tests; a configuration change)."""
    for broker in _VENUES.values():
        close = getattr(broker, "close", None)
        if close is not None:
            close()
    _VENUES.clear()

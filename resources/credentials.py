"""Venue credentials and the live-money switch: read from the environment, never written anywhere.

Why here and not in CONFIG: the configuration is hashed and recorded in lineage (``configs``) with every run,
so a key in it would be a key in the lineage file. Credentials therefore have no config key at all (a
``TRADEGRAPH__…`` override naming one is an unknown-key error). Inside Dagster they reach the resources as
``dagster.EnvVar`` fields (the UI and the recorded run config show the variable's *name*); outside Dagster
(the replay and training CLIs) the same variables are read from ``os.environ``.

Never leaked: :class:`AlpacaKeys` has no repr of its values, and every error text that could carry venue
output goes through :func:`redact` before it is raised, logged or recorded.

Live money (README "Connect a real account"): a venue account that moves real money is used only when
``broker.live_money`` is true **and** the environment has ``TRADEGRAPH_LIVE_MONEY=yes``. Either alone is
refused, so neither a copied config file nor a stray shell variable can switch an engine to real money.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALPACA_KEY_ENV = "APCA_API_KEY_ID"          # Alpaca's own names for them
ALPACA_SECRET_ENV = "APCA_API_SECRET_KEY"
LIVE_MONEY_ENV = "TRADEGRAPH_LIVE_MONEY"
LIVE_MONEY_YES = "yes"
MASK = "***"


class CredentialsError(ValueError):
    """Credentials missing, or a live-money account without both switches. Names variables, never values."""


@dataclass(frozen=True, repr=False)
class AlpacaKeys:
    """An Alpaca key pair (trading and market data use the same one)."""

    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"AlpacaKeys(key_id={MASK}, secret={MASK})"

    __str__ = __repr__

    @property
    def secrets(self) -> tuple[str, str]:
        return (self.key_id, self.secret)

    @classmethod
    def resolve(cls, key_id: str | None, secret: str | None,
                environ: Mapping[str, str] | None = None) -> AlpacaKeys:
        """The keys given (a resource's ``EnvVar`` fields), else the environment's; an error naming the
        variables when either is missing."""
        env = os.environ if environ is None else environ
        key_id = key_id or env.get(ALPACA_KEY_ENV) or ""
        secret = secret or env.get(ALPACA_SECRET_ENV) or ""
        if not key_id or not secret:
            missing = [n for n, v in ((ALPACA_KEY_ENV, key_id), (ALPACA_SECRET_ENV, secret)) if not v]
            raise CredentialsError(f"Alpaca needs {' and '.join(missing)} in the environment (paper keys "
                                   "from the Alpaca dashboard; README: Connect a real account)")
        return cls(key_id, secret)


def redact(text: object, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***`` (secrets shorter than 4 characters are not searched:
    they would mask ordinary words and cannot be real keys)."""
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def live_money_allowed(config_switch: bool, env_value: str | None = None,
                       environ: Mapping[str, str] | None = None) -> bool:
    """True only when ``broker.live_money`` is true and ``TRADEGRAPH_LIVE_MONEY`` is ``yes`` (the value
    given, e.g. a resource's ``EnvVar`` field, else the environment's)."""
    env = os.environ if environ is None else environ
    value = env_value if env_value is not None else env.get(LIVE_MONEY_ENV, "")
    return bool(config_switch) and value.strip().lower() == LIVE_MONEY_YES


def require_live_money(config_switch: bool, env_value: str | None, what: str) -> None:
    """Raise :class:`CredentialsError` naming what is missing unless both live-money switches are on."""
    if live_money_allowed(config_switch, env_value):
        return
    missing = ([] if config_switch else ["broker.live_money: true"]) + (
        [] if live_money_allowed(True, env_value) else [f"{LIVE_MONEY_ENV}={LIVE_MONEY_YES}"])
    raise CredentialsError(f"{what} moves real money: refused without {' and '.join(missing)} "
                           "(both are required; README: Connect a real account)")

"""The kill switch as a Dagster resource: the file-backed :class:`KillSwitch` at ``paths.kill_switch_state``.

Why thin: the decisions live in ``logic.py`` (pure, tested without Dagster); this wrapper only picks the
state file (``paths.kill_switch_state``, from the deployment's configuration) and carries a HALTED verdict out to the broker
(:meth:`KillSwitchResource.enforce`), so every asset, job and the CLI share one behaviour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
from dagster import ConfigurableResource

from resources.brokers.protocol import Broker, BrokerError, OrderRequest, Side, SubmitResult
from resources.brokers.submit import submit_with_lookup
from resources.kill_switch.files import state_path_for, switch_for  # noqa: F401 — where callers find them
from resources.kill_switch.logic import CheckResult, KillSwitch, TradingState


class KillSwitchResource(ConfigurableResource):
    """The kill switch at ``paths.kill_switch_state`` with limits from ``kill_switch.*``, both read from the
    deployment's configuration when the code location loads. No field: a launch cannot point it at another
    state file (Dagster rejects any run config entry for it)."""

    def switch(self) -> KillSwitch:
        return self.switch_for("live")

    def switch_for(self, account: str) -> KillSwitch:
        """The live account's switch, or the replay account's own (so a replay never trips live trading),
        with the witness it asks when its state file is missing (``resources.kill_switch.witness``)."""
        return switch_for(account)

    def status(self, now: dt.datetime) -> CheckResult:
        return self.switch().status(now)

    def pre_trade_check(self, orders: pd.DataFrame | Sequence[Any], **kwargs: Any) -> CheckResult:
        """See :func:`resources.kill_switch.logic.pre_trade_check`; the new state is persisted."""
        return self.switch().pre_trade_check(orders, **kwargs)

    def record_broker_outcomes(self, outcomes: Sequence[bool], now: dt.datetime) -> CheckResult:
        return self.switch().record_broker_outcomes(outcomes, now)

    def init(self, now: dt.datetime, reason: str = "first start") -> CheckResult:
        return self.switch().init(now, reason)

    def trip(self, reason: str, now: dt.datetime, target: TradingState = TradingState.HALTED) -> CheckResult:
        return self.switch().trip(reason, now, target)

    def reset(self, reason: str, now: dt.datetime, equity: float | None = None) -> CheckResult:
        return self.switch().reset(reason, now, equity)

    def on_session_open(self, session_date: dt.date, equity: float, now: dt.datetime) -> CheckResult:
        return self.switch().on_session_open(session_date, equity, now)

    @staticmethod
    def enforce(result: CheckResult, broker: Broker) -> list[SubmitResult]:
        """Carry a HALTED verdict to the broker: cancel open orders that are not reduce-only, then send the
        flatten orders (reduce-only, so they can only shrink positions). Each answer is returned for
        lineage; a broker error on one cancel is returned as that order's result, not raised."""
        out: list[SubmitResult] = []
        if result.cancel_open_orders:
            for order in broker.open_orders():
                if order.reduce_only:
                    continue
                try:
                    out.append(broker.cancel(order.client_order_id))
                except BrokerError as exc:
                    out.append(order.as_result(error=f"cancel failed: {type(exc).__name__}: {exc}"))
        for row in result.flatten_orders.to_dict("records") if len(result.flatten_orders) else []:
            request = OrderRequest(row["client_order_id"], row["symbol"], Side(row["side"]), float(row["quantity"]),
                                   row["bar_key"], reduce_only=True)
            out.append(submit_with_lookup(broker, request))
        return out

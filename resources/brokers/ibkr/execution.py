"""The ``ibkr`` broker adapter: :class:`resources.brokers.protocol.Broker` on ib_async's ``IB`` (TWS / IB Gateway).

Identity: our ``client_order_id`` travels in the order's ``orderRef`` (IB copies it onto executions). IB does
not enforce its uniqueness, so the adapter does: before placing, the id is looked up among this client's
open and completed trades (``IB.trades()``, then ``reqCompletedOrders``); a known id is REJECTED as
DUPLICATE_CLIENT_ORDER_ID and never placed again. A placement that raised (connection lost) is settled by
``submit_with_lookup`` through the same lookup.

Connection: one ``IB`` per process and settings, connected lazily; every call first makes sure it is
connected, reconnecting up to ``broker.ibkr.reconnect_attempts`` times with doubling back-off (from
``reconnect_backoff_seconds`` up to ``reconnect_backoff_max_seconds``). ib_async resynchronises open orders,
positions, account values and the day's executions on every connect, so nothing the venue did while the
link was down is lost. Live money: a login whose account is not a paper account (IB paper accounts start
with ``D``, e.g. ``DU1234567``) is refused unless live money is allowed (``broker.live_money`` and
``TRADEGRAPH_LIVE_MONEY=yes``).

Orders are day orders: MARKET (``MKT``), LIMIT (``LMT``), MOC (``orderType MOC``: IB's closing auction).
Contracts are resolved by symbol as ``Stock(symbol, broker.ibkr.exchange, broker.ibkr.currency)``,
qualified once and cached; a symbol IB cannot qualify is REJECTED / UNKNOWN_SYMBOL. Submit waits up to
``broker.submit_timeout_seconds`` for IB's acknowledgement; an order still unacknowledged then is reported
SUBMITTED (sent, not yet acknowledged), never resent.

Not available from IB: whether a working order was reduce-only (remembered for the orders this process sent).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from CONFIG.config_loader import get_cfg
from resources.brokers.ibkr.parsing import (
    IB_ORDER_TYPE,
    parse_account,
    parse_fill,
    parse_positions,
    parse_trade,
)
from resources.brokers.protocol import (
    OPEN_STATUSES,
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    SubmitResult,
)
from resources.brokers.validation import local_reject_reason, reduces
from resources.credentials import CredentialsError

_CONNECT_ERRORS = (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)


@dataclass(frozen=True)
class IbkrSettings:
    host: str
    port: int
    client_id: int
    account: str
    exchange: str
    currency: str
    connect_timeout_seconds: float
    reconnect_attempts: int
    reconnect_backoff_seconds: float
    reconnect_backoff_max_seconds: float
    ack_timeout_seconds: float
    allow_fractional: bool

    @classmethod
    def from_config(cls) -> IbkrSettings:
        k = "broker.ibkr."
        return cls(get_cfg(k + "host"), get_cfg(k + "port"), get_cfg(k + "client_id"), get_cfg(k + "account"),
                   get_cfg(k + "exchange"), get_cfg(k + "currency"), get_cfg(k + "connect_timeout_seconds"),
                   get_cfg(k + "reconnect_attempts"), get_cfg(k + "reconnect_backoff_seconds"),
                   get_cfg(k + "reconnect_backoff_max_seconds"), get_cfg("broker.submit_timeout_seconds"),
                   get_cfg("broker.allow_fractional"))


def is_paper_account(account: str) -> bool:
    """IB paper trading accounts are named D… (DU for individuals, DF for advisors)."""
    return account.upper().startswith("D")


def _default_ib() -> Any:
    from ib_async import IB  # the [brokers] extra

    return IB()


class IbkrBroker:
    """The IB adapter. ``ib_factory`` builds the ``IB`` object (tests give one whose wire client is faked);
    ``sleep`` is the back-off between reconnect attempts."""

    def __init__(self, settings: IbkrSettings, *, live_money: bool = False, ib_factory: Callable[[], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self._live = settings, live_money
        self._factory = ib_factory or _default_ib
        self._sleep = sleep
        self._ib: Any = None
        self._contracts: dict[str, Any] = {}
        self._reduce_only: set[str] = set()
        self.account_id = ""
        self.connects = 0

    def __repr__(self) -> str:
        s = self.settings
        return f"IbkrBroker({s.host}:{s.port} clientId={s.client_id})"

    # ---- connection --------------------------------------------------------------------------------
    def _connected(self) -> Any:
        if self._ib is None:
            self._ib = self._factory()
        ib, s = self._ib, self.settings
        if ib.isConnected():
            return ib
        delay, last = s.reconnect_backoff_seconds, None
        for attempt in range(s.reconnect_attempts + 1):
            if attempt:
                self._sleep(min(delay, s.reconnect_backoff_max_seconds))
                delay *= 2
            try:
                ib.connect(s.host, s.port, clientId=s.client_id, timeout=s.connect_timeout_seconds,
                           account=s.account)
                break
            except _CONNECT_ERRORS as exc:
                last = exc
        else:
            raise BrokerError(f"IB {s.host}:{s.port} clientId={s.client_id}: not connected after "
                              f"{s.reconnect_attempts + 1} attempt(s): {type(last).__name__}: {last}") from None
        self.connects += 1
        self._check_account(ib)
        return ib

    def _check_account(self, ib: Any) -> None:
        accounts = list(ib.managedAccounts())
        account = self.settings.account or (accounts[0] if len(accounts) == 1 else "")
        if not account or account not in accounts:
            ib.disconnect()
            raise BrokerError(f"IB login manages {accounts or 'no account'}: set broker.ibkr.account to one of them")
        if not is_paper_account(account) and not self._live:
            ib.disconnect()
            raise CredentialsError(f"IB account {account} is a live-money account: refused without "
                                   "broker.live_money: true and TRADEGRAPH_LIVE_MONEY=yes")
        self.account_id = account

    def close(self) -> None:
        if self._ib is not None and self._ib.isConnected():
            self._ib.disconnect()

    def _guard(self, fn: Callable[[Any], Any], what: str) -> Any:
        """Run ``fn(ib)`` on a connected IB; a connection lost meanwhile is a :class:`BrokerError`."""
        ib = self._connected()
        try:
            return fn(ib)
        except _CONNECT_ERRORS as exc:
            raise BrokerError(f"IB {what}: {type(exc).__name__}: {exc}") from None

    # ---- orders ------------------------------------------------------------------------------------
    def _contract(self, ib: Any, symbol: str) -> Any:
        if symbol not in self._contracts:
            from ib_async import Stock

            qualified = ib.qualifyContracts(Stock(symbol, self.settings.exchange, self.settings.currency))
            if not qualified or qualified[0] is None:
                return None
            self._contracts[symbol] = qualified[0]
        return self._contracts[symbol]

    def _ib_order(self, req: OrderRequest) -> Any:
        from ib_async import LimitOrder, MarketOrder
        from ib_async import Order as IBOrder

        action = "BUY" if Side(req.side) is Side.BUY else "SELL"
        common = dict(orderRef=req.client_order_id, tif="DAY", account=self.account_id)
        if req.order_type == OrderType.LIMIT:
            return LimitOrder(action, float(req.quantity), float(req.limit_price), **common)
        if req.order_type == OrderType.MOC:
            return IBOrder(orderType=IB_ORDER_TYPE[OrderType.MOC], action=action,
                           totalQuantity=float(req.quantity), **common)
        return MarketOrder(action, float(req.quantity), **common)

    def submit(self, request: OrderRequest) -> SubmitResult:
        reason = local_reject_reason(request, self.settings.allow_fractional)
        if reason is not None:
            return SubmitResult(request.client_order_id, OrderStatus.REJECTED, reason)
        existing = self.order_status(request.client_order_id)
        if existing is not None:
            return SubmitResult(request.client_order_id, OrderStatus.REJECTED, RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                                existing.broker_order_id, error=f"already at the venue as {existing.status}")
        if request.reduce_only and not reduces(self.positions().get(request.symbol, 0.0), Side(request.side),
                                               float(request.quantity)):
            return SubmitResult(request.client_order_id, OrderStatus.REJECTED, RejectReason.REDUCE_ONLY_VIOLATION)

        def place(ib: Any) -> Any:
            contract = self._contract(ib, request.symbol)
            if contract is None:
                return None
            trade = ib.placeOrder(contract, self._ib_order(request))
            deadline = time.monotonic() + self.settings.ack_timeout_seconds
            while trade.orderStatus.status in ("PendingSubmit", "ApiPending") and ib.isConnected():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ib.waitOnUpdate(timeout=left)
            return trade

        trade = self._guard(place, "submit")
        if trade is None:
            return SubmitResult(request.client_order_id, OrderStatus.REJECTED, RejectReason.UNKNOWN_SYMBOL,
                                error=f"IB cannot qualify {request.symbol} on {self.settings.exchange}")
        if request.reduce_only:
            self._reduce_only.add(request.client_order_id)
        order = replace(parse_trade(trade, request.reduce_only), bar_key=request.bar_key)
        error = trade.log[-1].message if order.status is OrderStatus.REJECTED and trade.log else None
        return order.as_result(error=error or None)

    def cancel(self, client_order_id: str) -> SubmitResult:
        trade = self._find(client_order_id)
        if trade is None:
            return SubmitResult(client_order_id, OrderStatus.REJECTED, RejectReason.ORDER_NOT_FOUND)
        order = parse_trade(trade, client_order_id in self._reduce_only)
        if order.status not in OPEN_STATUSES:
            return replace(order.as_result(), reason_code=RejectReason.ORDER_NOT_OPEN)

        def cancel(ib: Any) -> Any:
            ib.cancelOrder(trade.order)
            deadline = time.monotonic() + self.settings.ack_timeout_seconds
            while trade.orderStatus.status == "PendingCancel" and ib.isConnected():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ib.waitOnUpdate(timeout=left)
            return trade

        now = parse_trade(self._guard(cancel, "cancel"), client_order_id in self._reduce_only)
        reason = RejectReason.CANCELLED_BY_REQUEST if now.status in OPEN_STATUSES | {OrderStatus.CANCELLED} \
            else RejectReason.ORDER_NOT_OPEN
        return replace(now.as_result(), reason_code=reason)

    # ---- queries -----------------------------------------------------------------------------------
    def _find(self, client_order_id: str) -> Any:
        """This client's trade with ``orderRef == client_order_id``: the session's trades first, then IB's
        completed orders."""
        def among(trades: list) -> Any:
            hits = [t for t in trades if t.order.orderRef == client_order_id]
            return hits[-1] if hits else None

        trade = self._guard(lambda ib: among(ib.trades()), "order lookup")
        if trade is None:
            trade = self._guard(lambda ib: among(ib.reqCompletedOrders(apiOnly=True)), "completed orders")
        return trade

    def order_status(self, client_order_id: str) -> Order | None:
        trade = self._find(client_order_id)
        return None if trade is None else parse_trade(trade, client_order_id in self._reduce_only)

    def open_orders(self) -> list[Order]:
        trades = self._guard(lambda ib: ib.openTrades(), "open orders")
        orders = [parse_trade(t, t.order.orderRef in self._reduce_only) for t in trades]
        return sorted((o for o in orders if o.status in OPEN_STATUSES),
                      key=lambda o: (o.submitted_at or dt.datetime.min.replace(tzinfo=dt.UTC), o.client_order_id))

    def positions(self) -> dict[str, float]:
        return parse_positions(self._guard(lambda ib: ib.positions(self.account_id), "positions"))[0]

    def account(self) -> Account:
        def read(ib: Any) -> Account:
            return parse_account(ib.accountValues(self.account_id), ib.positions(self.account_id),
                                 self.settings.currency)
        return self._guard(read, "account")

    def fills_since(self, since: dt.datetime | int | None = None) -> list[Fill]:
        """The day's executions IB reports (``reqExecutions``), in booking order: an ``int`` is a ``seq``
        cursor (µs since the epoch), a datetime gives fills with ts >= since. IB keeps executions for the
        current day (TWS setting up to 7 days): older fills come from lineage, not the venue."""
        if isinstance(since, dt.datetime) and since.tzinfo is None:
            raise BrokerError(f"naive timestamp {since!r}: the engine is UTC, pass tz-aware times")
        def executions(ib: Any) -> list:
            ib.reqExecutions()  # adds what this connection has not seen; commissions update ib.fills() in place
            return ib.fills()

        raw = self._guard(executions, "executions")
        mine = [x for x in raw if not self.account_id or x.execution.acctNumber in ("", self.account_id)]
        out = list({f.fill_id: f for f in map(parse_fill, mine)}.values())
        if isinstance(since, dt.datetime):
            out = [f for f in out if f.ts >= since]
        elif since is not None:
            out = [f for f in out if f.seq > int(since)]
        return sorted(out, key=lambda f: (f.seq, f.fill_id))


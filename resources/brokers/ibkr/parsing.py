"""Pure parsing of ib_async's objects (``Trade``, ``Fill``, ``Position``, ``AccountValue``) into our domain.

No ib_async import: the functions read attributes, so they are tested with the library's real dataclasses
or any stand-in. The order's ``orderRef`` carries our ``client_order_id`` (IB copies it onto every
execution), ``permId`` is the venue's order id.

IB order status ("Order status" in the TWS API reference) → our lifecycle; every status ib_async knows is
listed, an unknown one is an error naming it:

=========================================================  ==============================================
``PendingSubmit``, ``ApiPending``                          SUBMITTED (not acknowledged)
``PreSubmitted``, ``Submitted``, ``ApiUpdate``,            ACCEPTED (working; PreSubmitted: held by IB,
``ValidationError`` (a warning: still live),               e.g. an MOC until the auction)
``PendingCancel``
``Filled``                                                 FILLED
``Cancelled``, ``ApiCancelled``                            CANCELLED; REJECTED (BROKER_REJECTED) when IB
                                                           cancelled it with an error before any fill
``Inactive``                                               REJECTED (BROKER_REJECTED); CANCELLED if filled
=========================================================  ==============================================

A working status with shares filled is PARTIALLY_FILLED. IB cancels an unfilled day order at the close
without an error: that is reported CANCELLED (IB does not tell an expiry from a cancel).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any

from resources.brokers.protocol import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
)


class UnknownVenueStatus(BrokerError):
    """A status, action or order type the adapter has no mapping for; the message names it."""


_SUBMITTED = frozenset({"PendingSubmit", "ApiPending"})
_WORKING = frozenset({"PreSubmitted", "Submitted", "ApiUpdate", "ValidationError", "PendingCancel"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
#: every IB status this module maps (a test checks it covers ib_async's ``OrderStatus`` states)
KNOWN_STATUSES = frozenset(_SUBMITTED | _WORKING | _CANCELLED | {"Filled", "Inactive"})
ORDER_TYPES = {"MKT": OrderType.MARKET, "LMT": OrderType.LIMIT, "MOC": OrderType.MOC}
IB_ORDER_TYPE = {v: k for k, v in ORDER_TYPES.items()}
_BUYING_POWER_WORDS = ("buying power", "equity with loan", "insufficient")


def venue_error(log: Sequence[Any]) -> str:
    """The last error IB attached to the order (``TradeLogEntry`` with a non-zero ``errorCode``), or ''."""
    errors = [e for e in log if getattr(e, "errorCode", 0)]
    return str(errors[-1].message) if errors else ""


def cancel_requested(log: Sequence[Any]) -> bool:
    """Whether a cancel was sent for the order (ib_async logs ``PendingCancel`` when it sends one)."""
    return any(getattr(e, "status", "") == "PendingCancel" for e in log)


def map_status(status: str, filled: float, log: Sequence[Any] = ()) -> tuple[OrderStatus, RejectReason | None]:
    """Our status and reason for an IB order status, given the filled quantity and the trade's log."""
    if status in _SUBMITTED:
        return (OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.SUBMITTED), None
    if status in _WORKING:
        return (OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED), None
    if status == "Filled":
        return OrderStatus.FILLED, None
    rejected = filled <= 0 and not cancel_requested(log) and bool(venue_error(log))
    if status in _CANCELLED:
        if rejected:
            return OrderStatus.REJECTED, reject_reason(venue_error(log))
        return OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST if cancel_requested(log) else None
    if status == "Inactive":
        if filled > 0:
            return OrderStatus.CANCELLED, None
        return OrderStatus.REJECTED, reject_reason(venue_error(log))
    raise UnknownVenueStatus(f"IB order status {status!r} is not mapped onto the order lifecycle "
                             f"(known: {', '.join(sorted(KNOWN_STATUSES))})")


def reject_reason(message: str) -> RejectReason:
    text = message.lower()
    return RejectReason.INSUFFICIENT_BUYING_POWER if any(w in text for w in _BUYING_POWER_WORDS) \
        else RejectReason.BROKER_REJECTED


def seq_of(ts: dt.datetime) -> int:
    """A fill's booking sequence: its venue time in microseconds since the epoch (ties: fill_id order)."""
    return int(round(ts.timestamp() * 1e6))


def _utc(ts: dt.datetime) -> dt.datetime:
    if ts.tzinfo is None:
        raise BrokerError(f"IB time without a zone: {ts!r}")
    return ts.astimezone(dt.UTC)


def side_of(action: str) -> Side:
    """IB's order action (BUY/SELL) or execution side (BOT/SLD)."""
    value = {"BUY": Side.BUY, "BOT": Side.BUY, "SELL": Side.SELL, "SLD": Side.SELL}.get(str(action).upper())
    if value is None:
        raise UnknownVenueStatus(f"IB action/side {action!r} is not BUY/SELL/BOT/SLD")
    return value


def client_id_of(order_ref: str, perm_id: int) -> str:
    """Our id from ``orderRef``; an order placed outside the engine (no orderRef) gets ``ib:<permId>``."""
    return order_ref or f"ib:{perm_id}"


def parse_trade(trade: Any, reduce_only: bool = False) -> Order:
    """An ib_async ``Trade`` → :class:`Order` (``bar_key`` unknown to the venue: empty)."""
    order, st = trade.order, trade.orderStatus
    filled = float(st.filled or 0.0)
    fq = float(getattr(order, "filledQuantity", 0.0) or 0.0)
    if filled == 0 and 0 < fq < 1e300:  # a completed order from before this connection carries it on the order
        filled = fq
    fills = [f.execution for f in getattr(trade, "fills", [])]
    avg = float(st.avgFillPrice or 0.0)
    if avg == 0 and fills and sum(e.shares for e in fills) > 0:
        avg = sum(e.shares * e.price for e in fills) / sum(e.shares for e in fills)
    status, reason = map_status(st.status, filled, trade.log)
    kind = ORDER_TYPES.get(str(order.orderType))
    if kind is None:
        raise UnknownVenueStatus(f"IB order type {order.orderType!r} (orderRef {order.orderRef!r}) is not one the "
                                 "engine manages: cancel it, or trade it from another account")
    first = trade.log[0].time if trade.log else None
    lmt = float(order.lmtPrice) if kind is OrderType.LIMIT else None
    return Order(client_order_id=client_id_of(order.orderRef, order.permId),
                 broker_order_id=str(order.permId or order.orderId) or None, symbol=str(trade.contract.symbol),
                 side=side_of(order.action), quantity=float(order.totalQuantity), filled_quantity=filled,
                 avg_price=avg if filled > 0 and avg > 0 else None, status=status, reason_code=reason,
                 bar_key="", reduce_only=reduce_only,
                 submitted_at=_utc(first) if isinstance(first, dt.datetime) and first.tzinfo else None,
                 order_type=kind, limit_price=lmt)


def parse_fill(fill: Any) -> Fill:
    """An ib_async ``Fill`` → :class:`Fill`: ``fill_id`` = IB's ``execId`` (unique, stable), our id from
    the execution's ``orderRef``, the fee from the commission report (0 until IB has sent it), no mid."""
    ex = fill.execution
    ts = _utc(ex.time)
    fee = float(getattr(fill.commissionReport, "commission", 0.0) or 0.0)
    return Fill(fill_id=str(ex.execId), client_order_id=client_id_of(ex.orderRef, ex.permId),
                symbol=str(fill.contract.symbol), side=side_of(ex.side), quantity=float(ex.shares),
                price=float(ex.price), fee=fee if math.isfinite(fee) and fee < 1e300 else 0.0, ts=ts,
                seq=seq_of(ts), mid=math.nan)


def parse_positions(positions: Iterable[Any]) -> tuple[dict[str, float], dict[str, float]]:
    """ib_async ``Position`` rows → (symbol → signed quantity, symbol → average cost per share), sorted."""
    qty, basis = {}, {}
    for p in sorted(positions, key=lambda p: str(p.contract.symbol)):
        if float(p.position) != 0:
            qty[str(p.contract.symbol)] = float(p.position)
            basis[str(p.contract.symbol)] = float(p.avgCost)
    return qty, basis


def account_value(values: Iterable[Any], tag: str, currency: str) -> float:
    """One account value (``TotalCashValue``, ``NetLiquidation``) in ``currency``, else in ``BASE``."""
    found = {v.currency: v.value for v in values if v.tag == tag}
    for cur in (currency, "BASE"):
        if cur in found:
            try:
                return float(found[cur])
            except ValueError:
                raise BrokerError(f"IB account value {tag} = {found[cur]!r} is not a number") from None
    raise BrokerError(f"IB sent no account value {tag} in {currency} or BASE (has: {sorted(found) or 'none'})")


def parse_account(values: Iterable[Any], positions: Iterable[Any], currency: str) -> Account:
    values = list(values)
    qty, basis = parse_positions(positions)
    return Account(cash=account_value(values, "TotalCashValue", currency),
                   equity=account_value(values, "NetLiquidation", currency), positions=qty, cost_basis=basis)

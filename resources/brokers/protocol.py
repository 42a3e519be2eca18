"""The broker protocol: the one interface the engine talks to, whatever executes the orders.

Why typed value objects and an explicit order state machine: every answer a broker gives must be
recordable in lineage and comparable across live, audit and replay, and an order must never move to a
status it cannot reach (a FILLED order cancelled, a REJECTED order filled). The transition table follows
NautilusTrader's order FSM, reduced to the statuses a market-order engine needs.

A submit that raised or timed out is never resubmitted blindly: its fate is looked up with
:meth:`Broker.order_status` by its ``client_order_id`` (see ``resources.brokers.submit``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: signed quantity = sign × quantity."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """MARKET: fills at the first price after the decision. LIMIT: at ``limit_price`` or better.
    MOC (market-on-close): fills at the session's closing price; sent before the close."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    MOC = "MOC"


class OrderStatus(StrEnum):
    NEW = "NEW"                        # built by the engine, not yet sent
    SUBMITTED = "SUBMITTED"            # sent, the venue has not acknowledged it yet (a real broker's pending_new)
    ACCEPTED = "ACCEPTED"              # working at the venue
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"                # a day order still working when its session closed


_WORKING = frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED,
                      OrderStatus.EXPIRED})

#: status → the statuses it may move to. FILLED, CANCELLED, REJECTED and EXPIRED are terminal. A venue may
#: acknowledge an order and fill it in one report, so SUBMITTED may move straight to a fill.
ALLOWED_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.REJECTED}),
    OrderStatus.SUBMITTED: frozenset({OrderStatus.ACCEPTED, OrderStatus.REJECTED} | _WORKING),
    OrderStatus.ACCEPTED: _WORKING,
    OrderStatus.PARTIALLY_FILLED: _WORKING,
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}

OPEN_STATUSES: frozenset[OrderStatus] = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED,
                                                   OrderStatus.PARTIALLY_FILLED})
TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(s for s, nxt in ALLOWED_TRANSITIONS.items() if not nxt)


class RejectReason(StrEnum):
    """Why an order was rejected or (for the remainder of a partial fill) cancelled."""

    DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
    INVALID_QUANTITY = "INVALID_QUANTITY"          # zero, negative, NaN/inf, fractional when not allowed
    INVALID_SIDE = "INVALID_SIDE"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"              # no quote for the symbol at the fill time
    INVALID_PRICE = "INVALID_PRICE"                # quote mid/bid/ask NaN, non-positive or crossed
    INVALID_MARKET_DATA = "INVALID_MARKET_DATA"    # volume, σ_daily or ADV NaN or negative
    INSUFFICIENT_LIQUIDITY = "INSUFFICIENT_LIQUIDITY"  # participation cap left a remainder (cancelled)
    REDUCE_ONLY_VIOLATION = "REDUCE_ONLY_VIOLATION"    # a reduce-only order that would grow |position|
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"            # cancel / lookup of an id the broker never received
    ORDER_NOT_OPEN = "ORDER_NOT_OPEN"              # cancel of an order already terminal
    CANCELLED_BY_REQUEST = "CANCELLED_BY_REQUEST"
    NOT_RECEIVED = "NOT_RECEIVED"                  # submit failed and the broker has no such order
    UNSUPPORTED_ORDER_TYPE = "UNSUPPORTED_ORDER_TYPE"  # the venue does not offer this order type
    INSUFFICIENT_BUYING_POWER = "INSUFFICIENT_BUYING_POWER"
    SESSION_CLOSED = "SESSION_CLOSED"              # sent when the venue no longer accepts it (after the close)
    EXPIRED_AT_CLOSE = "EXPIRED_AT_CLOSE"          # a day order's remainder when the session closed
    BROKER_REJECTED = "BROKER_REJECTED"            # any other rejection by a real venue (its text in ``error``)


class BrokerError(RuntimeError):
    """The broker could not answer (connection, storage, protocol). The order's fate may be unknown."""


class BrokerTimeout(BrokerError):
    """The broker did not answer in time (``broker.submit_timeout_seconds``)."""


class IllegalTransition(BrokerError):
    """An order status change outside :data:`ALLOWED_TRANSITIONS`: a bug or a corrupt book."""


class Overfill(BrokerError):
    """A fill that would take an order's filled quantity above its quantity; it is not booked."""


def check_transition(current: OrderStatus | str, new: OrderStatus | str) -> OrderStatus:
    """Return ``new`` as an :class:`OrderStatus` if ``current → new`` is allowed, else raise."""
    cur, nxt = OrderStatus(current), OrderStatus(new)
    if nxt not in ALLOWED_TRANSITIONS[cur]:
        raise IllegalTransition(f"order status {cur} → {nxt} is not allowed")
    return nxt


@dataclass(frozen=True)
class OrderRequest:
    """An order as the engine sends it (a day order). Not validated here: the broker rejects bad requests
    with a reason code, so a bad order is recorded as a reject instead of crashing the run."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    bar_key: str
    reduce_only: bool = False
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None

    @property
    def signed_quantity(self) -> float:
        return Side(self.side).sign * self.quantity


@dataclass(frozen=True)
class SubmitResult:
    """The broker's answer to a submit or cancel. ``filled_quantity``/``avg_price`` summarise fills made
    so far (a real venue may fill at once; the paper venue fills at a later bar's settlement); the fills
    themselves are read with :meth:`Broker.fills_since`. ``error`` carries the text of a broker error that
    preceded a lookup."""

    client_order_id: str
    status: OrderStatus
    reason_code: RejectReason | None = None
    broker_order_id: str | None = None
    filled_quantity: float = 0.0
    avg_price: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Order:
    """An order as the broker holds it."""

    client_order_id: str
    broker_order_id: str | None
    symbol: str
    side: Side
    quantity: float
    filled_quantity: float
    avg_price: float | None
    status: OrderStatus
    reason_code: RejectReason | None
    bar_key: str
    reduce_only: bool
    submitted_at: dt.datetime | None
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled_quantity if self.status in OPEN_STATUSES else 0.0

    def as_result(self, error: str | None = None) -> SubmitResult:
        return SubmitResult(self.client_order_id, self.status, self.reason_code, self.broker_order_id,
                            self.filled_quantity, self.avg_price, error)


@dataclass(frozen=True)
class Fill:
    """One execution. ``fill_id`` is unique and deterministic; ``seq`` is the broker's monotonically
    increasing booking sequence (the cursor of :meth:`Broker.fills_since`); ``mid`` is the reference mid
    at the fill (realised cost = side × (price − mid) × quantity + fee)."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    ts: dt.datetime
    seq: int = 0
    mid: float = math.nan


@dataclass(frozen=True)
class Account:
    """Cash, equity (cash + Σ quantity × mark), signed positions and, where the venue reports it, each
    position's average entry price (``cost_basis``: the P&L book is rebuilt from it when lineage is lost)."""

    cash: float
    equity: float
    positions: Mapping[str, float] = field(default_factory=dict)
    cost_basis: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Broker(Protocol):
    """What every adapter (paper now, a real broker later) provides."""

    def submit(self, request: OrderRequest) -> SubmitResult:
        """Send one order; a duplicate ``client_order_id`` is rejected, never executed twice."""
        ...

    def cancel(self, client_order_id: str) -> SubmitResult:
        """Cancel the open remainder of an order."""
        ...

    def open_orders(self) -> list[Order]:
        """Orders still working (ACCEPTED or PARTIALLY_FILLED), by client order id."""
        ...

    def positions(self) -> dict[str, float]:
        """Symbol → signed quantity, zero positions omitted."""
        ...

    def account(self) -> Account:
        ...

    def fills_since(self, since: dt.datetime | int | None = None) -> list[Fill]:
        """Fills in booking order: an ``int`` is a ``seq`` cursor (fills with seq > since), a datetime
        gives fills with ts >= since, ``None`` every fill."""
        ...

    def order_status(self, client_order_id: str) -> Order | None:
        """The order with this client id, or ``None`` if the broker never received it."""
        ...

"""Checks every real-venue adapter makes before sending an order (the paper broker's reject reasons).

Why before sending: a bad order must be a recorded REJECTED with our reason code, not a venue error text
that differs per venue, and a reduce-only order (which Alpaca and IB do not enforce for stocks) must never
grow a position.
"""

from __future__ import annotations

import math
import numbers

from resources.brokers.protocol import OrderRequest, OrderType, RejectReason, Side


def local_reject_reason(req: OrderRequest, allow_fractional: bool) -> RejectReason | None:
    """Why an order must not be sent at all, or None: side, quantity (finite, > 0, whole unless
    ``allow_fractional``), symbol, order type, a limit order's price."""
    try:
        Side(req.side)
    except ValueError:
        return RejectReason.INVALID_SIDE
    q = req.quantity
    if not isinstance(q, numbers.Real) or isinstance(q, bool) or not math.isfinite(q) or q <= 0 \
            or (not allow_fractional and q != math.floor(q)):
        return RejectReason.INVALID_QUANTITY
    if not req.symbol or not isinstance(req.symbol, str):
        return RejectReason.UNKNOWN_SYMBOL
    if req.order_type not in tuple(OrderType):
        return RejectReason.UNSUPPORTED_ORDER_TYPE
    if req.order_type == OrderType.LIMIT and not (isinstance(req.limit_price, numbers.Real)
                                                  and math.isfinite(req.limit_price) and req.limit_price > 0):
        return RejectReason.INVALID_PRICE
    return None


def reduces(position: float, side: Side, quantity: float) -> bool:
    """A reduce-only order is allowed when it shrinks |position| and does not cross zero."""
    return position * Side(side).sign < 0 and quantity <= abs(position)

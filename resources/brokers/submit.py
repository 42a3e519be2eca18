"""Submitting without ever placing an order twice.

Why: when a submit raises or times out, the order may or may not have reached the broker. Sending it
again could double the position; giving up could leave an unrecorded fill. So the order's fate is looked
up by its ``client_order_id`` and the broker's answer is returned; the request is never resubmitted.
"""

from __future__ import annotations

from resources.brokers.protocol import (
    Broker,
    BrokerError,
    OrderRequest,
    OrderStatus,
    RejectReason,
    SubmitResult,
)


def submit_with_lookup(broker: Broker, request: OrderRequest) -> SubmitResult:
    """Submit once; on :class:`BrokerError` (timeouts included) look the order up by client id.

    - the broker has the order → its current state, with ``error`` set to the submit's error text
      (the caller counts it as a broker error for the kill switch);
    - the broker has no such order → REJECTED / NOT_RECEIVED with ``error`` set: nothing was placed,
      the next bar decides afresh;
    - the lookup fails too → :class:`BrokerError` naming the order: its fate is unknown and must be
      settled by reconciliation, not by guessing.
    """
    try:
        return broker.submit(request)
    except BrokerError as exc:
        error = f"{type(exc).__name__}: {exc}"
        try:
            order = broker.order_status(request.client_order_id)
        except BrokerError as lookup_exc:
            raise BrokerError(f"order {request.client_order_id}: submit failed ({error}) and lookup failed "
                              f"({lookup_exc}); fate unknown, reconcile before trading it again") from lookup_exc
    if order is None:
        return SubmitResult(request.client_order_id, OrderStatus.REJECTED, RejectReason.NOT_RECEIVED, error=error)
    return order.as_result(error=error)

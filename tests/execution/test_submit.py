"""submit_with_lookup: a submit that raised is looked up by client id, never resubmitted."""

from __future__ import annotations

import pytest

from resources.brokers.protocol import (
    Broker,
    BrokerError,
    BrokerTimeout,
    OrderRequest,
    OrderStatus,
    RejectReason,
    Side,
)
from resources.brokers.submit import submit_with_lookup
from tests.execution.conftest import next_bar

REQ = OrderRequest("cid-1", "AAA", Side.BUY, 100, "2025-06-02T14:00:00Z")


class Flaky:
    """Wraps a broker; ``submit`` raises before or after the inner submit; lookups may fail too."""

    def __init__(self, inner, *, submit_first: bool, lookup_fails: bool = False):
        self.inner, self.submit_first, self.lookup_fails = inner, submit_first, lookup_fails
        self.submits = 0

    def submit(self, request):
        self.submits += 1
        if self.submit_first:
            self.inner.submit(request)  # reached the broker and filled ...
        raise BrokerTimeout("no answer within broker.submit_timeout_seconds")  # ... but the answer was lost

    def order_status(self, client_order_id):
        if self.lookup_fails:
            raise BrokerError("connection refused")
        return self.inner.order_status(client_order_id)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_timeout_after_the_order_reached_the_broker(broker, clock):
    flaky = Flaky(broker, submit_first=True)
    assert isinstance(flaky, Broker)
    res = submit_with_lookup(flaky, REQ)
    assert (res.status, res.filled_quantity, res.client_order_id) == (OrderStatus.ACCEPTED, 0.0, "cid-1")
    assert res.error.startswith("BrokerTimeout")
    assert flaky.submits == 1                          # never resubmitted
    next_bar(broker, clock)
    assert broker.positions() == {"AAA": 100.0}        # placed exactly once
    assert len(broker.fills_since()) == 1


def test_error_before_the_order_reached_the_broker(broker):
    flaky = Flaky(broker, submit_first=False)
    res = submit_with_lookup(flaky, REQ)
    assert (res.status, res.reason_code) == (OrderStatus.REJECTED, RejectReason.NOT_RECEIVED)
    assert flaky.submits == 1 and broker.positions() == {} and broker.order_status("cid-1") is None


def test_lookup_failing_too_means_fate_unknown(broker):
    flaky = Flaky(broker, submit_first=True, lookup_fails=True)
    with pytest.raises(BrokerError, match="fate unknown"):
        submit_with_lookup(flaky, REQ)
    assert flaky.submits == 1 and [o.client_order_id for o in broker.open_orders()] == ["cid-1"]


def test_plain_success_passes_through(broker):
    res = submit_with_lookup(broker, REQ)
    assert res.status is OrderStatus.ACCEPTED and res.error is None

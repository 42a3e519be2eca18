"""One set of broker-protocol expectations, run against every adapter: paper, Alpaca (mocked HTTP through
alpaca-py) and IBKR (ib_async with a faked wire client).

Nothing here assumes a fill at submit: an order is sent, the venue is advanced, then its fills are read.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest

from resources.brokers.protocol import (
    OPEN_STATUSES,
    Broker,
    BrokerTimeout,
    OrderRequest,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
)
from resources.brokers.submit import submit_with_lookup

SENT = OPEN_STATUSES | {OrderStatus.FILLED}


def buy(cid: str, qty: float = 10, **kw) -> OrderRequest:
    return OrderRequest(cid, kw.pop("symbol", "AAA"), kw.pop("side", Side.BUY), qty, "2025-06-03T14:00Z", **kw)


def test_an_order_is_sent_under_our_id_and_its_fills_come_back_under_it(venue):
    b = venue.broker
    assert isinstance(b, Broker)
    first = b.submit(buy("cid-1"))
    assert first.client_order_id == "cid-1" and first.status in SENT and first.reason_code is None
    venue.advance(1.0)
    order = b.order_status("cid-1")
    assert order.status is OrderStatus.FILLED and order.filled_quantity == 10 and order.side is Side.BUY
    assert order.order_type is OrderType.MARKET and order.symbol == "AAA"
    fills = b.fills_since(None)
    mine = [f for f in fills if f.client_order_id == "cid-1"]
    assert math.fsum(f.quantity for f in mine) == 10 and all(f.price > 0 and f.fee >= 0 for f in mine)
    assert len({f.fill_id for f in fills}) == len(fills)
    assert [(f.seq, f.fill_id) for f in fills] == sorted((f.seq, f.fill_id) for f in fills)
    assert b.positions() == {"AAA": 10.0}
    acct = b.account()
    assert acct.positions == {"AAA": 10.0} and acct.cash < acct.equity
    assert not acct.cost_basis or acct.cost_basis["AAA"] == pytest.approx(100.0, rel=1e-3)
    assert b.fills_since(None) == fills  # read twice, the same fills (stable ids)


def test_a_duplicate_client_order_id_is_refused_and_never_a_second_order(venue):
    b = venue.broker
    b.submit(buy("dup"))
    again = b.submit(buy("dup"))
    assert again.status is OrderStatus.REJECTED and again.reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID
    venue.advance(1.0)
    assert b.positions() == {"AAA": 10.0}
    assert math.fsum(f.quantity for f in b.fills_since(None) if f.client_order_id == "dup") == 10


def test_unknown_ids_are_none_and_not_found(venue):
    assert venue.broker.order_status("never-sent") is None
    r = venue.broker.cancel("never-sent")
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.ORDER_NOT_FOUND


def test_cancel_stops_an_open_order_and_leaves_a_done_one_alone(venue):
    b = venue.broker
    b.submit(buy("c1"))
    before = b.order_status("c1")
    result = b.cancel("c1")
    venue.advance(1.0)
    after = b.order_status("c1")
    if before.status in OPEN_STATUSES:
        assert result.reason_code is RejectReason.CANCELLED_BY_REQUEST
        assert after.status is OrderStatus.CANCELLED and after.filled_quantity == 0
        assert b.positions() == {} and not [o for o in b.open_orders() if o.client_order_id == "c1"]
    else:  # a venue that filled at submit: nothing left to cancel, nothing changed
        assert result.reason_code is RejectReason.ORDER_NOT_OPEN and after.status is before.status


def test_open_orders_list_what_is_working(venue):
    b = venue.broker
    r = b.submit(buy("w1"))
    working = {o.client_order_id for o in b.open_orders()}
    assert ("w1" in working) == (r.status in OPEN_STATUSES)
    venue.advance(1.0)
    assert "w1" not in {o.client_order_id for o in b.open_orders()}


class LostAnswer:
    """The venue got (``reached=True``) or never got the order, and the answer was lost: a timeout."""

    def __init__(self, broker: Broker, reached: bool) -> None:
        self.broker, self.reached = broker, reached

    def submit(self, request: OrderRequest):
        if self.reached:
            self.broker.submit(request)
        raise BrokerTimeout("no answer in time")

    def __getattr__(self, name):
        return getattr(self.broker, name)


def test_a_lost_answer_is_looked_up_never_resent(venue):
    b = venue.broker
    reached = submit_with_lookup(LostAnswer(b, reached=True), buy("lost-1"))
    assert reached.status in SENT and "BrokerTimeout" in reached.error
    rerun = submit_with_lookup(b, buy("lost-1"))  # a rerun of the bar sends the same id again
    assert rerun.status is OrderStatus.REJECTED and rerun.reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID
    never = submit_with_lookup(LostAnswer(b, reached=False), buy("lost-2", symbol="BBB"))
    assert never.status is OrderStatus.REJECTED and never.reason_code is RejectReason.NOT_RECEIVED
    venue.advance(1.0)
    assert b.positions() == {"AAA": 10.0}


def test_reduce_only_never_grows_a_position(venue):
    b = venue.broker
    r = b.submit(buy("ro-0", 5, side=Side.SELL, reduce_only=True))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.REDUCE_ONLY_VIOLATION
    b.submit(buy("ro-1", 10))
    venue.advance(1.0)
    too_big = b.submit(buy("ro-2", 11, side=Side.SELL, reduce_only=True))
    assert too_big.reason_code is RejectReason.REDUCE_ONLY_VIOLATION
    ok = b.submit(buy("ro-3", 4, side=Side.SELL, reduce_only=True))
    assert ok.status in SENT
    venue.advance(1.0)
    assert b.positions() == {"AAA": 6.0}


@pytest.mark.parametrize("qty, side, reason", [(0, Side.BUY, RejectReason.INVALID_QUANTITY),
                                               (-3, Side.BUY, RejectReason.INVALID_QUANTITY),
                                               (1.5, Side.BUY, RejectReason.INVALID_QUANTITY),
                                               (float("nan"), Side.BUY, RejectReason.INVALID_QUANTITY),
                                               (5, "HOLD", RejectReason.INVALID_SIDE)])
def test_bad_orders_are_rejected_with_our_reason_and_place_nothing(venue, qty, side, reason):
    r = venue.broker.submit(buy("bad", qty, side=side))
    assert r.status is OrderStatus.REJECTED and r.reason_code is reason
    venue.advance(1.0)
    known = venue.broker.order_status("bad")
    assert known is None or known.status is OrderStatus.REJECTED
    assert venue.broker.positions() == {}


@pytest.mark.parametrize("kind", list(OrderType))
def test_each_order_type_is_sent_as_itself_or_refused_as_unsupported(venue, kind):
    limit = 101.0 if kind is OrderType.LIMIT else None
    r = venue.broker.submit(buy(f"t-{kind}", 3, order_type=kind, limit_price=limit))
    if kind not in venue.order_types:
        assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.UNSUPPORTED_ORDER_TYPE
        return
    assert r.status in SENT
    order = venue.broker.order_status(f"t-{kind}")
    assert order.order_type is kind and (order.limit_price == limit if limit else order.limit_price is None)
    venue.advance(1.0)
    assert venue.broker.positions() == {"AAA": 3.0}


def test_a_limit_order_without_a_price_is_refused(venue):
    r = venue.broker.submit(buy("lim", 3, order_type=OrderType.LIMIT))
    assert r.status is OrderStatus.REJECTED
    assert r.reason_code in (RejectReason.INVALID_PRICE, RejectReason.UNSUPPORTED_ORDER_TYPE)


def test_partial_fills_are_reported_as_they_happen(venue):
    if not venue.partial:
        pytest.skip(f"the {venue.name} harness fills by participation cap (tests/execution/test_paper_broker.py)")
    b = venue.broker
    b.submit(buy("p1", 10))
    venue.advance(0.5)
    half = b.order_status("p1")
    assert half.status is OrderStatus.PARTIALLY_FILLED and half.filled_quantity == 5 and half.remaining == 5
    assert "p1" in {o.client_order_id for o in b.open_orders()}
    first = b.fills_since(None)
    venue.advance(1.0)
    done = b.order_status("p1")
    assert done.status is OrderStatus.FILLED and done.filled_quantity == 10 and done.remaining == 0
    fills = b.fills_since(None)
    assert [f.quantity for f in fills] == [5.0, 5.0] and len({f.fill_id for f in fills}) == 2
    assert b.fills_since(first[-1].seq) == fills[1:]          # a seq cursor gives only what came after
    assert b.fills_since(fills[1].ts) == fills[1:]            # a time gives fills at or after it
    assert b.fills_since(fills[1].ts + dt.timedelta(seconds=1)) == []

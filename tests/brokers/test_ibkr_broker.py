"""The IBKR adapter on a real ``ib_async.IB`` whose wire client is faked: orderRef, order types, contract
resolution, rejections, partial fills, a lost connection, reconnect with back-off, the live-account guard."""

from __future__ import annotations

import pytest
from ib_async import OrderStatus as IBStatus
from ib_async import TradeLogEntry

from resources.brokers.ibkr.execution import IbkrBroker, IbkrSettings, is_paper_account
from resources.brokers.ibkr.parsing import KNOWN_STATUSES, UnknownVenueStatus, map_status
from resources.brokers.protocol import BrokerError, OrderStatus, OrderType, RejectReason, Side
from resources.brokers.submit import submit_with_lookup
from resources.credentials import CredentialsError
from tests.brokers.fake_ib import FakeGateway, fake_ib
from tests.brokers.test_protocol_contract import buy


def test_every_ib_status_is_mapped_and_an_unknown_one_is_named():
    ib_states = {v for k, v in vars(IBStatus).items() if not k.startswith("_") and isinstance(v, str) and v}
    assert ib_states == KNOWN_STATUSES
    assert IBStatus.DoneStates | IBStatus.ActiveStates <= KNOWN_STATUSES
    with pytest.raises(UnknownVenueStatus, match="'Teleported'"):
        map_status("Teleported", 0)


@pytest.mark.parametrize("status, filled, log, expected", [
    ("PendingSubmit", 0, [], (OrderStatus.SUBMITTED, None)),
    ("PreSubmitted", 0, [], (OrderStatus.ACCEPTED, None)),
    ("Submitted", 4, [], (OrderStatus.PARTIALLY_FILLED, None)),
    ("Filled", 10, [], (OrderStatus.FILLED, None)),
    ("Cancelled", 0, [TradeLogEntry(None, "PendingCancel")], (OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST)),
    ("Cancelled", 0, [], (OrderStatus.CANCELLED, None)),  # IB's end-of-day cancel of a day order
    ("Cancelled", 0, [TradeLogEntry(None, "Cancelled", "Error 201: Order rejected", 201)],
     (OrderStatus.REJECTED, RejectReason.BROKER_REJECTED)),
    ("Inactive", 0, [TradeLogEntry(None, "Inactive", "YOUR EQUITY WITH LOAN VALUE ...", 201)],
     (OrderStatus.REJECTED, RejectReason.INSUFFICIENT_BUYING_POWER)),
    ("Inactive", 3, [], (OrderStatus.CANCELLED, None)),
])
def test_status_mapping_table(status, filled, log, expected):
    assert map_status(status, filled, log) == expected


def test_our_id_travels_in_orderref_and_order_types_are_ibs(ibkr):
    gw = ibkr.extra["gateway"]
    b = ibkr.broker
    b.submit(buy("m", 2))
    b.submit(buy("l", 2, order_type=OrderType.LIMIT, limit_price=99.5))
    b.submit(buy("c", 2, order_type=OrderType.MOC))
    sent = {r["order"].orderRef: r["order"] for r in gw.orders.values()}
    assert (sent["m"].orderType, sent["m"].tif, sent["m"].action, sent["m"].totalQuantity) == ("MKT", "DAY", "BUY", 2)
    assert (sent["l"].orderType, sent["l"].lmtPrice) == ("LMT", 99.5)
    assert sent["c"].orderType == "MOC" and all(o.account == "DU1234567" for o in sent.values())
    gw.advance()
    fills = b.fills_since(None)
    assert {f.client_order_id for f in fills} == {"m", "l", "c"}
    assert all(f.fee == pytest.approx(2 * gw.fee_per_share) for f in fills)  # from IB's commission report


def test_contracts_are_qualified_once_per_symbol_and_unknown_symbols_rejected(ibkr):
    b = ibkr.broker
    calls = []
    b._connected()
    real = b._ib.client.reqContractDetails
    b._ib.client.reqContractDetails = lambda req_id, c: (calls.append(c.symbol), real(req_id, c))
    b.submit(buy("a1", 1))
    b.submit(buy("a2", 1))
    assert calls == ["AAA"]
    r = b.submit(buy("z", 1, symbol="ZZZZ"))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.UNKNOWN_SYMBOL


def test_a_venue_rejection_is_rejected_with_ibs_words(ibkr):
    ibkr.extra["gateway"].reject_next = "YOUR ORDER IS NOT ACCEPTED. INSUFFICIENT EQUITY WITH LOAN VALUE"
    r = ibkr.broker.submit(buy("rej", 5))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.INSUFFICIENT_BUYING_POWER
    assert "201" in r.error and "EQUITY WITH LOAN" in r.error
    assert ibkr.broker.positions() == {}


def test_an_unacknowledged_order_is_submitted_not_resent(ibkr):
    ibkr.extra["gateway"].ack = False
    r = ibkr.broker.submit(buy("slow", 5))
    assert r.status is OrderStatus.SUBMITTED
    again = ibkr.broker.submit(buy("slow", 5))
    assert again.reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID and len(ibkr.extra["gateway"].orders) == 1


def test_a_disconnect_and_reconnect_lose_nothing(ibkr):
    gw, sleeps, b = ibkr.extra["gateway"], ibkr.extra["sleeps"], ibkr.broker
    b.submit(buy("r1", 10))
    gw.advance(0.5)
    gw.drop()                      # the link breaks; the venue keeps trading meanwhile
    gw.advance(1.0)
    gw.refuse_connects = 2         # the gateway is back only at the third attempt
    order = b.order_status("r1")   # reconnects, resynchronises, finds the order by orderRef
    assert order.status is OrderStatus.FILLED and order.filled_quantity == 10 and order.avg_price == 100.0
    assert sleeps == [0.5, 1.0] and b.connects == 2
    assert [f.quantity for f in b.fills_since(None)] == [5.0, 5.0]
    assert b.positions() == {"AAA": 10.0} and b.account().positions == {"AAA": 10.0}


def test_reconnect_gives_up_after_the_configured_attempts(ibkr):
    gw, sleeps = ibkr.extra["gateway"], ibkr.extra["sleeps"]
    ibkr.broker.positions()
    gw.drop()
    gw.refuse_connects = 99
    with pytest.raises(BrokerError, match="not connected after 4 attempt"):
        ibkr.broker.positions()
    assert sleeps == [0.5, 1.0, 2.0]  # doubling, capped at reconnect_backoff_max_seconds (4.0)


@pytest.mark.parametrize("when, found", [("after", True), ("before", False)])
def test_a_connection_lost_while_placing_is_settled_by_lookup(ibkr, when, found):
    gw = ibkr.extra["gateway"]
    ibkr.broker.positions()
    gw.drop_on_place = when
    r = submit_with_lookup(ibkr.broker, buy("lost", 5))
    assert "Socket disconnect" in r.error
    if found:
        assert r.status is OrderStatus.ACCEPTED and len(gw.orders) == 1
    else:
        assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.NOT_RECEIVED and not gw.orders
    gw.advance()
    assert ibkr.broker.positions() == ({"AAA": 5.0} if found else {})


def test_a_live_money_account_is_refused_unless_allowed(venue_config):
    settings = IbkrSettings("127.0.0.1", 4001, 17, "", "SMART", "USD", 1.0, 0, 0.0, 0.0, 0.05, False)
    gw = FakeGateway({"AAA": 100.0}, account="U7654321")
    with pytest.raises(CredentialsError, match="U7654321"):
        IbkrBroker(settings, ib_factory=lambda: fake_ib(gw)).positions()
    assert IbkrBroker(settings, live_money=True, ib_factory=lambda: fake_ib(gw)).positions() == {}
    assert is_paper_account("DU1234567") and is_paper_account("DF99") and not is_paper_account("U1")


def test_a_short_position_and_its_account(ibkr):
    b = ibkr.broker
    b.submit(buy("s", 3, side=Side.SELL))
    ibkr.advance(1.0)
    acct = b.account()
    assert b.positions() == {"AAA": -3.0} and acct.cost_basis == {"AAA": 100.0}
    assert acct.cash == pytest.approx(1_000_000 + 300 - 3 * 0.005)
    assert acct.equity == pytest.approx(acct.cash - 300)

"""Paper broker: rejects with reason codes, fill price, participation cap, idempotence, order FSM."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys

import pytest

from CONFIG.config_loader import PROJECT_ROOT, get_cfg
from resources.brokers.paper import BarClock, PaperBroker, fill_id_for
from resources.brokers.protocol import (
    ALLOWED_TRANSITIONS,
    Broker,
    BrokerTimeout,
    Fill,
    IllegalTransition,
    OrderRequest,
    OrderStatus,
    Overfill,
    RejectReason,
    Side,
    check_transition,
)
from tests.execution.conftest import T0, make_quotes

INITIAL = 1_000_000.0


def buy(cid: str, qty: float, symbol: str = "AAA", **kw) -> OrderRequest:
    return OrderRequest(cid, symbol, Side.BUY, qty, "2025-06-02T14:00:00Z", **kw)


def sell(cid: str, qty: float, symbol: str = "AAA", **kw) -> OrderRequest:
    return OrderRequest(cid, symbol, Side.SELL, qty, "2025-06-02T14:00:00Z", **kw)


def assert_untouched(broker: PaperBroker) -> None:
    acct = broker.account()
    assert (acct.cash, acct.equity, dict(acct.positions)) == (INITIAL, INITIAL, {})
    assert broker.fills_since() == []


def test_paper_broker_satisfies_protocol(broker):
    assert isinstance(broker, Broker)
    assert get_cfg("broker.initial_cash") == INITIAL


@pytest.mark.parametrize(("request_", "reason"), [
    (buy("z", 0), RejectReason.INVALID_QUANTITY),
    (buy("n", -5), RejectReason.INVALID_QUANTITY),
    (buy("f", 10.5), RejectReason.INVALID_QUANTITY),          # broker.allow_fractional is false
    (buy("nan", math.nan), RejectReason.INVALID_QUANTITY),
    (buy("inf", math.inf), RejectReason.INVALID_QUANTITY),
    (buy("u", 10, symbol="ZZZ"), RejectReason.UNKNOWN_SYMBOL),
    (buy("e", 10, symbol=""), RejectReason.UNKNOWN_SYMBOL),
    (OrderRequest("s", "AAA", "HOLD", 10, "k"), RejectReason.INVALID_SIDE),
    (sell("r", 10, reduce_only=True), RejectReason.REDUCE_ONLY_VIOLATION),  # flat: nothing to reduce
])
def test_bad_orders_are_rejected_with_reason_and_change_nothing(broker, request_, reason):
    res = broker.submit(request_)
    assert (res.status, res.reason_code, res.filled_quantity) == (OrderStatus.REJECTED, reason, 0.0)
    assert_untouched(broker)
    # the reject is recorded: its fate can be looked up, and the id cannot be reused
    assert broker.order_status(request_.client_order_id).status is OrderStatus.REJECTED
    assert broker.submit(request_).reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID


@pytest.mark.parametrize(("quote", "reason"), [
    ((math.nan, 99.99, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),    # NaN mid
    ((100.0, math.nan, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),    # NaN bid
    ((100.0, 100.02, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),      # crossed
    ((-1.0, -1.01, -0.99, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),         # non-positive
    ((100.0, 99.99, 100.01, math.nan, 150.0, 1e6), RejectReason.INVALID_MARKET_DATA),
    ((100.0, 99.99, 100.01, 1000.0, 150.0, 0.0), RejectReason.INVALID_MARKET_DATA),  # ADV 0
])
def test_bad_quote_rejects(configure, clock, quote, reason):
    broker = PaperBroker(quotes=make_quotes(AAA=quote), clock=clock)
    res = broker.submit(buy("o1", 10))
    assert (res.status, res.reason_code) == (OrderStatus.REJECTED, reason)
    assert broker.fills_since() == []


def test_fractional_quantity_accepted_when_allowed(configure, clock):
    configure(broker={"allow_fractional": True})
    res = PaperBroker(quotes=make_quotes(), clock=clock).submit(buy("f", 10.5))
    assert (res.status, res.filled_quantity) == (OrderStatus.FILLED, 10.5)


def test_fill_price_spread_impact_fee(broker):
    res = broker.submit(buy("o1", 100))
    # impact = Y·σ·sqrt(q/ADV) = 1.0 × 150 × sqrt(100 / 1e6) = 1.5 bps of 100 = 0.015
    # price = mid + half spread + impact = 100 + 0.01 + 0.015 = 100.025
    # fee = 0.5 bps × 100 × 100.025 = 0.500125
    assert res.status is OrderStatus.FILLED and res.filled_quantity == 100
    (fill,) = broker.fills_since(0)
    assert fill.price == pytest.approx(100.025, abs=1e-12)
    assert fill.fee == pytest.approx(0.500125, abs=1e-12)
    assert (fill.ts, fill.seq, fill.mid, fill.fill_id) == (T0, 1, 100.0, fill_id_for("o1", 0))
    acct = broker.account()
    assert acct.cash == pytest.approx(INITIAL - 10_002.5 - 0.500125, abs=1e-9)
    # marked at the quote mid (quote provider + clock set): equity = cash + 100 × 100
    assert acct.equity == pytest.approx(acct.cash + 10_000.0, abs=1e-9)
    assert broker.positions() == {"AAA": 100.0}
    # a sell pays the half spread and impact the other way: 100 − 0.01 − 0.015
    broker.submit(sell("o2", 100))
    assert broker.fills_since(1)[0].price == pytest.approx(99.975, abs=1e-12)
    assert broker.positions() == {}


def test_duplicate_client_order_id_rejected_nothing_changes(broker):
    first = broker.submit(buy("dup", 50))
    before = (broker.account(), broker.fills_since(), broker.order_status("dup"))
    again = broker.submit(buy("dup", 70, symbol="BBB"))
    assert (again.status, again.reason_code) == (OrderStatus.REJECTED, RejectReason.DUPLICATE_CLIENT_ORDER_ID)
    assert (broker.account(), broker.fills_since(), broker.order_status("dup")) == before
    assert broker.order_status("dup").status is OrderStatus.FILLED and first.filled_quantity == 50


def test_partial_fill_remainder_cancelled(broker):
    # bar volume 1000 × participation cap 0.10 = 100 shares at most
    res = broker.submit(buy("big", 250))
    assert (res.status, res.reason_code, res.filled_quantity) == (
        OrderStatus.CANCELLED, RejectReason.INSUFFICIENT_LIQUIDITY, 100.0)
    assert broker.positions() == {"AAA": 100.0}
    assert broker.open_orders() == []


def test_partial_fill_remainder_carried_across_bars(configure, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    res = broker.submit(buy("big", 250))
    assert (res.status, res.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 100.0)
    assert [o.client_order_id for o in broker.open_orders()] == ["big"]
    assert broker.work_open_orders() == []                     # same bar: not worked twice
    clock.set(T0 + dt.timedelta(minutes=5))
    assert [f.quantity for f in broker.work_open_orders()] == [100.0]
    assert broker.work_open_orders() == []
    clock.set(T0 + dt.timedelta(minutes=10))
    assert [f.quantity for f in broker.work_open_orders()] == [50.0]
    order = broker.order_status("big")
    assert (order.status, order.filled_quantity, order.remaining) == (OrderStatus.FILLED, 250.0, 0.0)
    fills = broker.fills_since()
    assert [f.fill_id for f in fills] == [fill_id_for("big", n) for n in range(3)]
    assert broker.positions() == {"AAA": 250.0} and broker.open_orders() == []


def test_cancel_open_order_and_terminal_order(configure, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("big", 250))
    res = broker.cancel("big")
    assert (res.status, res.reason_code, res.filled_quantity) == (
        OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST, 100.0)
    assert broker.cancel("big").reason_code is RejectReason.ORDER_NOT_OPEN
    assert broker.cancel("nope").reason_code is RejectReason.ORDER_NOT_FOUND
    clock.set(T0 + dt.timedelta(minutes=5))
    assert broker.work_open_orders() == [] and broker.positions() == {"AAA": 100.0}


def test_reduce_only_passes_when_it_reduces(broker):
    broker.submit(buy("o1", 100))
    assert broker.submit(sell("r1", 150, reduce_only=True)).reason_code is RejectReason.REDUCE_ONLY_VIOLATION
    assert broker.submit(sell("r2", 100, reduce_only=True)).status is OrderStatus.FILLED
    assert broker.positions() == {}


def test_carried_reduce_only_order_never_goes_past_flat(configure, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("o1", 100))
    clock.set(T0 + dt.timedelta(minutes=5))
    broker.submit(buy("o2", 100))                                        # long 200
    assert broker.submit(sell("r", 150, reduce_only=True)).filled_quantity == 100   # 50 carried
    broker.submit(sell("s", 100))                                        # flat now
    clock.set(T0 + dt.timedelta(minutes=10))
    assert broker.work_open_orders() == []
    order = broker.order_status("r")
    assert (order.status, order.reason_code) == (OrderStatus.CANCELLED, RejectReason.REDUCE_ONLY_VIOLATION)
    assert broker.positions() == {}


def test_fill_reported_twice_is_booked_once(broker):
    broker.submit(buy("o1", 100))
    (fill,) = broker.fills_since()
    before = broker.account()
    assert broker.book_fill(fill) is False
    assert broker.account() == before and broker.fills_since() == [fill]


def test_overfill_is_refused(broker):
    broker.submit(buy("o1", 100))
    extra = Fill(fill_id_for("o1", 1), "o1", "AAA", Side.BUY, 1.0, 100.0, 0.0, T0)
    with pytest.raises(Overfill):
        broker.book_fill(extra)
    assert broker.positions() == {"AAA": 100.0}


def test_fill_ids_and_prices_deterministic_across_books(configure, tmp_path, clock):
    def run(path):
        b = PaperBroker(path, quotes=make_quotes(), clock=BarClock(T0))
        b.submit_many([buy("a", 100), sell("b", 30, symbol="BBB"), buy("c", 500)])
        return b.fills_since()
    assert run(tmp_path / "one.duckdb") == run(tmp_path / "two.duckdb")


def test_fills_since_cursor_and_time(broker, clock):
    broker.submit(buy("o1", 10))
    clock.set(T0 + dt.timedelta(minutes=5))
    broker.submit(buy("o2", 10))
    assert [f.client_order_id for f in broker.fills_since(1)] == ["o2"]
    assert [f.client_order_id for f in broker.fills_since(T0 + dt.timedelta(minutes=5))] == ["o2"]
    assert [f.seq for f in broker.fills_since(None)] == [1, 2]


def test_reset_gives_a_fresh_account(broker):
    broker.submit(buy("o1", 10))
    broker.reset()
    assert_untouched(broker)
    assert broker.order_status("o1") is None


def test_naive_clock_refused(configure):
    broker = PaperBroker(quotes=make_quotes(), clock=BarClock(dt.datetime(2025, 6, 2, 14)))
    with pytest.raises(Exception, match="naive"):
        broker.submit(buy("o1", 10))


def test_lock_held_by_another_process_times_out(configure, clock):
    configure(broker={"submit_timeout_seconds": 0.3})
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    broker.positions()  # create the file
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"con = duckdb.connect({str(broker.db_path)!r}); print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BrokerTimeout, match="locked"):
            broker.submit(buy("o1", 10))
    finally:
        holder.kill()
        holder.wait()
    assert broker.submit(buy("o1", 10)).status is OrderStatus.FILLED


def test_transition_table():
    assert check_transition("NEW", "ACCEPTED") is OrderStatus.ACCEPTED
    assert check_transition(OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED)
    for terminal in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED):
        assert ALLOWED_TRANSITIONS[terminal] == frozenset()
        for target in OrderStatus:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, target)
    for bad in [("NEW", "FILLED"), ("ACCEPTED", "REJECTED"), ("ACCEPTED", "NEW"), ("PARTIALLY_FILLED", "ACCEPTED")]:
        with pytest.raises(IllegalTransition):
            check_transition(*bad)

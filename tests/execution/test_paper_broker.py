"""Paper broker: the next-bar fill model, rejects with reason codes, participation cap at its edge, the
order lifecycle (carry, cancel, expiry at the close, MOC), share precision, idempotence, order FSM.

Every venue test runs on both books (``file``: DuckDB, ``memory``: the replay's); the lock timeout is the
file's own. That the two leave the same rows in the file: ``test_paper_book.py``.

Expressed against the ``Broker`` protocol where the protocol says enough (submit, cancel, open_orders,
positions, account, fills_since, order_status); ``settle`` is the simulated venue's own step between bars.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys

import pytest

from assets.positions.logic import expected_positions, fills_frame, reconcile
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
    OrderType,
    Overfill,
    RejectReason,
    Side,
    check_transition,
)
from tests.execution.conftest import CLOSE, MARKET, T0, T1, make_quotes, next_bar

INITIAL = 1_000_000.0


@pytest.fixture(params=["file", "memory"])
def book_kind(request) -> str:
    return request.param

# the bar after the decision: AAA opens at 100.04 (the decision bar's mid and close were 100.00)
OPENS = make_quotes(AAA=(100.10, 100.09, 100.11, 1000.0, 150.0, 1_000_000.0, 100.04, 100.10))


def buy(cid: str, qty: float, symbol: str = "AAA", **kw) -> OrderRequest:
    return OrderRequest(cid, symbol, Side.BUY, qty, "2025-06-02T14:00Z", **kw)


def sell(cid: str, qty: float, symbol: str = "AAA", **kw) -> OrderRequest:
    return OrderRequest(cid, symbol, Side.SELL, qty, "2025-06-02T14:00Z", **kw)


def assert_untouched(broker: PaperBroker) -> None:
    acct = broker.account()
    assert (acct.cash, acct.equity, dict(acct.positions)) == (INITIAL, INITIAL, {})
    assert broker.fills_since() == []


def test_paper_broker_satisfies_protocol(broker):
    assert isinstance(broker, Broker)
    assert get_cfg("broker.initial_cash") == INITIAL


def test_a_market_order_never_fills_at_the_decision_bar_it_fills_at_the_next_open(broker, clock):
    res = broker.submit(buy("o1", 100))
    assert (res.status, res.filled_quantity) == (OrderStatus.ACCEPTED, 0.0)
    assert broker.settle().fills == []                        # the decision bar itself: nothing
    assert_untouched(broker)
    assert [o.client_order_id for o in broker.open_orders()] == ["o1"]

    done = next_bar(broker, clock, quotes=OPENS)
    # impact = Y·σ·sqrt(q/ADV) = 1.0 × 150 × sqrt(100 / 1e6) = 1.5 bps of the open 100.04 = 0.015006
    # price = open + half spread + impact = 100.04 + 0.01 + 0.015006 = 100.065006 (never the decision's 100.00)
    # fee = 0.5 bps × 100 × 100.065006 = 0.50032503
    (fill,) = done.fills
    assert fill.price == pytest.approx(100.065006, abs=1e-12)
    assert fill.fee == pytest.approx(0.50032503, abs=1e-12)
    assert (fill.ts, fill.seq, fill.mid, fill.fill_id, fill.quantity) == (T1, 1, 100.04, fill_id_for("o1", 0), 100)
    assert [(o.client_order_id, o.status) for o in done.orders] == [("o1", OrderStatus.FILLED)]
    acct = broker.account()
    assert acct.cash == pytest.approx(INITIAL - 10_006.5006 - 0.50032503, abs=1e-9)
    assert acct.positions == {"AAA": 100.0} and acct.cost_basis == {"AAA": pytest.approx(100.065006)}
    assert broker.fills_since(0) == [fill] and broker.open_orders() == []
    assert next_bar(broker, clock, minutes=0).fills == []     # settling a bar twice changes nothing

    # a sell pays the half spread and the impact the other way: 100.04 − 0.01 − 0.015006
    broker.submit(sell("o2", 100))
    (back,) = next_bar(broker, clock, quotes=OPENS).fills
    assert back.price == pytest.approx(100.014994, abs=1e-12)
    assert broker.positions() == {} and broker.account().cost_basis == {}


def test_fill_latency_delays_the_fill_bar(configure, make_broker, clock):
    configure(broker={"fill_latency_bars": 1})
    broker = make_broker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("o1", 10))
    assert next_bar(broker, clock).fills == []                  # t+1: not yet
    (fill,) = next_bar(broker, clock, quotes=OPENS).fills       # t+2: at its open
    assert fill.ts == T0 + dt.timedelta(minutes=10) and fill.mid == 100.04


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
    (buy("l", 10, order_type=OrderType.LIMIT, limit_price=99.0), RejectReason.UNSUPPORTED_ORDER_TYPE),
])
def test_bad_orders_are_rejected_with_reason_and_change_nothing(broker, clock, request_, reason):
    res = broker.submit(request_)
    assert (res.status, res.reason_code, res.filled_quantity) == (OrderStatus.REJECTED, reason, 0.0)
    next_bar(broker, clock)
    assert_untouched(broker)
    # the reject is recorded: its fate can be looked up, and the id cannot be reused
    assert broker.order_status(request_.client_order_id).status is OrderStatus.REJECTED
    assert broker.submit(request_).reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID


HALF_DAY_CLOSE = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC)  # 13:00 New York


@pytest.mark.parametrize(("when", "before"), [
    (CLOSE, CLOSE - dt.timedelta(minutes=5)),                                  # the closing bar, 16:00
    (CLOSE + dt.timedelta(minutes=9, seconds=30), CLOSE - dt.timedelta(minutes=5)),   # 16:09:30
    (HALF_DAY_CLOSE, HALF_DAY_CLOSE - dt.timedelta(minutes=5)),                # a half day's 13:00 close
    (HALF_DAY_CLOSE + dt.timedelta(minutes=9, seconds=30), HALF_DAY_CLOSE - dt.timedelta(minutes=5)),
    (dt.datetime(2025, 6, 7, 15, 0, tzinfo=dt.UTC), None),                      # a Saturday
])
@pytest.mark.parametrize("order_type", [OrderType.MARKET, OrderType.MOC])
def test_no_order_is_taken_once_the_session_has_closed(broker, clock, when, before, order_type):
    clock.set(when)
    res = broker.submit(buy("late", 10, order_type=order_type))
    assert (res.status, res.reason_code) == (OrderStatus.REJECTED, RejectReason.SESSION_CLOSED)
    if before is not None:                                      # the bar before the close: still taken
        clock.set(before)
        assert broker.submit(buy("in-time", 10, order_type=order_type)).status is OrderStatus.ACCEPTED


@pytest.mark.parametrize(("quote", "reason"), [
    ((math.nan, 99.99, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),    # NaN mid
    ((100.0, math.nan, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),    # NaN bid
    ((100.0, 100.02, 100.01, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),      # crossed
    ((-1.0, -1.01, -0.99, 1000.0, 150.0, 1e6), RejectReason.INVALID_PRICE),         # non-positive
    ((100.0, 99.99, 100.01, math.nan, 150.0, 1e6), RejectReason.INVALID_MARKET_DATA),
    ((100.0, 99.99, 100.01, 1000.0, 150.0, 0.0), RejectReason.INVALID_MARKET_DATA),  # ADV 0
])
def test_bad_quote_rejects(configure, make_broker, clock, quote, reason):
    broker = make_broker(quotes=make_quotes(AAA=(*quote, 100.0, 100.0)), clock=clock)
    res = broker.submit(buy("o1", 10))
    assert (res.status, res.reason_code) == (OrderStatus.REJECTED, reason)
    assert broker.fills_since() == []


def test_no_valid_price_at_the_fill_bar_the_order_waits_then_expires_with_its_session(broker, clock):
    broker.submit(buy("o1", 10))
    halted = make_quotes(AAA=(100.0, 99.99, 100.01, 1000.0, 150.0, 1e6, math.nan, 100.0))   # no open: halted
    assert next_bar(broker, clock, quotes=halted).fills == []
    assert broker.order_status("o1").status is OrderStatus.ACCEPTED
    clock.set(dt.datetime(2025, 6, 3, 13, 35, tzinfo=dt.UTC))  # the next session's first bar
    done = broker.settle()
    assert done.fills == [] and broker.positions() == {}
    order = broker.order_status("o1")
    assert (order.status, order.reason_code) == (OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE)
    assert (order.filled_quantity, order.avg_price) == (0.0, None)           # never filled: no price


@pytest.mark.parametrize(("qty", "filled", "status"), [
    (100, 100.0, OrderStatus.FILLED),      # exactly at the cap (0.10 × 1000): uncapped
    (101, 100.0, OrderStatus.CANCELLED),   # one over: capped to the cap
    (200, 100.0, OrderStatus.CANCELLED),   # twice the cap: capped to the cap, never more
])
def test_participation_cap_at_its_edge(broker, clock, qty, filled, status):
    broker.submit(buy("o", qty))
    next_bar(broker, clock)
    order = broker.order_status("o")
    assert (order.status, order.filled_quantity) == (status, filled)
    assert order.reason_code is (RejectReason.INSUFFICIENT_LIQUIDITY if status is OrderStatus.CANCELLED else None)
    assert broker.positions() == {"AAA": filled} and broker.open_orders() == []


def test_partial_fill_remainder_carried_across_bars(configure, make_broker, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = make_broker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("big", 250))
    assert [f.quantity for f in next_bar(broker, clock).fills] == [100.0]
    order = broker.order_status("big")
    assert (order.status, order.remaining) == (OrderStatus.PARTIALLY_FILLED, 150.0)
    assert [o.client_order_id for o in broker.open_orders()] == ["big"]
    assert next_bar(broker, clock, minutes=0).fills == []      # the same bar: not worked twice
    assert [f.quantity for f in next_bar(broker, clock).fills] == [100.0]
    assert [f.quantity for f in next_bar(broker, clock).fills] == [50.0]
    order = broker.order_status("big")
    assert (order.status, order.filled_quantity, order.remaining) == (OrderStatus.FILLED, 250.0, 0.0)
    assert [f.fill_id for f in broker.fills_since()] == [fill_id_for("big", n) for n in range(3)]
    assert broker.positions() == {"AAA": 250.0} and broker.open_orders() == []


def test_a_carried_remainder_expires_at_the_close(configure, make_broker, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = make_broker(quotes=make_quotes(), clock=BarClock(CLOSE - dt.timedelta(minutes=10)))
    clock = broker.clock
    broker.submit(buy("late", 250))
    assert [f.quantity for f in next_bar(broker, clock).fills] == [100.0]        # 15:55
    done = next_bar(broker, clock)                                                # 16:00, the closing bar
    assert [f.quantity for f in done.fills] == [100.0]
    order = broker.order_status("late")
    assert (order.status, order.reason_code, order.filled_quantity) == (
        OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE, 200.0)
    assert [(o.client_order_id, o.status) for o in done.orders] == [("late", OrderStatus.EXPIRED)]
    assert broker.open_orders() == []


def test_market_on_close_fills_at_the_closing_price(broker, clock):
    clock.set(CLOSE - dt.timedelta(minutes=10))                                   # 15:50
    assert broker.submit(buy("moc", 100, order_type=OrderType.MOC)).status is OrderStatus.ACCEPTED
    assert next_bar(broker, clock).fills == []                                   # 15:55: not a market order
    closing = make_quotes(AAA=(100.25, 100.24, 100.26, 1000.0, 150.0, 1e6, 100.22, 100.20))
    (fill,) = next_bar(broker, clock, quotes=closing).fills                      # 16:00
    # the closing auction: close × (1 + impact) = 100.20 × (1 + 1.5e-4) = 100.21503, fee 0.5 bps
    assert fill.price == pytest.approx(100.21503, abs=1e-12) and fill.mid == 100.20 and fill.ts == CLOSE
    assert fill.fee == pytest.approx(0.5e-4 * 100 * 100.21503, abs=1e-12)
    assert broker.order_status("moc").status is OrderStatus.FILLED


def test_cancel_open_order_and_terminal_order(configure, make_broker, clock):
    configure(broker={"partial_remainder": "carry"})
    broker = make_broker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("big", 250))
    next_bar(broker, clock)
    res = broker.cancel("big")
    assert (res.status, res.reason_code, res.filled_quantity) == (
        OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST, 100.0)
    assert broker.cancel("big").reason_code is RejectReason.ORDER_NOT_OPEN
    assert broker.cancel("nope").reason_code is RejectReason.ORDER_NOT_FOUND
    assert next_bar(broker, clock).fills == [] and broker.positions() == {"AAA": 100.0}


def test_reduce_only_passes_when_it_reduces(broker, clock):
    broker.submit(buy("o1", 100))
    next_bar(broker, clock)
    assert broker.submit(sell("r1", 150, reduce_only=True)).reason_code is RejectReason.REDUCE_ONLY_VIOLATION
    assert broker.submit(sell("r2", 100, reduce_only=True)).status is OrderStatus.ACCEPTED
    next_bar(broker, clock)
    assert broker.order_status("r2").status is OrderStatus.FILLED and broker.positions() == {}


def test_a_reduce_only_order_never_goes_past_flat(broker, clock):
    broker.submit(buy("o1", 100))
    next_bar(broker, clock)
    broker.submit(sell("s", 60))                                # fills first (the older order) ...
    broker.submit(sell("r", 100, reduce_only=True))             # ... so only 40 are left to reduce
    next_bar(broker, clock)
    order = broker.order_status("r")
    assert (order.status, order.filled_quantity, order.reason_code) == (
        OrderStatus.CANCELLED, 40.0, RejectReason.REDUCE_ONLY_VIOLATION)
    assert broker.positions() == {}


def test_fractional_shares_leave_no_float_residue(configure, make_broker, clock):
    configure(broker={"allow_fractional": True})
    broker = make_broker(quotes=make_quotes(), clock=clock)
    for i, (side, q) in enumerate([(Side.BUY, 0.1), (Side.BUY, 0.2), (Side.SELL, 0.3)]):
        broker.submit(OrderRequest(f"f{i}", "AAA", side, q, "k"))
    next_bar(broker, clock)
    assert broker.positions() == {} and broker.account().positions == {}      # not 5.55e-17
    for i in range(10):
        broker.submit(buy(f"t{i}", 0.1))
    next_bar(broker, clock)
    assert broker.positions() == {"AAA": 1.0}                                  # not 0.9999999999999999
    fills = fills_frame(broker.fills_since())
    assert expected_positions(fills).to_dict() == {"AAA": 1.0}
    assert not reconcile(expected_positions(fills), broker.positions(), tolerance=0.0).mismatch


def test_participation_cap_with_fractional_shares_is_floored_to_the_precision(configure, make_broker, clock):
    configure(broker={"allow_fractional": True, "participation_cap": 0.0029, "qty_decimals": 2})
    broker = make_broker(quotes=make_quotes(), clock=clock)
    broker.submit(buy("o", 10))
    (fill,) = next_bar(broker, clock).fills
    assert fill.quantity == 2.9                                # 0.0029 × 1000 = 2.9 (not 2.8999999999999995)


def test_cost_basis_is_the_average_entry_price(broker, clock):
    broker.submit(buy("a", 100))
    next_bar(broker, clock, quotes=make_quotes(AAA=(*MARKET["AAA"][:6], 100.0, 100.0)))
    broker.submit(buy("b", 100))
    next_bar(broker, clock, quotes=make_quotes(AAA=(*MARKET["AAA"][:6], 110.0, 110.0)))
    p1, p2 = (f.price for f in broker.fills_since())
    assert broker.account().cost_basis == {"AAA": pytest.approx((p1 + p2) / 2, abs=1e-12)}
    broker.submit(sell("c", 50))
    next_bar(broker, clock)
    assert broker.account().cost_basis == {"AAA": pytest.approx((p1 + p2) / 2, abs=1e-12)}  # reducing keeps it


def test_duplicate_client_order_id_rejected_nothing_changes(broker, clock):
    broker.submit(buy("dup", 50))
    next_bar(broker, clock)
    before = (broker.account(), broker.fills_since(), broker.order_status("dup"))
    again = broker.submit(buy("dup", 70, symbol="BBB"))
    assert (again.status, again.reason_code) == (OrderStatus.REJECTED, RejectReason.DUPLICATE_CLIENT_ORDER_ID)
    assert (broker.account(), broker.fills_since(), broker.order_status("dup")) == before
    assert broker.order_status("dup").status is OrderStatus.FILLED


def test_fill_reported_twice_is_booked_once(broker, clock):
    broker.submit(buy("o1", 100))
    next_bar(broker, clock)
    (fill,) = broker.fills_since()
    before = broker.account()
    assert broker.book_fill(fill) is False
    assert broker.account() == before and broker.fills_since() == [fill]


def test_overfill_is_refused(broker, clock):
    broker.submit(buy("o1", 100))
    next_bar(broker, clock)
    extra = Fill(fill_id_for("o1", 1), "o1", "AAA", Side.BUY, 1.0, 100.0, 0.0, T0)
    with pytest.raises(Overfill):
        broker.book_fill(extra)
    assert broker.positions() == {"AAA": 100.0}


def test_fill_ids_and_prices_deterministic_across_books(configure, make_broker, tmp_path):
    def run(path):
        clock = BarClock(T0)
        b = make_broker(path, quotes=make_quotes(), clock=clock)
        b.submit_many([buy("a", 100), sell("b", 30, symbol="BBB"), buy("c", 500)])
        next_bar(b, clock)
        return b.fills_since()
    assert run(tmp_path / "one.duckdb") == run(tmp_path / "two.duckdb")


def test_fills_since_cursor_and_time(broker, clock):
    broker.submit(buy("o1", 10))
    next_bar(broker, clock)
    broker.submit(buy("o2", 10))
    next_bar(broker, clock)
    assert [f.client_order_id for f in broker.fills_since(1)] == ["o2"]
    assert [f.client_order_id for f in broker.fills_since(T0 + dt.timedelta(minutes=10))] == ["o2"]
    assert [f.seq for f in broker.fills_since(None)] == [1, 2]


def test_reset_gives_a_fresh_account(broker, clock):
    broker.submit(buy("o1", 10))
    next_bar(broker, clock)
    broker.reset()
    assert_untouched(broker)
    assert broker.order_status("o1") is None


def test_naive_clock_refused(configure, make_broker):
    broker = make_broker(quotes=make_quotes(), clock=BarClock(dt.datetime(2025, 6, 2, 14)))
    with pytest.raises(Exception, match="naive"):
        broker.submit(buy("o1", 10))


def test_lock_held_by_another_process_times_out(configure, clock):
    """The file book's own: another process holding the file."""
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
    assert broker.submit(buy("o1", 10)).status is OrderStatus.ACCEPTED


def test_transition_table():
    assert check_transition("NEW", "ACCEPTED") is OrderStatus.ACCEPTED
    assert check_transition(OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED)
    assert check_transition(OrderStatus.ACCEPTED, OrderStatus.EXPIRED) is OrderStatus.EXPIRED
    for terminal in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
        assert ALLOWED_TRANSITIONS[terminal] == frozenset()
        for target in OrderStatus:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, target)
    for bad in [("NEW", "FILLED"), ("ACCEPTED", "REJECTED"), ("ACCEPTED", "NEW"), ("PARTIALLY_FILLED", "ACCEPTED")]:
        with pytest.raises(IllegalTransition):
            check_transition(*bad)

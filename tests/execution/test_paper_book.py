"""The paper venue's two books give the same answers and leave the same file.

One scripted session of calls (every kind of order, reject, carry, cancel, an external fill, a split with a
dividend, MOC at the close, expiry, the next session, a reset) runs on a file-backed broker and on a memory
broker loaded from another file and saved to it at chosen points. Every answer must be identical (``repr``:
floats bit for bit) and afterwards every ``paper_*`` table of the two files must hold the same rows, exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import duckdb
import pandas as pd
import pytest

from resources.brokers.paper import BarClock, PaperBroker
from resources.brokers.paper_book import SCHEMA, TABLES, MemoryBook
from resources.brokers.protocol import BrokerError, Fill, OrderRequest, OrderType, Side
from tests.execution.conftest import CLOSE, T0, make_quotes

KEYS = {"paper_account": "id", "paper_orders": "client_order_id", "paper_positions": "symbol",
        "paper_fills": "seq", "paper_corporate_actions": "symbol, effective_date"}
MOVED = make_quotes(AAA=(100.10, 100.09, 100.11, 1000.0, 150.0, 1_000_000.0, 100.04, 100.10),
                    BBB=(50.2, 50.19, 50.21, 10_000.0, 200.0, 4_000_000.0, 50.05, 50.2))


def order(cid: str, side: str, qty: float, symbol: str = "AAA", **kw) -> OrderRequest:
    return OrderRequest(cid, symbol, Side(side) if side in ("BUY", "SELL") else side, qty, "k", **kw)


def first_part(b: PaperBroker, clock: BarClock, save: Callable[[], None]) -> list:
    """The decision bar, two fills bars with a carry, a cancel, an external fill and a corporate action."""
    out: list = [b.submit_many([order("a", "BUY", 250), order("b", "SELL", 30, "BBB"), order("c", "BUY", 10.5),
                                order("a", "BUY", 5), order("z", "BUY", 10, "ZZZ"), order("r", "SELL", 10, reduce_only=True),
                                order("l", "BUY", 5, order_type=OrderType.LIMIT, limit_price=99.0),
                                order("h", "HOLD", 5), order("m", "BUY", 20, "BBB", order_type=OrderType.MOC)])]
    out.append(b.settle())
    clock.set(T0 + dt.timedelta(minutes=5))
    b.quotes = MOVED
    out += [b.settle(), b.settle(), b.account(), b.open_orders()]
    save()
    out += [b.book_fill(Fill("ext-1", "outside", "BBB", Side.BUY, 7, 50.0, 0.0, T0)),
            b.book_fill(Fill("ext-1", "outside", "BBB", Side.BUY, 7, 50.0, 0.0, T0)),
            b.apply_corporate_action("AAA", dt.date(2025, 6, 2), 2.0, 0.25),
            b.apply_corporate_action("AAA", dt.date(2025, 6, 2), 2.0, 0.25),
            b.apply_corporate_action("CCC", dt.date(2025, 6, 2), 3.0, 0.0)]
    clock.set(T0 + dt.timedelta(minutes=10))
    out += [b.settle(), b.cancel("a"), b.cancel("a"), b.cancel("nope"), b.order_status("a"), b.positions()]
    save()
    save()                                                     # nothing changed: a no-op
    return out


def second_part(b: PaperBroker, clock: BarClock) -> list:
    """To the close (MOC fill, expiry of a carried order), the next session, a reduce-only clip, a reset."""
    clock.set(CLOSE - dt.timedelta(minutes=5))
    out: list = [b.submit_many([order("big", "BUY", 500), order("s", "SELL", 60), order("ro", "SELL", 300, reduce_only=True),
                                order("moc2", "SELL", 10, "BBB", order_type=OrderType.MOC)])]
    clock.set(CLOSE)
    out += [b.settle(), b.submit(order("late", "BUY", 1)), b.account(marks={"AAA": 101.0})]
    clock.set(dt.datetime(2025, 6, 3, 13, 35, tzinfo=dt.UTC))
    out += [b.submit(order("n1", "BUY", 50, "BBB")), b.settle()]
    clock.set(dt.datetime(2025, 6, 3, 13, 40, tzinfo=dt.UTC))
    out += [b.settle(), b.fills_since(2), b.fills_since(T0 + dt.timedelta(minutes=6)), b.fills_since(None),
            b.account(), b.order_status("ro"), b.open_orders()]
    return out


def third_part(b: PaperBroker, clock: BarClock) -> list:
    out: list = [b.reset(), b.account()]
    out.append(b.submit(order("a", "BUY", 10)))
    clock.set(dt.datetime(2025, 6, 3, 13, 45, tzinfo=dt.UTC))
    return [*out, b.settle(), b.fills_since(0), b.account()]


def tables(path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(path))
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {KEYS[t]}").df() for t in TABLES}
    finally:
        con.close()


def assert_same_files(one, two) -> None:
    a, b = tables(one), tables(two)
    for t in TABLES:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=True, obj=t)


@pytest.fixture
def carry(configure):
    configure(broker={"partial_remainder": "carry", "participation_cap": 0.1})


def test_both_books_answer_alike_and_leave_the_same_rows(carry, tmp_path):
    file_clock, mem_clock = BarClock(T0), BarClock(T0)
    on_file = PaperBroker(tmp_path / "file.duckdb", quotes=make_quotes(), clock=file_clock)
    in_memory = PaperBroker.in_memory(tmp_path / "memory.duckdb", quotes=make_quotes(), clock=mem_clock)
    expected = first_part(on_file, file_clock, lambda: None)
    got = first_part(in_memory, mem_clock, in_memory.save)
    assert [repr(x) for x in got] == [repr(x) for x in expected]
    assert len(expected[0]) == 9 and expected[2].fills         # the script did trade
    assert_same_files(on_file.db_path, in_memory.db_path)       # the memory book's saves so far

    expected, got = second_part(on_file, file_clock), second_part(in_memory, mem_clock)
    assert [repr(x) for x in got] == [repr(x) for x in expected]
    in_memory.save()
    in_memory.close()
    assert_same_files(on_file.db_path, in_memory.db_path)

    # a later replay continues the saved account: loaded back, then reset and traded again
    again = PaperBroker.in_memory(tmp_path / "memory.duckdb", quotes=in_memory.quotes, clock=mem_clock)
    assert [repr(x) for x in (again.account(), again.fills_since(None), again.open_orders())] == \
        [repr(x) for x in (on_file.account(), on_file.fills_since(None), on_file.open_orders())]
    expected, got = third_part(on_file, file_clock), third_part(again, mem_clock)
    assert [repr(x) for x in got] == [repr(x) for x in expected]
    again.save()
    again.close()
    assert_same_files(on_file.db_path, in_memory.db_path)


def test_what_a_memory_book_did_not_save_never_reaches_its_file(carry, tmp_path):
    clock = BarClock(T0)
    path = tmp_path / "memory.duckdb"
    broker = PaperBroker.in_memory(path, quotes=make_quotes(), clock=clock)
    broker.submit(order("a", "BUY", 10))
    broker.save()
    before = tables(path)
    broker.submit(order("b", "BUY", 10))
    clock.set(T0 + dt.timedelta(minutes=5))
    assert broker.settle().fills
    broker.close()                                              # a crash: no save
    after = tables(path)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], before[t], check_exact=True, obj=t)
    assert PaperBroker(path).order_status("b") is None and PaperBroker(path).fills_since() == []


def test_a_memory_only_book_cannot_be_saved(configure):
    with pytest.raises(BrokerError, match="only in memory"):
        PaperBroker.in_memory().save()


def test_a_version_1_file_loads_with_the_columns_it_lacked(configure, tmp_path):
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    for stmt in SCHEMA[:5]:                                     # the version-1 tables
        con.execute(stmt)
    con.execute("INSERT INTO paper_account VALUES (1, 900.0, 1000.0, 1, 1, 1)")
    con.execute("INSERT INTO paper_orders VALUES ('o1', 'PB-0000000001', 'AAA', 'BUY', 1.0, 1.0, 100.0, 'FILLED', "
                "NULL, 'k', false, '2025-06-02 14:00:00', '2025-06-02 14:05:00', 1)")
    con.execute("INSERT INTO paper_positions VALUES ('AAA', 1.0, 100.0)")
    con.close()
    book = MemoryBook.load(path)
    try:
        assert book.order("o1")["order_type"] == "MARKET" and book.position("AAA") == (1.0, None)
        assert book.account["schema_version"] == 1 and book.account["settled_through"] is None
    finally:
        book.close()

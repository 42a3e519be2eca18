"""The stepping loop's fast paths give what the general pandas code they stand in for gives, bit for bit.

Issue 12 ("a lean stepping loop"): the per-bar stages build their tables from plain arrays and lists where
they used to chain pandas steps (assign, set_index, reindex, groupby, concat). Every fast path here is
compared, on seeded random inputs including the edge cases that route around it (empty, one row, repeated
symbols, NaN, foreign and unsent orders, unsorted fills), with the previous implementation, kept verbatim
below as ``_ref_*`` or still in the module as the general path: same values, same dtypes, same index.
"""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pandas as pd
import pytest

from assets.execution_record import OPEN_ORDER_COLUMNS, MemoryRecord, _empty, pnl_fills
from assets.executions.stage import (
    _events,
    _order_frame,
    _orders_of,
    _record,
    _record_reference,
    events_table,
)
from assets.gated_signals.stage import current_quantities
from assets.pnl.logic import PnlBook, bar_pnl
from assets.pnl.stage import compute_pnl, est_costs
from assets.positions.logic import (
    FILL_COLUMNS,
    RECON_COLUMNS,
    _generic_fills_frame,
    classify_fills,
    fills_frame,
    plain_fill_columns,
    reconcile,
    signed_quantity,
    slippage_bps,
    take_in_plain,
    with_fills,
)
from assets.positions.stage import TAKEN_COLUMNS, empty_taken
from assets.take import in_symbol_order, indexer, taken
from resources.brokers.protocol import Fill, OrderStatus, Side, SubmitResult
from resources.brokers.quantity import round_qty
from resources.kill_switch.logic import KillSwitchEvent, Limits, TradingState, _order_verdicts, _orders_frame

BAR = pd.Timestamp("2025-06-02T14:00Z")
SYMBOLS = [f"S{i:03d}" for i in range(12)]


def same(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series) -> None:
    """Equal values (exactly), dtypes, columns and index, NaN in the same places."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert [str(d) for d in a.dtypes] == [str(d) for d in b.dtypes]
        assert a.columns.dtype == b.columns.dtype
    else:
        pd.testing.assert_series_equal(a, b, check_exact=True)
    assert type(a.index) is type(b.index) and a.index.dtype == b.index.dtype


def _fills(rng: random.Random, n: int, *, mid_nan: bool = False, start: int = 1) -> list[Fill]:
    out = []
    for i in range(n):
        ts = BAR.to_pydatetime() if rng.random() < 0.7 else BAR.to_pydatetime() - dt.timedelta(minutes=5)
        out.append(Fill(f"F{start + i}", f"C{rng.randint(0, 9)}", rng.choice(SYMBOLS), rng.choice([Side.BUY, Side.SELL]),
                        float(rng.randint(1, 400)), rng.uniform(10, 300), rng.uniform(0, 2), ts, start + i,
                        math.nan if mid_nan else rng.uniform(10, 300)))
    return out


# ---- positions: fills in, taken in, the expected book, reconciliation --------------------------------

@pytest.mark.parametrize("n", [0, 1, 3, 25])
@pytest.mark.parametrize("mid_nan", [False, True])
def test_fills_frame_of_broker_fills_is_the_generic_frame(n, mid_nan):
    fills = _fills(random.Random(n), n, mid_nan=mid_nan)
    same(fills_frame(fills), _generic_fills_frame(fills))


def test_fills_frame_leaves_other_inputs_to_the_generic_path():
    f = _fills(random.Random(1), 2)
    mappings = [{"fill_id": "x", "symbol": "A", "side": "BUY", "quantity": 1.0, "price": 2.0}]
    assert plain_fill_columns(mappings) is None
    assert plain_fill_columns([f[0], {**f[1].__dict__}]) is None
    stamped = Fill(**{**f[0].__dict__, "ts": pd.Timestamp(f[0].ts)})   # a pandas Timestamp: not plain
    assert plain_fill_columns([stamped]) is None
    same(fills_frame(mappings), _generic_fills_frame(mappings))


def _ref_taken_in(fills: list[Fill], recorded: set[str], orders: pd.DataFrame, account: str):
    """positions_step before: classify, slippage, the taken-in columns, the account."""
    incoming = fills_frame(fills)
    own, foreign = classify_fills(incoming, recorded, orders, BAR)
    own = own.assign(slippage_bps=slippage_bps(own)) if len(own) else empty_taken()
    return (own[TAKEN_COLUMNS].assign(account=account) if len(own) else None), foreign


@pytest.mark.parametrize("seed", range(15))
def test_take_in_plain_is_classify_fills_then_the_taken_table(seed):
    rng = random.Random(seed)
    fills = _fills(rng, rng.randint(1, 12))
    if rng.random() < 0.3:   # a fill reported twice
        fills.append(fills[0])
    recorded = {f.fill_id for f in fills if rng.random() < 0.2}
    ids = sorted({f.client_order_id for f in fills})
    known = [c for c in ids if rng.random() < 0.8]   # the rest are foreign
    orders = pd.DataFrame({"client_order_id": known, "sent": [rng.random() < 0.8 for _ in known],
                           "decision_price": [rng.choice([np.nan, rng.uniform(10, 300)]) for _ in known],
                           "decision_bar": ["b"] * len(known)})
    got = take_in_plain(fills, plain_fill_columns(fills), recorded, orders, BAR, "replay")
    want_own, want_foreign = _ref_taken_in(fills, recorded, orders, "replay")
    own, foreign = got
    assert (own is None) == (want_own is None)
    if own is not None:
        same(own, want_own)
    same(fills_frame(foreign), want_foreign) if len(want_foreign) else None
    assert len(foreign) == len(want_foreign)


def test_take_in_plain_defers_to_the_frame_path_on_a_repeated_order_id():
    fills = _fills(random.Random(2), 3)
    orders = pd.DataFrame({"client_order_id": ["C1", "C1"], "sent": [True, False], "decision_price": [1.0, 2.0],
                           "decision_bar": ["b", "b"]})
    assert take_in_plain(fills, plain_fill_columns(fills), set(), orders, BAR, "replay") is None


def _ref_with_fills(book: pd.Series, fills: pd.DataFrame) -> pd.Series:
    if not len(fills):
        return book
    add = pd.Series(signed_quantity(fills), index=fills["symbol"].to_numpy(), dtype=float).groupby(level=0).sum()
    total = book.add(add, fill_value=0.0).sort_index()
    total = pd.Series(round_qty(total.to_numpy()), index=total.index, dtype=float, name="quantity")
    return total[total != 0]


@pytest.mark.parametrize("seed", range(12))
def test_with_fills_is_the_series_sum(seed):
    rng = random.Random(seed)
    book = pd.Series(dtype=float, name="quantity")
    if seed % 3 == 0:   # a book as read back elsewhere: object index
        book = pd.Series([1.0, -2.0], index=pd.Index(["S001", "S004"], dtype=object), name="quantity")
    for step in range(5):
        k = rng.randint(0, 6)
        names = rng.sample(SYMBOLS, k) if rng.random() < 0.8 else [rng.choice(SYMBOLS)] * k   # repeated symbols
        fills = pd.DataFrame({"fill_id": [f"{step}-{i}" for i in range(k)], "symbol": names,
                              "side": [rng.choice(["BUY", "SELL", "buy"]) for _ in names],
                              "quantity": [rng.choice([1.0, 0.1, 0.2, 0.3, 1e-7, 250.0]) for _ in names]})
        got, want = with_fills(book, fills), _ref_with_fills(book, fills)
        same(got, want)
        book = want


def _ref_reconcile(expected, broker, tol):
    exp, brk = pd.Series(expected, dtype=float), pd.Series(broker, dtype=float)
    symbols = exp.index.union(brk.index).sort_values()
    e = round_qty(exp.reindex(symbols, fill_value=0.0).to_numpy())
    b = round_qty(brk.reindex(symbols, fill_value=0.0).to_numpy())
    diff = round_qty(b - e)
    table = pd.DataFrame({"symbol": symbols.astype(str), "expected": e, "broker": b, "difference": diff,
                          "mismatch": ~(np.abs(diff) <= tol)}, columns=RECON_COLUMNS)
    held = (e != 0) | (b != 0) | table["mismatch"].to_numpy()
    return table[held].reset_index(drop=True)


@pytest.mark.parametrize("seed", range(12))
def test_reconcile_builds_the_held_rows_the_full_table_had(seed):
    rng = random.Random(seed)

    def book():
        names = rng.sample(SYMBOLS, rng.randint(0, 8))
        return pd.Series([rng.choice([0.0, 1.0, -2.0, 1e-8, np.nan, 3.5]) for _ in names], index=names, dtype=float)

    expected, broker, tol = book(), book(), rng.choice([0.0, 0.5])
    same(reconcile(expected, broker, tol).table, _ref_reconcile(expected, broker, tol))


@pytest.mark.parametrize("seed", range(10))
def test_taken_is_reindex_then_fillna(seed):
    rng = random.Random(seed)
    names = rng.sample(SYMBOLS, rng.randint(0, 8))
    values = pd.Series([rng.choice([1.5, -2.0, np.nan]) for _ in names], index=names, dtype=float)
    flags = pd.Series([rng.random() < 0.5 for _ in names], index=names, dtype=bool)
    target = pd.Index(sorted(rng.sample(SYMBOLS, rng.randint(0, 10))))
    at = indexer(values.index, target)
    np.testing.assert_array_equal(taken(at, values.to_numpy()), values.reindex(target).to_numpy(dtype=float))
    np.testing.assert_array_equal(taken(at, values.to_numpy(), 0.0),
                                  values.reindex(target).fillna(0.0).to_numpy(dtype=float))
    np.testing.assert_array_equal(taken(at, flags.to_numpy(), False),
                                  flags.reindex(target).fillna(False).to_numpy(dtype=bool))


# ---- executions: the record and the kill switch's events -------------------------------------------------

def test_events_table_is_the_events_frame_normalised():
    now = BAR.to_pydatetime()
    events = [KillSwitchEvent(now, "stale_data", 0.25, 2.0, "PASS", "bar x"),
              KillSwitchEvent(now, "daily_loss", None, 0.02, "PASS", "n"),
              KillSwitchEvent(now, "order", math.nan, 5.0, "DENY", "MAX_ORDER_NOTIONAL", subject="c1"),
              KillSwitchEvent(now, "transition", None, None, "INFO", "r", "ACTIVE->HALTED"),
              KillSwitchEvent(now, "order_rate", 3, 1, "TRIP", "r")]
    for part in (events, events[:1], []):
        want = _events(pd.DataFrame([e.as_dict() for e in part], columns=list(KillSwitchEvent.__dataclass_fields__)))
        same(events_table(part, "replay"), want.assign(account="replay"))
    stamped = [KillSwitchEvent(pd.Timestamp(now), "x", 1.0, 2.0, "PASS", "")]   # ns Timestamps: the frame path
    want = _events(pd.DataFrame([e.as_dict() for e in stamped], columns=list(KillSwitchEvent.__dataclass_fields__)))
    same(events_table(stamped, "live"), want.assign(account="live"))


@pytest.mark.parametrize("n", [0, 1, 5])
def test_record_is_built_as_column_by_column(n):
    rng = random.Random(n)
    frame = pd.DataFrame({"client_order_id": [f"C{i}" for i in range(n)], "symbol": rng.sample(SYMBOLS, n),
                          "side": [rng.choice(["BUY", "SELL"]) for _ in range(n)],
                          "quantity": [float(rng.randint(1, 9)) for _ in range(n)], "order_type": ["MARKET"] * n,
                          "decision_price": [rng.uniform(1, 9) for _ in range(n)]})
    verdict = np.array([rng.choice(["ALLOW", "DENY"]) for _ in range(n)], dtype=object)
    reason = np.array([rng.choice(["", "HALTED"]) for _ in range(n)], dtype=object)
    results = {f"C{i}": SubmitResult(f"C{i}", rng.choice([OrderStatus.ACCEPTED, OrderStatus.REJECTED]))
               for i in range(n) if rng.random() < 0.6}
    same(_record(frame, verdict, reason, results, "replay"), _record_reference(frame, verdict, reason, results, "replay"))


@pytest.mark.parametrize("seed", range(10))
def test_order_verdicts_without_groupby_when_each_symbol_has_one_order(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    names = rng.sample(SYMBOLS, n) if seed % 2 else [rng.choice(SYMBOLS[:3]) for _ in range(n)]
    orders = _orders_frame(pd.DataFrame({"client_order_id": [f"C{i}" for i in range(n)], "symbol": names,
                                         "side": [rng.choice(["BUY", "SELL", "sell"]) for _ in range(n)],
                                         "quantity": [float(rng.randint(1, 50)) for _ in range(n)]}))
    base = pd.Series({s: float(rng.randint(-20, 20)) for s in rng.sample(SYMBOLS, 5)})
    px = pd.Series({s: rng.uniform(5, 50) for s in SYMBOLS})
    limits = Limits(0.02, 0.1, 1.0, 500.0, 200, 2, 3, 5, False, "halt")
    got, gross = _order_verdicts(orders, base, px, rng.choice(list(TradingState)), limits, 20_000.0)
    # the reference: each order's position before it = the book + the earlier orders of its symbol
    sign = np.where(orders["side"].str.upper() == "BUY", 1.0, -1.0)
    d = sign * orders["quantity"].to_numpy()
    before = base.reindex(orders["symbol"]).fillna(0.0).to_numpy() + (
        pd.Series(d).groupby(orders["symbol"].to_numpy()).cumsum().to_numpy() - d)
    after = before + d
    reduces = (np.abs(after) < np.abs(before)) & (np.sign(after) * np.sign(before) >= 0)
    np.testing.assert_array_equal(got["reduces"].to_numpy(), reduces)
    assert math.isfinite(gross)


# ---- pnl ---------------------------------------------------------------------------------------------

def _ref_apply_fills(book: PnlBook, fills: pd.DataFrame):
    pos = book.positions
    if not len(fills):
        return book, pd.Series(0.0, index=pos.index, name="realised_pnl")
    f = fills.sort_values("seq", kind="stable")
    symbols = pos.index.union(pd.Index(f["symbol"].unique())).sort_values()
    qty = np.array(pos["quantity"].reindex(symbols, fill_value=0.0), dtype=float)
    avg = np.array(pos["avg_cost"].reindex(symbols), dtype=float)
    mark = np.array(pos["mark"].reindex(symbols), dtype=float)
    realised = np.zeros(len(symbols))
    d_all, x_all = signed_quantity(f), f["price"].to_numpy(dtype=float)
    where = symbols.get_indexer(f["symbol"])
    rank = f.groupby("symbol", sort=False).cumcount().to_numpy()
    for k in range(int(rank.max()) + 1):
        sel = rank == k
        i, d, x = where[sel], d_all[sel], x_all[sel]
        p, a = qty[i], avg[i]
        same_side = (p == 0) | (np.sign(p) == np.sign(d))
        closed = np.where(same_side, 0.0, np.minimum(np.abs(d), np.abs(p)))
        realised[i] += closed * (x - np.nan_to_num(a)) * np.sign(p)
        p_new = round_qty(p + d)
        with np.errstate(invalid="ignore", divide="ignore"):
            added = (np.abs(p) * np.nan_to_num(a) + np.abs(d) * x) / np.abs(p_new)
        a_new = np.where(same_side, added, np.where(np.abs(d) > np.abs(p), x, a))
        qty[i], avg[i], mark[i] = p_new, np.where(p_new == 0, np.nan, a_new), x
    cash = book.cash - float(np.dot(d_all, x_all)) - float(f["fee"].sum())
    table = pd.DataFrame({"quantity": qty, "avg_cost": avg, "mark": mark}, index=symbols)
    new = PnlBook(cash, table[table["quantity"] != 0], book.realised + float(realised.sum()),
                  book.fees + float(f["fee"].sum()), book.value)
    return new, pd.Series(realised, index=symbols, name="realised_pnl")


def _ref_per_symbol(book: PnlBook, fills: pd.DataFrame, marks: pd.Series) -> pd.DataFrame:
    new, realised = _ref_apply_fills(book, fills)
    pos = new.positions
    given = pd.Series(marks, dtype=float).reindex(pos.index).to_numpy()
    fresh = np.isfinite(given) & (given > 0)
    mark = np.where(fresh, given, pos["mark"].to_numpy(dtype=float))
    qty = pos["quantity"].to_numpy(dtype=float)
    mv, unreal = qty * mark, qty * (mark - pos["avg_cost"].to_numpy(dtype=float))
    symbols = pos.index.union(realised.index).sort_values()
    out = pd.DataFrame({
        "symbol": symbols.astype(str),
        "quantity": pos["quantity"].reindex(symbols).fillna(0.0).to_numpy(),
        "avg_cost": pos["avg_cost"].reindex(symbols).to_numpy(),
        "mark": pd.Series(mark, index=pos.index).reindex(symbols).to_numpy(),
        "mark_stale": ~pd.Series(fresh, index=pos.index).reindex(symbols).fillna(True).astype(bool).to_numpy(),
        "market_value": pd.Series(mv, index=pos.index).reindex(symbols).fillna(0.0).to_numpy(),
        "unrealised_pnl": pd.Series(unreal, index=pos.index).reindex(symbols).fillna(0.0).to_numpy(),
        "realised_pnl": realised.reindex(symbols).fillna(0.0).to_numpy(),
    })
    out.loc[out["quantity"] == 0, "mark_stale"] = False
    return out


@pytest.mark.parametrize("seed", range(12))
def test_bar_pnl_is_the_reindexed_book(seed):
    rng = random.Random(seed)
    book = PnlBook.start(1e6)
    seq = 0
    for _ in range(6):
        k = rng.randint(0, 5)
        names = rng.sample(SYMBOLS, k) if rng.random() < 0.7 else [rng.choice(SYMBOLS[:2]) for _ in range(k)]
        seqs = list(range(seq + 1, seq + 1 + k))
        seq += k
        if rng.random() < 0.3:
            rng.shuffle(seqs)   # not in booking order: sorted by the stage
        fills = pd.DataFrame({"fill_id": [f"f{s}" for s in seqs], "symbol": names,
                              "side": [rng.choice(["BUY", "SELL"]) for _ in names],
                              "quantity": [float(rng.randint(1, 30)) for _ in names],
                              "price": [rng.uniform(5, 50) for _ in names], "fee": [rng.uniform(0, 1) for _ in names],
                              "seq": np.array(seqs, dtype=np.int64), "mid": [rng.uniform(5, 50) for _ in names]})
        marks = pd.Series({s: rng.choice([rng.uniform(5, 50), np.nan]) for s in SYMBOLS})
        try:
            want = _ref_per_symbol(book, fills, marks)
        except ValueError:   # a held symbol with no mark at all: both refuse
            with pytest.raises(ValueError):
                bar_pnl(book, fills, marks, start_of_day_equity=1e6)
            break
        new, _, per_symbol = bar_pnl(book, fills, marks, start_of_day_equity=1e6)
        same(per_symbol, want)
        ref_book, _ = _ref_apply_fills(book, fills)
        same(new.positions[["quantity", "avg_cost"]], ref_book.positions[["quantity", "avg_cost"]])
        assert new.cash == ref_book.cash and new.fees == ref_book.fees and new.realised == ref_book.realised
        book = new


# ---- the execution record ---------------------------------------------------------------------------

def _ref_open(po: pd.DataFrame | None, e: pd.DataFrame) -> pd.DataFrame:
    open_ = ["ACCEPTED", "PARTIALLY_FILLED", "SUBMITTED"]
    rows = [f[OPEN_ORDER_COLUMNS].assign(k=2 * k + ~f["status"].isin(open_)) for f, k in ((po, 0), (e, 1))
            if f is not None and len(f)]
    if not rows:
        return _empty(OPEN_ORDER_COLUMNS)
    last = pd.concat(rows, ignore_index=True).sort_values("k", kind="stable").drop_duplicates(
        "client_order_id", keep="last")
    return last[last["status"].isin(open_)][OPEN_ORDER_COLUMNS].sort_values("client_order_id").reset_index(drop=True)


@pytest.mark.parametrize("seed", range(12))
def test_add_bar_keeps_the_working_orders_and_first_records_as_before(seed):
    rng = random.Random(seed)
    statuses = ["ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED", "NOT_SENT", "EXPIRED"]
    rec = MemoryRecord()
    orders_ref: dict = {}
    for b in range(4):
        bar = f"2025-06-02T14:{b:02d}Z"
        n = rng.randint(0, 6)
        ids = [f"C{rng.randint(0, 9)}" for _ in range(n)]   # ids may repeat within and across bars
        sized = pd.DataFrame({"client_order_id": ids, "has_order": np.array([rng.random() < 0.7 for _ in ids], bool),
                              "price": [rng.uniform(1, 9) for _ in ids]})
        e = pd.DataFrame({"client_order_id": ids, "status": [rng.choice(statuses) for _ in ids],
                          "filled_quantity": [float(rng.randint(0, 3)) for _ in ids],
                          "decision_price": [rng.uniform(1, 9) for _ in ids]})
        m = rng.randint(0, 4)
        po = pd.DataFrame({"client_order_id": [f"C{rng.randint(0, 9)}" for _ in range(m)],
                           "status": [rng.choice(statuses) for _ in range(m)],
                           "filled_quantity": [float(rng.randint(0, 3)) for _ in range(m)]})
        positions = {"positions_orders": po, "positions_account": pd.DataFrame({"fill_cursor": [b]})}
        rec.add_bar(bar, positions, sized, {"executions": e})
        intents = sized[sized["has_order"]]
        new = dict(zip(intents["client_order_id"], zip([False] * len(intents), intents["price"].astype(float),
                                                        [bar] * len(intents), strict=True), strict=True))
        orders_ref.update({c: v for c, v in new.items() if c not in orders_ref})
        sent = e.loc[e["status"] != "NOT_SENT", ["client_order_id", "decision_price"]]
        orders_ref.update({c: (True, *orders_ref.get(c, (False, float(dp), bar))[1:])
                           for c, dp in zip(sent["client_order_id"], sent["decision_price"], strict=True)})
        assert rec.orders == orders_ref
        want = _ref_open(po, e)
        pd.testing.assert_frame_equal(rec.open, want, check_exact=True, check_dtype=False)
        assert rec.cursor == b


@pytest.mark.parametrize("seed", range(10))
def test_pnl_fills_passes_one_ordered_table_through(seed):
    rng = random.Random(seed)
    fills = fills_frame(_fills(rng, rng.randint(1, 6), start=rng.randint(1, 50)))
    if seed % 4 == 0:
        fills = fills.iloc[::-1]   # out of order: the general path sorts
    if seed % 5 == 0:
        fills = pd.concat([fills, fills.iloc[:1]])   # a repeated fill id: the general path drops it
    other = fills_frame([]) if seed % 3 else fills_frame(_fills(rng, 2, start=900))
    got = pnl_fills([fills, other])
    frames = [f for f in (fills, other) if len(f)]
    want = pd.concat(frames, ignore_index=True).drop_duplicates("fill_id", keep="first").sort_values(
        ["seq", "fill_id"], kind="mergesort").reset_index(drop=True)
    same(got, want)
    assert got is not fills   # a new frame: the P&L stage may add columns
    assert list(got.columns) == FILL_COLUMNS


# ---- sorting and the gate's book ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_in_symbol_order_is_the_stable_sort(seed):
    rng = random.Random(seed)
    names = sorted(rng.choices(SYMBOLS, k=rng.randint(0, 9))) if seed % 2 else rng.choices(SYMBOLS, k=9)
    if seed == 3:
        names[0] = None   # not text: sorted by pandas
    frame = pd.DataFrame({"symbol": names, "x": np.arange(len(names), dtype=float)}, index=np.arange(len(names)) * 2)
    same(in_symbol_order(frame), frame.sort_values("symbol", kind="mergesort"))


@pytest.mark.parametrize("seed", range(10))
def test_current_quantities_is_the_reindexed_book(seed):
    rng = random.Random(seed)
    held = rng.sample(SYMBOLS, rng.randint(1, 6))
    if seed == 4:
        held = held + held[:1]   # a symbol twice: reindex says what is wrong
    book = pd.DataFrame({"symbol": held, "qty": [rng.choice([1.0, -3.0, np.nan]) for _ in held]})
    symbols = np.array(sorted(rng.sample(SYMBOLS, 8)), dtype=object)
    try:
        want = book.set_index("symbol")["qty"].reindex(symbols).fillna(0.0).to_numpy(dtype=float)
    except ValueError:
        with pytest.raises(ValueError):
            current_quantities(book, symbols)
        return
    np.testing.assert_array_equal(current_quantities(book, symbols), want)


@pytest.mark.parametrize("seed", range(12))
def test_orders_of_is_the_order_frame_of_the_order_rows(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 6)
    sized = {"client_order_id": [f"C{i}" for i in range(n)], "symbol": rng.sample(SYMBOLS, n),
             "side": [rng.choice(["BUY", "SELL"]) for _ in range(n)],
             "shares": [float(rng.randint(-5, 5)) for _ in range(n)], "price": [rng.uniform(1, 5) for _ in range(n)],
             "has_order": np.array([rng.random() < 0.6 for _ in range(n)], dtype=bool),
             "gate": [rng.choice(["exit", "enter", "hold"]) for _ in range(n)]}
    if seed % 2:
        sized["order_type"] = [rng.choice(["", "MARKET", "MOC"]) for _ in range(n)]
    if seed % 3 == 0:
        sized["reduce_only"] = np.array([rng.random() < 0.5 for _ in range(n)], dtype=bool)
    frame = pd.DataFrame(sized)
    same(_orders_of(frame, "B"), _order_frame(frame[frame["has_order"]].reset_index(drop=True), "B"))


def test_pnl_tables_as_built_before():
    scores = pd.DataFrame({"symbol": ["A", "B", "C"], "spread_bps": [1.0, np.nan, 3.0], "impact_bps": [2.0, 3.0, 0.5]})
    s = scores.set_index("symbol")
    same(est_costs(scores), (s["spread_bps"] / 2 + s["impact_bps"]).astype(float))
    fills = pd.DataFrame({"fill_id": ["f1", "f2"], "symbol": ["A", "C"], "side": ["BUY", "SELL"], "quantity": [3.0, 2.0],
                          "price": [10.0, 20.0], "fee": [0.1, 0.2], "seq": np.array([1, 2], dtype=np.int64),
                          "mid": [10.0, 20.0]})
    for book in (PnlBook.start(1e5), PnlBook(1e5, pd.DataFrame({"quantity": [5.0], "avg_cost": [9.0], "mark": [9.5]},
                                                                index=pd.Index(["A"], name="symbol")), 0.0, 0.0, 1e5)):
        for f in (fills, fills.iloc[0:0]):
            new, out = compute_pnl(f, pd.Series({"A": 11.0, "C": 19.0}), est_costs(scores), book, 1e5, "2025-06-02",
                                   dt.date(2025, 6, 2), "replay")
            same(out["pnl_book"], new.positions.reset_index(names="symbol").assign(account="replay"))


def _ref_window_marks(window, fallback=None) -> pd.DataFrame:
    """window_marks before (set_index of the snapshot, a Timestamp per symbol, a sort, set_index of the marks)."""
    panel = window.panel()
    close = np.array(panel["close"], dtype=float)
    snap = window.snapshot.set_index("symbol").reindex(panel.symbols)
    if "hold_since" in snap and len(panel.times):
        since = pd.DatetimeIndex(pd.to_datetime(snap["hold_since"], utc=True))
        held = since.notna()
        if held.any():
            at = panel.times.get_indexer(since[held]) if len(since[held]) else np.array([], int)
            cols = np.nonzero(np.asarray(held))[0]
            rows = np.arange(len(panel.times))[:, None]
            start = np.where(at >= 0, at, 0)
            close[:, cols] = np.where(rows >= start[None, :], np.nan, close[:, cols])
    ok = np.isfinite(close) & (close > 0)
    last = np.where(ok, np.arange(len(close))[:, None], -1).max(axis=0)
    mark = np.where(last >= 0, close[np.maximum(last, 0), np.arange(close.shape[1])], np.nan)
    mark_ts = pd.DatetimeIndex([panel.times[i] if i >= 0 else pd.NaT for i in last], tz="UTC")
    out = pd.DataFrame({"symbol": panel.symbols.astype(object), "mark": mark, "mark_ts": mark_ts,
                        "stale": last != len(close) - 1})
    if fallback is not None and len(fallback):
        fb = pd.Series(fallback, dtype=float)
        need = out.set_index("symbol")["mark"].reindex(fb.index)
        extra = fb[need.isna().to_numpy() & np.isfinite(fb.to_numpy())]
        if len(extra):
            out = out[~out["symbol"].isin(extra.index)]
            out = pd.concat([out, pd.DataFrame({"symbol": extra.index.astype(object), "mark": extra.to_numpy(),
                                                "mark_ts": pd.DatetimeIndex([pd.NaT] * len(extra), tz="UTC"),
                                                "stale": True})], ignore_index=True)
    return out.sort_values("symbol", kind="mergesort").reset_index(drop=True)


def test_window_marks_as_before_on_simulated_windows():
    from assets.positions.stage import window_marks
    from resources.market.resource import MarketDataResource

    market = MarketDataResource()
    for bar in ("2025-06-03T13:35Z", "2025-06-03T15:00Z"):
        window, _ = market.window(bar)
        symbols = window.snapshot["symbol"].tolist()
        for fallback in (None, pd.Series(dtype=float), pd.Series({symbols[0]: 10.0, "ZZZ": 5.0, "A00": 4.0, "AAA": np.nan})):
            same(window_marks(window, fallback), _ref_window_marks(window, fallback))


def _ref_quotes_frame(snapshot: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    f = features.set_index("symbol")
    s = snapshot[snapshot["status"] == "ok"].set_index("symbol").reindex(f.index)
    return pd.DataFrame({"mid": (s["bid"] + s["ask"]) / 2, "bid": s["bid"], "ask": s["ask"],
                         "volume": s["volume"], "sigma_daily_bps": f["sigma_daily_bps"],
                         "adv": f["adv_shares"], "open": s["open"], "close": s["close"]},
                        index=f.index)[["mid", "bid", "ask", "volume", "sigma_daily_bps", "adv", "open", "close"]]


@pytest.mark.parametrize("seed", range(12))
def test_quotes_frame_as_before(seed):
    from assets.venue import quotes_frame

    rng = random.Random(seed)
    names = rng.sample(SYMBOLS, 8)
    rows = names + rng.sample(names, 2)   # a symbol twice: only one of its rows is ok
    status = ["ok" if i < 8 and rng.random() < 0.8 else "missing" for i in range(len(rows))]
    snapshot = pd.DataFrame({"symbol": rows, "status": status,
                             **{c: [rng.choice([rng.uniform(10, 20), np.nan]) for _ in rows]
                                for c in ("bid", "ask", "volume", "open", "close")}})
    features = pd.DataFrame({"symbol": sorted(rng.sample(SYMBOLS, 9)),
                             "sigma_daily_bps": [rng.uniform(50, 200) for _ in range(9)],
                             "adv_shares": [float(rng.randint(1, 9)) * 1e6 for _ in range(9)]})
    if seed % 4 == 0:
        snapshot["volume"] = np.arange(len(rows))   # integer volumes: the general path
    same(quotes_frame(snapshot, features), _ref_quotes_frame(snapshot, features))

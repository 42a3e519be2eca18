"""The ``positions`` stage: the book before this bar's orders, from the broker, reconciled (design: bar timeline).

Per bar, in this order:

1. the paper venue is **settled** at the bar (fills due at its open, MOC fills and expiries at the closing
   bar: ``resources.brokers.paper``); a real broker fills on its own;
2. every fill the broker reports (since the recorded fill cursor) for the engine's own orders that lineage
   lacks is **taken in** (``positions_fills``, with its source: ``settled`` | ``broker`` | ``recovered``,
   its decision price and slippage); fills of orders the engine never decided are recorded in
   ``positions_foreign_fills`` and not booked, so the reconciliation shows them;
3. every order the engine last recorded as working, is working now, or was just filled, is looked up:
   its status as the broker holds it, and whether it changed (``positions_orders``); working orders'
   remaining quantity is the ``pending_qty`` sizing nets against its target;
4. the broker's book (cash, positions, cost basis) is read, marked at the bar's closes and reconciled
   against the sum of every recorded fill (the expected book), both rounded to ``broker.qty_decimals``.

Before the settlement, the window's corporate actions in effect that the venue has not applied yet are applied
to it (a split scales the position and cost basis, a cash dividend pays cash), once each, recorded in
``positions_adjustments``; the expected book follows (a fill before a split counts × its ratio).

Marks (SPEC §9 "a held name with no bar is valued at its last good mark, flagged stale"): a held symbol is
marked at this bar's close when its row is ``ok`` and it is not held for a split-like jump; otherwise at its
last good close in the window (adjusted to today's basis), else at the last mark the P&L book recorded, and
``mark_stale`` says so. A missing, skipped or phantom price therefore never moves the portfolio value, so no
loss limit of the kill switch fires on it and no order is sized on a value it invented.

The broker is the source of truth; a difference beyond ``kill_switch.reconciliation_tolerance_shares`` is
a mismatch, recorded here and acted on by the kill switch. A bar that is not the live bar (``settle`` and
``take_in`` False) reads the book without moving the venue or taking fills in: those belong to the live bar.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from assets.bars.logic import BarWindow
from assets.execution_record import ExecutionRecord
from assets.positions.logic import (
    FILL_COLUMNS,
    classify_fills,
    fills_frame,
    plain_fill_columns,
    reconcile,
    scaled_by_splits,
    slippage_bps,
    take_in_plain,
    with_fills,
)
from assets.take import in_symbol_order, indexer, one_row, taken
from resources.brokers.protocol import OPEN_STATUSES, Broker, Order
from resources.brokers.quantity import round_qty

POSITION_COLUMNS = {"symbol": object, "qty": float, "price": float, "market_value": float, "weight": float,
                    "expected_qty": float, "difference": float, "pending_qty": float, "cost_basis": float,
                    "mark_stale": bool}
ORDER_COLUMNS = {"client_order_id": object, "symbol": object, "side": object, "order_type": object,
                 "quantity": float, "filled_quantity": float, "remaining": float, "prev_status": object,
                 "status": object, "reason_code": object, "changed": bool, "source": object}
TAKEN_COLUMNS = [*FILL_COLUMNS, "source", "decision_price", "slippage_bps"]
_OPEN = {s.value for s in OPEN_STATUSES}


def typed_book(out: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A recorded book with typed columns even when it was empty: an empty first write creates no lineage
    table, so an empty ``positions`` partition reads back without columns (and must not crash an audit)."""
    pos = out["positions"]
    if pos.empty:
        pos = pd.DataFrame({c: pd.Series(dtype=t) for c, t in POSITION_COLUMNS.items()})
    pos = pos.assign(**{c: 0.0 for c in ("pending_qty",) if c not in pos})
    typed = {"positions_fills": empty_taken(), "positions_foreign_fills": fills_frame([]),
             "positions_adjustments": empty_actions(),
             "positions_orders": pd.DataFrame({c: pd.Series(dtype=t) for c, t in ORDER_COLUMNS.items()})}
    empty = {t: f for t, f in typed.items() if len(out.get(t, pd.DataFrame()).columns) == 0}
    return {**out, **empty, "positions": pos}


def marks_from(snapshot: pd.DataFrame) -> pd.Series:
    """This bar's closes of the symbols with a good row (``ok`` and not held for a split-like jump)."""
    ok = snapshot["status"] == "ok"
    if "hold_reason" in snapshot:
        ok &= snapshot["hold_reason"].fillna("").astype(str) == ""
    good = snapshot[ok]
    return pd.Series(good["close"].to_numpy(dtype=float), index=good["symbol"].to_numpy(), dtype=float)


MARK_COLUMNS = ["symbol", "mark", "mark_ts", "stale"]


def window_marks(window: BarWindow, fallback: pd.Series | None = None) -> pd.DataFrame:
    """Per universe symbol (and every ``fallback`` symbol) its last good mark at the window's bar (module
    docstring): ``mark``, the bar it is from (``mark_ts``; NaT for a fallback mark) and ``stale``."""
    panel = window.panel()
    close = np.array(panel["close"], dtype=float)
    snapshot = window.snapshot
    names = snapshot["symbol"].tolist()
    if len(set(names)) == len(names) and names == panel.symbols.tolist():
        snap = snapshot   # the panel's symbols are the snapshot's, in its order: reindexing would move nothing
    else:
        snap = snapshot.set_index("symbol").reindex(panel.symbols)
    if "hold_since" in snap.columns and len(panel.times):
        since = pd.DatetimeIndex(pd.to_datetime(snap["hold_since"], utc=True))
        held = since.notna()
        if held.any():  # a suspected split's prices are not marks for an unadjusted book
            at = panel.times.get_indexer(since[held]) if len(since[held]) else np.array([], int)
            cols = np.nonzero(np.asarray(held))[0]
            rows = np.arange(len(panel.times))[:, None]
            start = np.where(at >= 0, at, 0)
            close[:, cols] = np.where(rows >= start[None, :], np.nan, close[:, cols])
    ok = np.isfinite(close) & (close > 0)
    last = np.where(ok, np.arange(len(close))[:, None], -1).max(axis=0) if len(close) else np.full(
        len(panel.symbols), -1)
    mark = np.where(last >= 0, close[np.maximum(last, 0), np.arange(close.shape[1])] if len(close) else np.nan,
                    np.nan)
    if len(close) and (last >= 0).any() and str(panel.times.tz) == "UTC":   # one take (same unit, NaT where none)
        mark_ts = panel.times[np.maximum(last, 0)].where(last >= 0)
    elif len(close):
        mark_ts = pd.DatetimeIndex([panel.times[i] if i >= 0 else pd.NaT for i in last], tz="UTC")
    else:
        mark_ts = pd.DatetimeIndex([pd.NaT] * len(panel.symbols), tz="UTC")
    out = pd.DataFrame({"symbol": panel.symbols.astype(object), "mark": mark, "mark_ts": mark_ts,
                        "stale": last != len(close) - 1})
    if fallback is not None and len(fallback):
        fb = pd.Series(fallback, dtype=float)
        universe = pd.Index(out["symbol"])
        need = (taken(indexer(universe, fb.index), out["mark"].to_numpy()) if universe.is_unique
                else out.set_index("symbol")["mark"].reindex(fb.index).to_numpy())
        extra = fb[np.isnan(need) & np.isfinite(fb.to_numpy())]
        if len(extra):
            out = out[~out["symbol"].isin(extra.index)]
            out = pd.concat([out, pd.DataFrame({"symbol": extra.index.astype(object), "mark": extra.to_numpy(),
                                                "mark_ts": pd.DatetimeIndex([pd.NaT] * len(extra), tz="UTC"),
                                                "stale": True})], ignore_index=True)
    return in_symbol_order(out).reset_index(drop=True)[MARK_COLUMNS]


_TAKEN_TYPES = {"fill_id": object, "client_order_id": object, "symbol": object, "side": object, "quantity": float,
                "price": float, "fee": float, "ts": "datetime64[us, UTC]", "seq": np.int64, "mid": float,
                "source": object, "decision_price": float, "slippage_bps": float}


def empty_taken() -> pd.DataFrame:
    """A typed, empty fills table (its first recording gets real column types)."""
    return _empty_taken().copy()  # built once: the stepping loop asks for it bar after bar


@functools.cache
def _empty_taken() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _TAKEN_TYPES.items()})


def book_tables(qty: pd.Series, marks: pd.Series, cash: float, expected: pd.Series, source: str,
                pending: pd.Series | None = None, cost_basis: pd.Series | None = None,
                stale: pd.Series | None = None, extra: dict | None = None) -> dict:
    """Positions and account tables from quantities, marks, cash and the expected book (pure); ``stale``
    (symbol → bool) flags marks that are not this bar's close; ``extra``: more columns of the account row
    (after the book's own, in their order)."""
    qty = pd.Series(round_qty(qty.to_numpy(dtype=float)), index=qty.index, dtype=float)
    qty = qty[qty != 0]
    rec = reconcile(expected, qty)
    pending = pending if pending is not None else pd.Series(dtype=float)
    symbols = qty.index.union(expected.index).union(pending[pending != 0].index).sort_values()

    def on(s: pd.Series, fill: float | None = None) -> np.ndarray:
        """``s.reindex(symbols)`` (``.fillna(fill)``) as float64, one indexer per source (module take)."""
        if s.index.is_unique and s.dtype.kind == "f":
            return taken(indexer(s.index, symbols), s.to_numpy(), fill)
        r = s.reindex(symbols)
        return (r.fillna(fill) if fill is not None else r).to_numpy(dtype=float)

    q = on(qty, 0.0)
    px = on(marks)
    mv = q * px
    mv_known = np.where(np.isfinite(mv), mv, 0.0)
    equity = cash + float(mv_known.sum())
    flags = pd.Series(stale if stale is not None else {}, dtype=bool)
    stale_on = (taken(indexer(flags.index, symbols), flags.to_numpy(), False) if flags.index.is_unique
                else flags.reindex(symbols).fillna(False).to_numpy(dtype=bool))
    diff = rec.table["difference"] if len(rec.table) else None
    stale_held = stale_on & (q != 0)
    positions = pd.DataFrame({
        "symbol": symbols.astype(str), "qty": q, "price": px, "market_value": mv,
        "weight": mv / equity if equity else np.nan,
        "expected_qty": on(expected, 0.0),
        "difference": on(pd.Series(diff.to_numpy(), index=pd.Index(rec.table["symbol"])), 0.0)
        if diff is not None else 0.0,
        "pending_qty": on(pending, 0.0),
        "cost_basis": on(cost_basis if cost_basis is not None else pd.Series(dtype=float)),
        "mark_stale": stale_held,
    })
    mismatched = (rec.table["symbol"].to_numpy()[rec.table["mismatch"].to_numpy(dtype=bool)].tolist()
                  if len(rec.table) else [])
    account = one_row({
        "cash": float(cash), "equity": equity, "portfolio_value": equity,
        "gross_exposure": float(np.abs(mv_known).sum()) / equity if equity else np.nan,
        "net_exposure": float(mv_known.sum()) / equity if equity else np.nan,
        "unpriced_symbols": int((~np.isfinite(px) & (q != 0)).sum()),
        "stale_marks": int(stale_held.sum()),
        "mismatch": bool(rec.mismatch), "n_mismatched": int(rec.n_mismatched),
        "mismatched_symbols": ",".join(mismatched), "source": source, **(extra or {}),
    })
    return {"positions": positions, "positions_account": account}


ACTION_COLUMNS = ["symbol", "effective_date", "effective_open", "split_ratio", "cash_dividend", "qty_before",
                  "qty_after", "cash_change"]


def empty_actions() -> pd.DataFrame:
    return _empty_actions().copy()


@functools.cache
def _empty_actions() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series(dtype=object), "effective_date": pd.Series(dtype=object),
                         "effective_open": pd.Series(dtype="datetime64[ns, UTC]"),
                         "split_ratio": pd.Series(dtype=float), "cash_dividend": pd.Series(dtype=float),
                         "qty_before": pd.Series(dtype=float), "qty_after": pd.Series(dtype=float),
                         "cash_change": pd.Series(dtype=float)})[ACTION_COLUMNS]


def apply_corporate_actions(broker: Broker, actions: pd.DataFrame | None) -> pd.DataFrame:
    """Have the broker apply the window's corporate actions in effect (``BarWindow.adjustments``) that it has
    not applied yet; the ones applied now, for lineage (``positions_adjustments``). A broker without
    ``apply_corporate_action`` (a real venue adjusts its own book) is left alone."""
    if actions is None or not len(actions) or not hasattr(broker, "apply_corporate_action"):
        return empty_actions()
    rows = []
    for a in actions.sort_values(["effective_open", "symbol"], kind="mergesort").to_dict("records"):  # a handful
        day = pd.Timestamp(a["effective_date"]).date()
        got = broker.apply_corporate_action(str(a["symbol"]), day, float(a["split_ratio"]), float(a["cash_dividend"]))
        if got["applied"]:
            rows.append({"symbol": a["symbol"], "effective_date": day.isoformat(),
                         "effective_open": pd.Timestamp(a["effective_open"]).tz_convert("UTC"),
                         "split_ratio": float(a["split_ratio"]), "cash_dividend": float(a["cash_dividend"]),
                         "qty_before": float(got["qty_before"]), "qty_after": float(got["qty_after"]),
                         "cash_change": float(got["cash_change"])})
    return pd.DataFrame(rows, columns=ACTION_COLUMNS) if rows else empty_actions()


def _order_rows(ids: list[str], known_open: pd.DataFrame, now: dict[str, Order], info: pd.DataFrame) -> pd.DataFrame:
    """One row per order looked at: its last recorded status, its status at the broker now, changed or not,
    and whether lineage knew it as sent (``engine``) or only as an intent (``recovered``).

    With unique client ids in ``known_open`` and ``info`` (always, from a record) the earlier records are
    looked up in dicts and the table built column by column at once; otherwise :func:`_order_rows_general`
    (``Series.get`` per id). Both give the same table (tests/unit/test_stepping_fast_paths2.py)."""
    prev_ids = known_open["client_order_id"].tolist()
    info_ids = info["client_order_id"].tolist() if len(info) else []
    if len(set(prev_ids)) != len(prev_ids) or len(set(info_ids)) != len(info_ids):
        return _order_rows_general(ids, known_open, now, info)
    status_of = dict(zip(prev_ids, known_open["status"].tolist(), strict=True))
    filled_of = dict(zip(prev_ids, known_open["filled_quantity"].tolist(), strict=True))
    sent_of = dict(zip(info_ids, info["sent"].tolist(), strict=True)) if len(info) else {}
    got = [(cid, now[cid]) for cid in ids if cid in now]   # the working orders of one account: a handful
    if not got:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ORDER_COLUMNS.items()})
    cols: dict[str, list] = {c: [] for c in ORDER_COLUMNS}
    for cid, o in got:
        before = status_of.get(cid, "")
        filled_before = float(filled_of.get(cid, 0.0))
        cols["client_order_id"].append(cid)
        cols["symbol"].append(o.symbol)
        cols["side"].append(str(o.side))
        cols["order_type"].append(str(o.order_type))
        cols["quantity"].append(float(o.quantity))
        cols["filled_quantity"].append(float(o.filled_quantity))
        cols["remaining"].append(float(o.remaining))
        cols["prev_status"].append(str(before))
        cols["status"].append(str(o.status))
        cols["reason_code"].append(str(o.reason_code or ""))
        cols["changed"].append(str(before) != str(o.status) or filled_before != float(o.filled_quantity))
        cols["source"].append("engine" if bool(sent_of.get(cid, False)) else "recovered")
    return pd.DataFrame(cols, columns=list(ORDER_COLUMNS))


def _order_rows_general(ids: list[str], known_open: pd.DataFrame, now: dict[str, Order],
                        info: pd.DataFrame) -> pd.DataFrame:
    """:func:`_order_rows` with ``Series.get`` per id (repeated client ids in the earlier records)."""
    prev = known_open.set_index("client_order_id")
    sent = info.set_index("client_order_id")["sent"] if len(info) else pd.Series(dtype=bool)
    rows = []
    for cid in ids:  # the working orders of one account: a handful
        o = now.get(cid)
        if o is None:
            continue
        before = prev["status"].get(cid, "") if len(prev) else ""
        filled_before = float(prev["filled_quantity"].get(cid, 0.0)) if len(prev) else 0.0
        rows.append({"client_order_id": cid, "symbol": o.symbol, "side": str(o.side), "order_type": str(o.order_type),
                     "quantity": float(o.quantity), "filled_quantity": float(o.filled_quantity),
                     "remaining": float(o.remaining), "prev_status": str(before), "status": str(o.status),
                     "reason_code": str(o.reason_code or ""),
                     "changed": str(before) != str(o.status) or filled_before != float(o.filled_quantity),
                     "source": "engine" if bool(sent.get(cid, False)) else "recovered"})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ORDER_COLUMNS.items()})
    return pd.DataFrame(rows, columns=list(ORDER_COLUMNS))


def pending_by_symbol(orders: pd.DataFrame) -> pd.Series:
    """Symbol → signed remaining quantity of the working orders among ``orders`` (:func:`_order_rows`), summed
    per symbol (``groupby(level=0).sum()``: sorted symbols, NaN counted as 0). With one working order per
    symbol (the usual bar) the sum of one value is taken without the groupby: ``x + 0.0`` (−0.0 becomes 0.0
    as in the sum), NaN → 0.0; the same Series, bit for bit (tests/unit/test_stepping_fast_paths2.py)."""
    is_open = np.array([s in _OPEN for s in orders["status"].tolist()], dtype=bool)
    sides = orders["side"].to_numpy()[is_open]
    signed = np.where(sides == "BUY", 1.0, -1.0) * orders["remaining"].to_numpy(dtype=float)[is_open]
    symbols = orders["symbol"].to_numpy()[is_open]
    names = symbols.tolist()
    if not all(type(n) is str for n in names) or len(set(names)) != len(names):
        return pd.Series(signed, index=symbols, dtype=float).groupby(level=0).sum()
    order = np.argsort(symbols, kind="mergesort") if len(symbols) else np.array([], dtype=np.int64)
    value = signed[order] + 0.0
    return pd.Series(np.where(np.isnan(value), 0.0, value), index=pd.Index(symbols[order]), dtype=float)


def positions_step(broker: Broker, bar_ts: pd.Timestamp, snapshot: pd.DataFrame, record: ExecutionRecord,
                   account: str, source: str, *, settle: bool = True, take_in: bool = True,
                   marks: pd.DataFrame | None = None, actions: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Apply due corporate actions, settle, take in, look up working orders, read and reconcile the book (see
    the module docstring). ``marks``: :func:`window_marks` (last good marks, stale ones flagged; without them,
    this bar's closes only); ``actions``: the window's corporate actions (``BarWindow.adjustments``), applied
    to the venue only on a bar that may move it (``settle``).

    Tables: ``positions`` (per symbol: qty, mark, weight, expected qty, difference, pending qty, cost basis,
    mark_stale), ``positions_account`` (cash, equity, exposures, mismatches, stale marks, fill cursor, what was
    taken in), ``positions_fills``, ``positions_orders``, ``positions_foreign_fills`` and
    ``positions_adjustments``.
    """
    applied = apply_corporate_actions(broker, actions) if settle else empty_actions()
    settled = broker.settle(bar_ts.to_pydatetime()) if settle and hasattr(broker, "settle") else None
    cursor = record.fill_cursor()
    reported = list(broker.fills_since(cursor)) if take_in else []
    # broker Fill objects (every adapter's) are classified fill by fill and their table built once
    # (take_in_plain); anything else goes through the frame path, which decides the same way
    plain = plain_fill_columns(reported)
    if plain is not None:
        new_cursor = max([cursor, *plain["seq"].tolist()])
        fill_orders = set(plain["client_order_id"])
    else:
        incoming = fills_frame(reported)
        new_cursor = max([cursor, *incoming["seq"].astype("int64").tolist()]) if len(incoming) else cursor
        fill_orders = set(incoming["client_order_id"])
    known_open = record.open_orders()
    working = {o.client_order_id: o for o in broker.open_orders()}
    changed = {o.client_order_id: o for o in settled.orders} if settled is not None else {}
    ids = sorted(set(known_open["client_order_id"]) | set(working) | set(changed) | fill_orders)
    info = record.order_info(ids)
    taken = None
    if plain is not None:
        taken = take_in_plain(reported, plain, record.recorded_fill_ids(plain["fill_id"]), info, bar_ts, account)
        if taken is None:
            incoming = fills_frame(reported)
    if taken is not None:
        own_table, foreign_fills = taken
        own = own_table if own_table is not None else empty_taken()
        foreign = fills_frame(foreign_fills)
    else:
        own, foreign = classify_fills(incoming, record.recorded_fill_ids(incoming["fill_id"].tolist()), info,
                                      bar_ts)
        own = own.assign(slippage_bps=slippage_bps(own)) if len(own) else empty_taken()
        own_table = own[TAKEN_COLUMNS].assign(account=account) if len(own) else None
    engine_ids = set(info["client_order_id"])
    mine = [c for c in ids if c in engine_ids]
    now = {**changed, **working}
    for cid in mine:  # orders that left the working set without a settlement here (a real broker)
        if cid not in now:
            found = broker.order_status(cid)
            if found is not None:
                now[cid] = found
    orders = _order_rows(mine, known_open, now, info)
    pending = pending_by_symbol(orders)
    acct = broker.account()
    expected = with_fills(scaled_by_splits(record.expected_book(), applied), own)
    m = marks.set_index("symbol") if marks is not None else None
    # the account row's own columns in one construction (an ``assign`` per column was a third of the stage)
    out = book_tables(pd.Series(acct.positions, dtype=float).sort_index(),
                      m["mark"] if m is not None else marks_from(snapshot), float(acct.cash), expected, source,
                      pending, pd.Series(dict(acct.cost_basis or {}), dtype=float),
                      m["stale"] if m is not None else None,
                      extra={"account": account, "fill_cursor": np.int64(new_cursor), "settled": settled is not None,
                             "fills_taken_in": len(own), "fills_recovered": int((own["source"] == "recovered").sum()),
                             "foreign_fills": len(foreign), "orders_changed": int(orders["changed"].sum())})
    # most bars take in no fill, see no foreign fill and apply no action: their empty tables are built once
    out["positions_fills"] = own_table if own_table is not None else _empty_with_account("taken", account)
    orders["account"] = account   # _order_rows' own new table: the column added in place (was ``assign``)
    out["positions_orders"] = orders
    out["positions_foreign_fills"] = foreign.assign(account=account) if len(foreign) else _empty_with_account(
        "fills", account)
    out["positions_adjustments"] = applied.assign(account=account) if len(applied) else _empty_with_account(
        "actions", account)
    return out


def _empty_with_account(kind: str, account: str) -> pd.DataFrame:
    """``empty_taken()`` / ``fills_frame([])`` / ``empty_actions()`` with the ``account`` column, as
    ``.assign(account=account)`` gives it (a copy of one built once per kind and account)."""
    return _empty_account_frame(kind, account).copy()


@functools.cache
def _empty_account_frame(kind: str, account: str) -> pd.DataFrame:
    base = {"taken": lambda: empty_taken()[TAKEN_COLUMNS], "fills": lambda: fills_frame([]),
            "actions": empty_actions}[kind]()
    return base.assign(account=account)

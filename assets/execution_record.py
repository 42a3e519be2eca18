"""What the engine has recorded of its own trading, as the ``positions`` and ``pnl`` stages need it.

Two providers with one interface, like ``assets.history``: :class:`LineageRecord` reads what earlier runs
recorded in the lineage file (the Dagster path, where every run is a new process); :class:`MemoryRecord`
keeps what the replay loop produced bar by bar. Both answer for one account, about bars before the current
one, so the same pure functions get the same inputs on both paths (the parity test).

Recorded tables read here: ``positions_fills`` and ``executions_fills`` (every fill the engine learnt of,
each ``fill_id`` once), ``executions`` (orders sent, with their decision price), ``positions_orders`` (the
working orders seen at each bar), ``sized_orders`` (order intents), ``positions_account`` (the broker's
fill cursor) and ``pnl``/``pnl_book`` (the P&L book).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from assets.positions.logic import FILL_COLUMNS, expected_positions, scaled_by_splits, with_fills
from resources.brokers.protocol import OPEN_STATUSES
from resources.lineage.io_manager import FILLS_TABLES
from resources.lineage.store import LineageStore

ORDER_INFO_COLUMNS = ["client_order_id", "sent", "decision_price", "decision_bar"]
OPEN_ORDER_COLUMNS = ["client_order_id", "status", "filled_quantity"]
_OPEN = sorted(s.value for s in OPEN_STATUSES)
_OPEN_SET = frozenset(_OPEN)


class ExecutionRecord(Protocol):
    def fill_cursor(self) -> int:
        """The broker's fill sequence up to which every fill has been looked at (0: none)."""
        ...

    def recorded_fill_ids(self, fill_ids: list[str]) -> set[str]:
        """Which of these fill ids are already recorded (in either fills table)."""
        ...

    def order_info(self, client_order_ids: list[str]) -> pd.DataFrame:
        """The engine's own orders among these ids (:data:`ORDER_INFO_COLUMNS`; ``sent``: recorded as sent
        in ``executions``, else only an intent in ``sized_orders``). Ids not returned are not the engine's."""
        ...

    def open_orders(self) -> pd.DataFrame:
        """Orders last recorded as working (:data:`OPEN_ORDER_COLUMNS`), at the latest recorded bar."""
        ...

    def expected_book(self) -> pd.Series:
        """Symbol → signed quantity: the sum of every recorded fill (rounded to ``broker.qty_decimals``), a
        fill before a split the venue applied (``positions_adjustments``) counted × its ratio."""
        ...


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


@dataclass
class LineageRecord:
    """The record of ``account`` before ``bar`` in a lineage file (read only)."""

    store: LineageStore
    account: str
    bar: str
    _tables: set[str] | None = field(default=None, repr=False)

    def _have(self, con, *tables: str) -> list[str]:
        if self._tables is None:
            self._tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return [t for t in tables if t in self._tables]

    def _read(self, fn):
        if not self.store.path.exists():
            return None
        with self.store.connect(read_only=True) as con:
            return fn(con)

    def fill_cursor(self) -> int:
        def q(con):
            if not self._have(con, "positions_account") or "fill_cursor" not in self._columns(con,
                                                                                           "positions_account"):
                return 0
            row = con.execute("SELECT max(fill_cursor) FROM positions_account WHERE account = ? AND bar < ?",
                              [self.account, self.bar]).fetchone()
            return int(row[0]) if row and row[0] is not None else 0
        return self._read(q) or 0

    @staticmethod
    def _columns(con, table: str) -> set[str]:
        return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}

    def recorded_fill_ids(self, fill_ids: list[str]) -> set[str]:
        if not fill_ids:
            return set()

        def q(con):
            tables = self._have(con, *FILLS_TABLES)
            if not tables:
                return set()
            sql = " UNION ".join(f"SELECT fill_id FROM {t} WHERE fill_id IN (SELECT unnest(?))" for t in tables)
            return {r[0] for r in con.execute(sql, [fill_ids] * len(tables)).fetchall()}
        return self._read(q) or set()

    def order_info(self, client_order_ids: list[str]) -> pd.DataFrame:
        if not client_order_ids:
            return _empty(ORDER_INFO_COLUMNS)

        def q(con):
            parts, args = [], []
            if self._have(con, "executions"):
                parts.append("SELECT client_order_id, bool_or(status <> 'NOT_SENT') AS sent, "
                             "min(decision_price) AS decision_price, min(bar) AS decision_bar FROM executions "
                             "WHERE account = ? AND client_order_id IN (SELECT unnest(?)) GROUP BY 1")
                args += [self.account, client_order_ids]
            if self._have(con, "sized_orders"):
                parts.append("SELECT client_order_id, false AS sent, min(price) AS decision_price, "
                             "min(bar) AS decision_bar FROM sized_orders WHERE has_order "
                             "AND client_order_id IN (SELECT unnest(?)) GROUP BY 1")
                args += [client_order_ids]
            if not parts:
                return _empty(ORDER_INFO_COLUMNS)
            return con.execute("SELECT client_order_id, bool_or(sent) AS sent, min(decision_price) AS "
                               "decision_price, min(decision_bar) AS decision_bar FROM (" + " UNION ALL ".join(parts)
                               + ") GROUP BY 1 ORDER BY 1", args).df()
        out = self._read(q)
        return out if out is not None else _empty(ORDER_INFO_COLUMNS)

    def open_orders(self) -> pd.DataFrame:
        def q(con):
            tables = self._have(con, "positions_orders", "executions")
            if not tables or not self._have(con, "positions_account"):
                return _empty(OPEN_ORDER_COLUMNS)
            # the working orders as the latest recorded bar left them: its positions step (k = 0), then its
            # orders sent (k = 1); between runs of one bar a terminal status outranks an open one
            rows = " UNION ALL ".join(
                f"SELECT client_order_id, status, filled_quantity, {2 * (t == 'executions')} "
                f"+ (status NOT IN (SELECT unnest(?)))::INTEGER AS k FROM {t} WHERE account = ? AND bar = (SELECT bar FROM last)"
                for t in tables)
            args = [self.account, self.bar] + [_OPEN, self.account] * len(tables)
            return con.execute(f"""
                WITH last AS (SELECT max(bar) AS bar FROM positions_account WHERE account = ? AND bar < ?),
                r AS ({rows})
                SELECT client_order_id, arg_max(status, k) AS status, arg_max(filled_quantity, k) AS filled_quantity
                FROM r GROUP BY 1 HAVING arg_max(status, k) IN (SELECT unnest(?)) ORDER BY 1""",
                               [*args, _OPEN]).df()
        out = self._read(q)
        return out if out is not None else _empty(OPEN_ORDER_COLUMNS)

    def expected_book(self) -> pd.Series:
        def q(con):
            tables = self._have(con, *FILLS_TABLES)
            if not tables:
                return None, None
            sql = " UNION ALL ".join(f"SELECT fill_id, symbol, side, quantity, ts FROM {t} WHERE account = ?"
                                     for t in tables)
            actions = con.execute("SELECT symbol, effective_open, split_ratio FROM positions_adjustments "
                                  "WHERE account = ? AND bar < ? ORDER BY bar, _row", [self.account, self.bar]).df() \
                if self._have(con, "positions_adjustments") else None
            return con.execute(sql, [self.account] * len(tables)).df(), actions
        fills, actions = self._read(q) or (None, None)
        if fills is None or fills.empty:
            return pd.Series(dtype=float, name="quantity")
        return expected_positions(fills, actions)


@dataclass
class MemoryRecord:
    """The replay loop's own record, updated after every bar with what the bar recorded: the recorded fill
    ids and the expected book they sum to (kept incrementally, never re-summed), the orders' first records,
    the working orders and the fill cursor."""

    fill_ids: set[str] = field(default_factory=set)
    book: pd.Series = field(default_factory=lambda: pd.Series(dtype=float, name="quantity"))
    orders: dict[str, tuple[bool, float, str]] = field(default_factory=dict)
    open: pd.DataFrame = field(default_factory=lambda: _empty(OPEN_ORDER_COLUMNS))
    cursor: int = 0

    @classmethod
    def from_lineage(cls, store: LineageStore, account: str) -> MemoryRecord:
        """Start from what the lineage file already holds for the account (a replay that continues)."""
        rec = cls()
        if not store.path.exists():
            return rec
        with store.connect(read_only=True) as con:
            have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            frames = [con.execute(f"SELECT * EXCLUDE (bar, _row) FROM {t} WHERE account = ?", [account]).df()
                      for t in FILLS_TABLES if t in have]
            actions = con.execute("SELECT symbol, effective_open, split_ratio FROM positions_adjustments "
                                  "WHERE account = ? ORDER BY bar, _row", [account]).df() \
                if "positions_adjustments" in have else None
            if "executions" in have:
                e = con.execute("SELECT client_order_id, status, decision_price, bar FROM executions "
                                "WHERE account = ? ORDER BY bar, _row", [account]).df()
                for cid, status, price, bar in e.itertuples(index=False):  # once per replay start
                    rec.orders[cid] = (rec.orders.get(cid, (False,))[0] or status != "NOT_SENT", price, bar)
        last = LineageRecord(store, account, "~")  # "~" sorts after every bar key: the latest bar
        rec.open = last.open_orders()
        rec.cursor = last.fill_cursor()
        frames = [f for f in frames if len(f)]
        if frames:
            fills = pd.concat(frames, ignore_index=True)
            rec.fill_ids = set(fills["fill_id"])
            rec.book = expected_positions(fills, actions)
        return rec

    def fill_cursor(self) -> int:
        return self.cursor

    def recorded_fill_ids(self, fill_ids: list[str]) -> set[str]:
        return self.fill_ids.intersection(fill_ids)

    def order_info(self, client_order_ids: list[str]) -> pd.DataFrame:
        rows = [(cid, *self.orders[cid]) for cid in sorted(set(client_order_ids)) if cid in self.orders]
        return pd.DataFrame(rows, columns=ORDER_INFO_COLUMNS) if rows else _empty(ORDER_INFO_COLUMNS)

    def open_orders(self) -> pd.DataFrame:
        return self.open

    def expected_book(self) -> pd.Series:
        return self.book

    def add_bar(self, bar: str, positions: dict[str, pd.DataFrame], sized: pd.DataFrame,
                executions: dict[str, pd.DataFrame]) -> None:
        """Take in what one bar recorded: the splits applied at its open, its fills, order intents, orders
        sent, working orders, cursor."""
        self.book = scaled_by_splits(self.book, positions.get("positions_adjustments"))
        for fills in (positions.get("positions_fills"), executions.get("executions_fills")):
            if fills is not None and len(fills):
                # membership per fill of the bar (a handful), not ``isin(self.fill_ids)``: that converts the
                # whole, ever-growing set every bar (replay slowed from ≈ 8 to ≈ 3 bars/s over 11,000 bars)
                fresh = fills[np.fromiter((f not in self.fill_ids for f in fills["fill_id"]), bool, len(fills))]
                self.book = with_fills(self.book, fresh)
                self.fill_ids.update(fresh["fill_id"])
        # plain lists of the bar's few orders (each pandas step here cost more than the whole bar's data)
        has = sized["has_order"].to_numpy(dtype=bool)
        if has.any():
            ids = [c for c, h in zip(sized["client_order_id"].tolist(), has.tolist(), strict=True) if h]
            prices = sized["price"].to_numpy()[has].astype(float).tolist()
            new = {cid: (False, price, bar) for cid, price in zip(ids, prices, strict=True)}
            self.orders.update({cid: v for cid, v in new.items() if cid not in self.orders})  # the first record wins
        e = executions["executions"]
        status = e["status"].tolist()
        for cid, dp, st in zip(e["client_order_id"].tolist(), e["decision_price"].tolist(), status, strict=True):
            if st != "NOT_SENT":
                self.orders[cid] = (True, *self.orders.get(cid, (False, float(dp), bar))[1:])
        # the working orders as this bar left them: its positions step (k = 0), then its orders sent (k = 1);
        # a terminal status outranks an open one of the same step; the last row of the highest rank wins
        po = positions.get("positions_orders")
        ranked = []
        for f, k in ((po, 0), (e, 1)):
            if f is not None and len(f):
                ranked += [(2 * k + (st not in _OPEN_SET), cid, st, fq) for cid, st, fq in zip(
                    f["client_order_id"].tolist(), f["status"].tolist(), f["filled_quantity"].tolist(), strict=True)]
        ranked.sort(key=lambda r: r[0])   # stable
        last = {cid: (st, fq) for _, cid, st, fq in ranked}
        working = sorted((cid, st, fq) for cid, (st, fq) in last.items() if st in _OPEN_SET)
        self.open = pd.DataFrame({"client_order_id": [w[0] for w in working], "status": [w[1] for w in working],
                                  "filled_quantity": np.array([w[2] for w in working], dtype=float)}) if working \
            else _empty(OPEN_ORDER_COLUMNS)
        self.cursor = int(positions["positions_account"]["fill_cursor"].iloc[0])


def pnl_fills(fills: list[pd.DataFrame]) -> pd.DataFrame:
    """Fills to apply to the P&L book, each ``fill_id`` once, in booking order (seq, fill_id)."""
    frames = [f for f in fills if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=[*FILL_COLUMNS, "decision_price"])
    if len(frames) == 1 and _booked_in_order(frames[0]):   # one table, unique and in order: nothing moves
        return frames[0].reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True).drop_duplicates("fill_id", keep="first")
    return out.sort_values(["seq", "fill_id"], kind="mergesort").reset_index(drop=True)



def _booked_in_order(fills: pd.DataFrame) -> bool:
    """Distinct string fill ids, integer seqs, rows already sorted by (seq, fill_id)."""
    ids, seq = fills["fill_id"].tolist(), fills["seq"].to_numpy()
    if seq.dtype.kind not in "iu" or not all(type(i) is str for i in ids) or len(set(ids)) != len(ids):
        return False
    keys = list(zip(seq.tolist(), ids, strict=True))
    return all(a <= b for a, b in zip(keys, keys[1:], strict=False))

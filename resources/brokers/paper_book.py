"""Where the paper venue keeps its book: a DuckDB file (live, Dagster) or plain Python structures (replay).

The venue's rules (``resources.brokers.paper.PaperBroker``: rejects, the next-bar fill model, fees, fill ids,
average cost, corporate actions) are written once, against the small storage interface :class:`PaperBook`.
Two books implement it:

* :class:`DuckDBBook` — the book in DuckDB tables (``paper_account``, ``paper_orders``, ``paper_positions``,
  ``paper_fills``, ``paper_corporate_actions``). Every Dagster run is a new process, so every call is
  durable before it returns (one transaction per order; one per settlement). Its file is opened per call,
  or held for a block of calls by :meth:`DuckDBBook.session` (a lock held elsewhere is waited for up to
  ``broker.submit_timeout_seconds``, then :class:`BrokerTimeout`).
* :class:`MemoryBook` — the same rows in dicts and lists, for the replay's stepping loop (one process trades
  bar after bar: a DuckDB transaction per order was most of its ``executions`` and ``positions`` time).
  :meth:`MemoryBook.load` reads a paper account file and **holds it open** (DuckDB's file lock: no other
  process writes the account under the replay); :meth:`MemoryBook.save` writes what changed since the load
  or the last save, in one transaction, so the file ends exactly as a :class:`DuckDBBook` would have left
  it after the same calls (the same rows in every ``paper_*`` table, tested bit for bit). What is not saved
  is lost with the process: the caller decides when its book is durable (the replay: at each lineage flush).

Rows are kept in the file's own representation (naive UTC timestamps, strings for enums), so both books hand
the rules the same values and the rules' outputs cannot depend on the storage. Reads hand out copies: the
rules mutate an order, then write it back.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.brokers.protocol import OPEN_STATUSES, BrokerError, BrokerTimeout, Fill, Side

SCHEMA_VERSION = 2
ORDER_COLS = ("client_order_id", "broker_order_id", "symbol", "side", "quantity", "filled_quantity",
              "avg_price", "status", "reason_code", "bar_key", "reduce_only", "submitted_at",
              "last_worked_at", "n_fills", "order_type")
FILL_COLS = ("fill_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "ts", "seq", "mid")
POSITION_COLS = ("symbol", "quantity", "last_price", "avg_cost")
ACTION_COLS = ("symbol", "effective_date", "split_ratio", "cash_dividend", "qty_before", "qty_after", "cash_change")
ACCOUNT_COLS = ("cash", "initial_cash", "fill_seq", "order_seq", "schema_version", "settled_through")
TABLES = ("paper_account", "paper_orders", "paper_positions", "paper_fills", "paper_corporate_actions")
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS paper_account (
        id INTEGER PRIMARY KEY, cash DOUBLE NOT NULL, initial_cash DOUBLE NOT NULL,
        fill_seq BIGINT NOT NULL, order_seq BIGINT NOT NULL, schema_version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_orders (
        client_order_id VARCHAR PRIMARY KEY, broker_order_id VARCHAR, symbol VARCHAR, side VARCHAR,
        quantity DOUBLE, filled_quantity DOUBLE NOT NULL, avg_price DOUBLE, status VARCHAR NOT NULL,
        reason_code VARCHAR, bar_key VARCHAR, reduce_only BOOLEAN, submitted_at TIMESTAMP,
        last_worked_at TIMESTAMP, n_fills INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_positions (
        symbol VARCHAR PRIMARY KEY, quantity DOUBLE NOT NULL, last_price DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS paper_fills (
        fill_id VARCHAR PRIMARY KEY, client_order_id VARCHAR NOT NULL, symbol VARCHAR NOT NULL,
        side VARCHAR NOT NULL, quantity DOUBLE NOT NULL, price DOUBLE NOT NULL, fee DOUBLE NOT NULL,
        ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL UNIQUE, mid DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS paper_corporate_actions (
        symbol VARCHAR, effective_date DATE, split_ratio DOUBLE, cash_dividend DOUBLE, qty_before DOUBLE,
        qty_after DOUBLE, cash_change DOUBLE, PRIMARY KEY (symbol, effective_date))""",
    # version 2 (an existing version-1 book gains the columns; its values stay)
    "ALTER TABLE paper_orders ADD COLUMN IF NOT EXISTS order_type VARCHAR DEFAULT 'MARKET'",
    "ALTER TABLE paper_positions ADD COLUMN IF NOT EXISTS avg_cost DOUBLE",
    "ALTER TABLE paper_account ADD COLUMN IF NOT EXISTS settled_through TIMESTAMP",
)
_OPEN = tuple(sorted(s.value for s in OPEN_STATUSES))
_OPEN_SET = frozenset(_OPEN)
Position = tuple[float, float | None]      # (quantity, average cost)


def to_db(ts: dt.datetime) -> dt.datetime:
    """A tz-aware time as the book stores it: naive UTC (:class:`BrokerError` for a naive one)."""
    if ts.tzinfo is None:
        raise BrokerError(f"naive timestamp {ts!r}: the engine is UTC, pass tz-aware times")
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


def from_db(ts: dt.datetime | None) -> dt.datetime | None:
    return None if ts is None else ts.replace(tzinfo=dt.UTC)


def _fill_from_row(fid, cid, sym, side, q, px, fee, ts, seq, mid) -> Fill:
    return Fill(fid, cid, sym, Side(side), q, px, fee, from_db(ts), seq, math.nan if mid is None else mid)


def _action_date(day: dt.date) -> dt.date:
    return day.date() if isinstance(day, dt.datetime) else day


class PaperBook(Protocol):
    """The storage the paper venue's rules need. Every read returns copies; every write is one step of
    the caller's :meth:`transaction` (the rules check everything before their first write, so a book
    without rollback, :class:`MemoryBook`, is never left half-written by a refused call)."""

    path: Path | None

    def session(self) -> Any:
        """A context manager holding the book open for a block of calls (reentrant)."""

    def transaction(self) -> Any:
        """A context manager: the writes inside it land together or not at all."""

    def order(self, client_order_id: str) -> dict | None: ...
    def next_order_seq(self) -> int: ...
    def insert_order(self, order: dict) -> None: ...
    def set_order_status(self, client_order_id: str, status: str, reason_code: str | None) -> None: ...
    def open_orders(self) -> list[dict]: ...
    def position(self, symbol: str) -> Position: ...
    def positions_of(self, symbols: Sequence[str]) -> dict[str, Position]: ...
    def nonzero_positions(self) -> list[tuple[str, float, float | None, float | None]]: ...
    def cash(self) -> float: ...
    def settle_state(self) -> tuple[dt.datetime | None, int, float]: ...
    def write_settlement(self, fills: Sequence[Fill], positions: Sequence[tuple], orders: Sequence[dict],
                         cash: float, fill_seq: int, settled_through: dt.datetime) -> None: ...
    def has_fill(self, fill_id: str) -> bool: ...
    def order_fill_total(self, client_order_id: str) -> tuple[float, float] | None: ...
    def append_fill(self, fill: Fill, cash_out: float) -> Fill: ...
    def upsert_position(self, symbol: str, quantity: float, last_price: float, avg_cost: float | None) -> None: ...
    def fills_since(self, since: dt.datetime | int | None) -> list[Fill]: ...
    def corporate_action(self, symbol: str, day: dt.date) -> tuple[float, float, float] | None: ...
    def apply_corporate_action(self, row: tuple, split_ratio: float) -> None: ...
    def reset(self, initial_cash: float) -> None: ...
    def save(self) -> None: ...
    def close(self) -> None: ...


# ---- the file ------------------------------------------------------------------------------------------

class DuckDBBook:
    """The book in a DuckDB file, opened per call (or per :meth:`session`); every write is durable when its
    :meth:`transaction` ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._schema_ready = False

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting (bounded) for a lock held by another process; create or migrate the schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + get_cfg("broker.submit_timeout_seconds")
        pause = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as exc:
                left = deadline - time.monotonic()
                if "lock" not in str(exc).lower():
                    raise BrokerError(f"paper broker: cannot open {self.path}: {exc}") from exc
                if left <= 0:
                    raise BrokerTimeout(f"paper broker: {self.path} locked by another process: {exc}") from exc
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)
        if not self._schema_ready:
            try:
                for stmt in SCHEMA:
                    con.execute(stmt)
                self._new_account(con, get_cfg("broker.initial_cash"), "ON CONFLICT DO NOTHING")
            except BaseException:
                con.close()
                raise
            self._schema_ready = True
        return con

    @staticmethod
    def _new_account(con: duckdb.DuckDBPyConnection, cash: float, conflict: str = "") -> None:
        con.execute("INSERT INTO paper_account (id, cash, initial_cash, fill_seq, order_seq, schema_version, "
                    f"settled_through) VALUES (1, ?, ?, 0, 0, ?, NULL) {conflict}", [cash, cash, SCHEMA_VERSION])

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            yield self._con
            return
        self._con = self._open()
        try:
            yield self._con
        finally:
            con, self._con = self._con, None
            con.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise BrokerError("paper book used outside a session")
        return self._con

    @contextmanager
    def transaction(self) -> Iterator[None]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # ---- orders
    def order(self, client_order_id: str) -> dict | None:
        row = self.con.execute(f"SELECT {', '.join(ORDER_COLS)} FROM paper_orders WHERE client_order_id = ?",
                               [client_order_id]).fetchone()
        return None if row is None else dict(zip(ORDER_COLS, row, strict=True))

    def next_order_seq(self) -> int:
        return self.con.execute("UPDATE paper_account SET order_seq = order_seq + 1 RETURNING order_seq").fetchone()[0]

    def insert_order(self, order: dict) -> None:
        self.con.execute(f"INSERT INTO paper_orders ({', '.join(ORDER_COLS)}) VALUES "
                         f"({', '.join('?' * len(ORDER_COLS))})", [order[c] for c in ORDER_COLS])

    def set_order_status(self, client_order_id: str, status: str, reason_code: str | None) -> None:
        self.con.execute("UPDATE paper_orders SET status = ?, reason_code = ? WHERE client_order_id = ?",
                         [status, reason_code, client_order_id])

    def open_orders(self) -> list[dict]:
        rows = self.con.execute(f"SELECT {', '.join(ORDER_COLS)} FROM paper_orders WHERE status IN "
                                "(SELECT unnest(?)) ORDER BY broker_order_id", [list(_OPEN)]).fetchall()
        return [dict(zip(ORDER_COLS, r, strict=True)) for r in rows]

    # ---- positions and cash
    def position(self, symbol: str) -> Position:
        row = self.con.execute("SELECT quantity, avg_cost FROM paper_positions WHERE symbol = ?", [symbol]).fetchone()
        return (float(row[0]), row[1]) if row else (0.0, None)

    def positions_of(self, symbols: Sequence[str]) -> dict[str, Position]:
        return {sym: (float(q), a) for sym, q, a in self.con.execute(
            "SELECT symbol, quantity, avg_cost FROM paper_positions WHERE symbol IN (SELECT unnest(?))",
            [list(symbols)]).fetchall()}

    def nonzero_positions(self) -> list[tuple[str, float, float | None, float | None]]:
        return self.con.execute("SELECT symbol, quantity, last_price, avg_cost FROM paper_positions "
                                "WHERE quantity <> 0 ORDER BY symbol").fetchall()

    def cash(self) -> float:
        return float(self.con.execute("SELECT cash FROM paper_account").fetchone()[0])

    def settle_state(self) -> tuple[dt.datetime | None, int, float]:
        last, seq, cash = self.con.execute("SELECT settled_through, fill_seq, cash FROM paper_account").fetchone()
        return last, seq, cash

    def write_settlement(self, fills: Sequence[Fill], positions: Sequence[tuple], orders: Sequence[dict],
                         cash: float, fill_seq: int, settled_through: dt.datetime) -> None:
        """A settlement's fills, positions (``POSITION_COLS`` rows), changed orders and account, in bulk."""
        con = self.con
        if fills:
            _insert(con, "paper_fills", _fills_frame(fills))
            _insert(con, "paper_positions", _positions_frame(positions), replace_rows=True)
        if orders:
            cols = ["client_order_id", "filled_quantity", "avg_price", "status", "reason_code", "last_worked_at",
                    "n_fills"]
            changed = pd.DataFrame([[o[c] for c in cols] for o in orders], columns=cols).astype(
                {"filled_quantity": float, "avg_price": "Float64", "n_fills": int})  # Float64: None stays NULL
            con.register("_orders", changed)
            try:
                con.execute("UPDATE paper_orders o SET filled_quantity = c.filled_quantity, avg_price = c.avg_price, "
                            "status = c.status, reason_code = c.reason_code, last_worked_at = c.last_worked_at, "
                            "n_fills = c.n_fills FROM _orders c WHERE o.client_order_id = c.client_order_id")
            finally:
                con.unregister("_orders")
        con.execute("UPDATE paper_account SET fill_seq = ?, cash = ?, settled_through = ?",
                    [fill_seq, cash, settled_through])

    # ---- fills
    def has_fill(self, fill_id: str) -> bool:
        return self.con.execute("SELECT 1 FROM paper_fills WHERE fill_id = ?", [fill_id]).fetchone() is not None

    def order_fill_total(self, client_order_id: str) -> tuple[float, float] | None:
        row = self.con.execute("SELECT quantity, (SELECT coalesce(sum(quantity), 0) FROM paper_fills f "
                               "WHERE f.client_order_id = o.client_order_id) FROM paper_orders o "
                               "WHERE client_order_id = ?", [client_order_id]).fetchone()
        return None if row is None else (row[0], row[1])

    def append_fill(self, fill: Fill, cash_out: float) -> Fill:
        seq = self.con.execute("UPDATE paper_account SET fill_seq = fill_seq + 1, cash = cash - ? "
                               "RETURNING fill_seq", [cash_out]).fetchone()[0]
        fill = replace(fill, seq=seq)
        self.con.execute(f"INSERT INTO paper_fills ({', '.join(FILL_COLS)}) VALUES ({', '.join('?' * len(FILL_COLS))})",
                         [fill.fill_id, fill.client_order_id, fill.symbol, Side(fill.side).value, fill.quantity,
                          fill.price, fill.fee, to_db(fill.ts), seq, math.nan if fill.mid is None else fill.mid])
        return fill

    def upsert_position(self, symbol: str, quantity: float, last_price: float, avg_cost: float | None) -> None:
        self.con.execute("INSERT INTO paper_positions (symbol, quantity, last_price, avg_cost) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity, "
                         "last_price = excluded.last_price, avg_cost = excluded.avg_cost",
                         [symbol, quantity, last_price, avg_cost])

    def fills_since(self, since: dt.datetime | int | None) -> list[Fill]:
        where, args = "", []
        if isinstance(since, dt.datetime):
            where, args = "WHERE ts >= ?", [to_db(since)]
        elif since is not None:
            where, args = "WHERE seq > ?", [int(since)]
        rows = self.con.execute(f"SELECT {', '.join(FILL_COLS)} FROM paper_fills {where} ORDER BY seq", args).fetchall()
        return [_fill_from_row(*r) for r in rows]

    # ---- corporate actions
    def corporate_action(self, symbol: str, day: dt.date) -> tuple[float, float, float] | None:
        return self.con.execute("SELECT qty_before, qty_after, cash_change FROM paper_corporate_actions "
                                "WHERE symbol = ? AND effective_date = ?", [symbol, _action_date(day)]).fetchone()

    def apply_corporate_action(self, row: tuple, split_ratio: float) -> None:
        """Record an action (``ACTION_COLS``) and apply it: the position × ratio (its last price and average
        cost ÷ ratio) when held, the cash change."""
        symbol, day, _, _, before, after, cash = row
        if before != 0:
            self.con.execute("UPDATE paper_positions SET quantity = ?, last_price = last_price / ?, "
                             "avg_cost = avg_cost / ? WHERE symbol = ?", [after, split_ratio, split_ratio, symbol])
        if cash:
            self.con.execute("UPDATE paper_account SET cash = cash + ?", [cash])
        self.con.execute("INSERT INTO paper_corporate_actions VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [symbol, _action_date(day), *row[2:]])

    def reset(self, initial_cash: float) -> None:
        for table in ("paper_corporate_actions", "paper_fills", "paper_orders", "paper_positions", "paper_account"):
            self.con.execute(f"DELETE FROM {table}")
        self._new_account(self.con, initial_cash)

    def save(self) -> None:
        """Nothing to do: every write was durable when its transaction ended."""

    def close(self) -> None:
        """Nothing held between calls (a :meth:`session` closes its own connection)."""


# ---- bulk frames (settlement writes, memory book saves) ------------------------------------------------

def _fills_frame(fills: Sequence[Fill]) -> pd.DataFrame:
    return pd.DataFrame([(f.fill_id, f.client_order_id, f.symbol, Side(f.side).value, f.quantity, f.price, f.fee,
                          to_db(f.ts), f.seq, f.mid) for f in fills], columns=list(FILL_COLS))


def _positions_frame(rows: Sequence[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(POSITION_COLS))
    return frame.astype({"quantity": float, "last_price": "Float64", "avg_cost": "Float64"})  # None stays NULL


def _orders_frame(orders: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([[o[c] for c in ORDER_COLS] for o in orders], columns=list(ORDER_COLS))
    return frame.astype({"quantity": float, "filled_quantity": float, "avg_price": "Float64", "n_fills": "int64",
                         "reduce_only": "boolean"})


_TYPES = {"paper_fills": "VARCHAR, VARCHAR, VARCHAR, VARCHAR, DOUBLE, DOUBLE, DOUBLE, TIMESTAMP, BIGINT, DOUBLE",
          "paper_positions": "VARCHAR, DOUBLE, DOUBLE, DOUBLE",
          "paper_orders": "VARCHAR, VARCHAR, VARCHAR, VARCHAR, DOUBLE, DOUBLE, DOUBLE, VARCHAR, VARCHAR, VARCHAR, "
                          "BOOLEAN, TIMESTAMP, TIMESTAMP, INTEGER, VARCHAR",
          "paper_corporate_actions": "VARCHAR, DATE, DOUBLE, DOUBLE, DOUBLE, DOUBLE, DOUBLE"}


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, replace_rows: bool = False) -> None:
    """Insert a frame's rows (``replace_rows``: an existing primary key's row is replaced), each column cast to
    the table's type (a column of only NULLs has no type of its own)."""
    if not len(frame):
        return
    cols = list(frame.columns)
    casts = ", ".join(f'CAST("{c}" AS {t.strip()})' for c, t in zip(cols, _TYPES[table].split(","), strict=True))
    con.register("_rows", frame)
    try:
        con.execute(f"INSERT {'OR REPLACE ' if replace_rows else ''}INTO {table} ({', '.join(cols)}) "
                    f"SELECT {casts} FROM _rows")
    finally:
        con.unregister("_rows")


# ---- memory --------------------------------------------------------------------------------------------

class MemoryBook:
    """The book in plain Python structures: account fields, orders by client id in broker-order-id order
    (the working ones indexed apart), positions with their last price and average cost, fills in seq order
    (indexed by fill id, by order, and by time for :meth:`fills_since`), corporate actions.

    ``MemoryBook()`` is a fresh account of ``broker.initial_cash``; :meth:`load` continues a paper account
    file and keeps it locked until :meth:`close`; :meth:`save` writes the changes to it."""

    def __init__(self, initial_cash: float | None = None) -> None:
        self.path: Path | None = None
        self._file: DuckDBBook | None = None
        self._held: ExitStack | None = None
        self._clear(get_cfg("broker.initial_cash") if initial_cash is None else initial_cash)
        self._rewrite = True      # nothing of it is in a file yet

    def _clear(self, cash: float) -> None:
        self.account: dict[str, Any] = dict(cash=cash, initial_cash=cash, fill_seq=0, order_seq=0,
                                            schema_version=SCHEMA_VERSION, settled_through=None)
        self._orders: dict[str, dict] = {}          # client id → row, in broker order id order
        self._open: dict[str, None] = {}            # the working ones (an ordered set), same order
        self._positions: dict[str, list] = {}       # symbol → [quantity, last_price, avg_cost]
        self._fills: list[Fill] = []                 # seq order
        self._seqs: list[int] = []
        self._ts: list[dt.datetime] = []             # naive UTC, parallel to _fills
        self._ts_sorted = True
        self._fill_ids: set[str] = set()
        self._order_fills: dict[str, list[float]] = {}
        self._actions: dict[tuple[str, dt.date], tuple] = {}
        self._dirty_orders: set[str] = set()
        self._dirty_positions: set[str] = set()
        self._saved_fills = 0
        self._new_actions: list[tuple] = []

    # ---- the file
    @classmethod
    def load(cls, path: str | Path) -> MemoryBook:
        """The paper account at ``path`` (created as :class:`DuckDBBook` creates it when absent), read whole;
        the file stays open (locked) until :meth:`close`."""
        file = DuckDBBook(path)
        held = ExitStack()
        con = held.enter_context(file.session())
        try:
            book = cls.__new__(cls)
            row = con.execute(f"SELECT {', '.join(ACCOUNT_COLS)} FROM paper_account").fetchone()
            book._clear(row[0])
            book.account = dict(zip(ACCOUNT_COLS, row, strict=True))
            for r in con.execute(f"SELECT {', '.join(ORDER_COLS)} FROM paper_orders ORDER BY broker_order_id").fetchall():
                book._put_order(dict(zip(ORDER_COLS, r, strict=True)))
            for sym, q, last, avg in con.execute("SELECT symbol, quantity, last_price, avg_cost FROM paper_positions "
                                                 "ORDER BY symbol").fetchall():
                book._positions[sym] = [q, last, avg]
            for r in con.execute(f"SELECT {', '.join(FILL_COLS)} FROM paper_fills ORDER BY seq").fetchall():
                book._add_fill(_fill_from_row(*r))
            for r in con.execute(f"SELECT {', '.join(ACTION_COLS)} FROM paper_corporate_actions "
                                 "ORDER BY symbol, effective_date").fetchall():
                book._actions[(r[0], r[1])] = tuple(r)
        except BaseException:
            held.close()
            raise
        book._dirty_orders.clear()
        book._dirty_positions.clear()
        book._saved_fills, book._rewrite = len(book._fills), False
        book.path, book._file, book._held = file.path, file, held
        return book

    def save(self) -> None:
        """Write every change since the load (or the last save) to the file, in one transaction: the file then
        holds exactly the rows a :class:`DuckDBBook` would hold after the same calls. A book that was never
        loaded from a file has nowhere to go (:class:`BrokerError`)."""
        if self._file is None:
            raise BrokerError("this paper book lives only in memory: load it from a file to save it")
        con = self._file.con
        fills, actions = self._fills[self._saved_fills:], self._new_actions
        with self._file.transaction():
            if self._rewrite:
                for table in TABLES:
                    con.execute(f"DELETE FROM {table}")
                con.execute(f"INSERT INTO paper_account (id, {', '.join(ACCOUNT_COLS)}) VALUES (1, ?, ?, ?, ?, ?, ?)",
                            [self.account[c] for c in ACCOUNT_COLS])
                orders, positions = list(self._orders), sorted(self._positions)
                fills, actions = self._fills, list(self._actions.values())
            else:
                con.execute(f"UPDATE paper_account SET {', '.join(f'{c} = ?' for c in ACCOUNT_COLS)}",
                            [self.account[c] for c in ACCOUNT_COLS])
                orders = [c for c in self._orders if c in self._dirty_orders]
                positions = sorted(self._dirty_positions)
            _insert(con, "paper_orders", _orders_frame([self._orders[c] for c in orders]), replace_rows=True)
            _insert(con, "paper_positions", _positions_frame([(s, *self._positions[s]) for s in positions]),
                    replace_rows=True)
            _insert(con, "paper_fills", _fills_frame(fills))
            _insert(con, "paper_corporate_actions", pd.DataFrame(list(actions), columns=list(ACTION_COLS)))
        self._dirty_orders.clear()
        self._dirty_positions.clear()
        self._saved_fills, self._new_actions, self._rewrite = len(self._fills), [], False

    def close(self) -> None:
        """Release the file without saving (what was not saved is lost)."""
        if self._held is not None:
            self._held.close()
            self._held = None
            self._file = None

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    # ---- orders
    def _put_order(self, order: dict) -> None:
        cid = order["client_order_id"]
        self._orders[cid] = order
        if order["status"] in _OPEN_SET:
            self._open[cid] = None
        else:
            self._open.pop(cid, None)
        self._dirty_orders.add(cid)

    def order(self, client_order_id: str) -> dict | None:
        row = self._orders.get(client_order_id)
        return None if row is None else dict(row)

    def next_order_seq(self) -> int:
        self.account["order_seq"] += 1
        return self.account["order_seq"]

    def insert_order(self, order: dict) -> None:
        self._put_order({c: order[c] for c in ORDER_COLS})

    def set_order_status(self, client_order_id: str, status: str, reason_code: str | None) -> None:
        self._put_order({**self._orders[client_order_id], "status": status, "reason_code": reason_code})

    def open_orders(self) -> list[dict]:
        return [dict(self._orders[c]) for c in self._open]

    # ---- positions and cash
    def position(self, symbol: str) -> Position:
        row = self._positions.get(symbol)
        return (row[0], row[2]) if row else (0.0, None)

    def positions_of(self, symbols: Sequence[str]) -> dict[str, Position]:
        return {s: (row[0], row[2]) for s in symbols if (row := self._positions.get(s)) is not None}

    def nonzero_positions(self) -> list[tuple[str, float, float | None, float | None]]:
        return [(s, *row) for s, row in sorted(self._positions.items()) if row[0] != 0]

    def cash(self) -> float:
        return self.account["cash"]

    def settle_state(self) -> tuple[dt.datetime | None, int, float]:
        return self.account["settled_through"], self.account["fill_seq"], self.account["cash"]

    def write_settlement(self, fills: Sequence[Fill], positions: Sequence[tuple], orders: Sequence[dict],
                         cash: float, fill_seq: int, settled_through: dt.datetime) -> None:
        for fill in fills:
            self._add_fill(fill)
        for row in positions:
            self.upsert_position(*row)
        for order in orders:
            self._put_order({c: order[c] for c in ORDER_COLS})
        self.account.update(fill_seq=fill_seq, cash=cash, settled_through=settled_through)

    # ---- fills
    def _add_fill(self, fill: Fill) -> None:
        """Keep a fill as the file returns it: UTC time at µs, floats, a NaN mid for none."""
        ts = to_db(fill.ts)
        fill = Fill(fill.fill_id, fill.client_order_id, fill.symbol, Side(fill.side), float(fill.quantity),
                    float(fill.price), float(fill.fee), from_db(ts), int(fill.seq),
                    math.nan if fill.mid is None else float(fill.mid))
        if self._ts and ts < self._ts[-1]:
            self._ts_sorted = False
        self._fills.append(fill)
        self._seqs.append(fill.seq)
        self._ts.append(ts)
        self._fill_ids.add(fill.fill_id)
        self._order_fills.setdefault(fill.client_order_id, []).append(fill.quantity)

    def has_fill(self, fill_id: str) -> bool:
        return fill_id in self._fill_ids

    def order_fill_total(self, client_order_id: str) -> tuple[float, float] | None:
        row = self._orders.get(client_order_id)
        return None if row is None else (row["quantity"], sum(self._order_fills.get(client_order_id, ()), 0.0))

    def append_fill(self, fill: Fill, cash_out: float) -> Fill:
        self.account["fill_seq"] += 1
        self.account["cash"] -= cash_out
        self._add_fill(replace(fill, seq=self.account["fill_seq"]))
        return self._fills[-1]

    def upsert_position(self, symbol: str, quantity: float, last_price: float, avg_cost: float | None) -> None:
        self._positions[symbol] = [quantity, last_price, avg_cost]
        self._dirty_positions.add(symbol)

    def fills_since(self, since: dt.datetime | int | None) -> list[Fill]:
        if since is None:
            return list(self._fills)
        if isinstance(since, dt.datetime):
            cut = to_db(since)
            if self._ts_sorted:
                return self._fills[bisect.bisect_left(self._ts, cut):]
            return [f for f, ts in zip(self._fills, self._ts, strict=True) if ts >= cut]
        return self._fills[bisect.bisect_right(self._seqs, int(since)):]

    # ---- corporate actions
    def corporate_action(self, symbol: str, day: dt.date) -> tuple[float, float, float] | None:
        row = self._actions.get((symbol, _action_date(day)))
        return None if row is None else row[4:]

    def apply_corporate_action(self, row: tuple, split_ratio: float) -> None:
        symbol, day, _, _, before, after, cash = row
        row = (symbol, _action_date(day), *row[2:])
        if before != 0 and symbol in self._positions:
            _, last, avg = self._positions[symbol]
            self.upsert_position(symbol, after, None if last is None else last / split_ratio,
                                 None if avg is None else avg / split_ratio)
        if cash:
            self.account["cash"] += cash
        self._actions[(symbol, row[1])] = row
        self._new_actions.append(row)

    def reset(self, initial_cash: float) -> None:
        self._clear(initial_cash)
        self._rewrite = True

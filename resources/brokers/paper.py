"""The paper broker: an embedded broker whose book lives in DuckDB tables of its own.

Why DuckDB tables, short-lived connections: the book (cash, positions, orders, fills) must survive the
process (every Dagster run is a new process) and be seen identically by the next one, while the DuckDB
file lock would block every other process that holds the file open. So each public call opens the file,
runs one transaction per order and closes it; :meth:`PaperBroker.batch` keeps one connection for a
block of calls (one bar's orders) to pay the ~10 ms open once. A lock held elsewhere is waited for up to
``broker.submit_timeout_seconds``, then :class:`BrokerTimeout`.

Fills. A market order fills against the :class:`Quote` of its fill bar, supplied by a ``QuoteProvider``
(any callable ``(symbols, ts) -> {symbol: Quote}``; the broker does not know where quotes come from) at
the time given by ``clock`` (the fill bar's timestamp; no wall clock reaches booked data)::

    price = mid + side × (half_spread + mid × impact_bps / 1e4)
    impact_bps = broker.impact_y × σ_daily_bps × sqrt(q / ADV)        (square-root law)
    fee = broker.fee_bps / 1e4 × q × price

An order may take at most ``broker.participation_cap`` × the bar's volume (rounded down to whole shares
unless ``broker.allow_fractional``). What happens to the rest, ``broker.partial_remainder``:

* ``cancel`` (default): the remainder is cancelled at once; the order ends CANCELLED with its filled
  quantity and reason INSUFFICIENT_LIQUIDITY (an IOC order). Nothing is left working between bars.
* ``carry``: the order stays open (ACCEPTED / PARTIALLY_FILLED) and :meth:`PaperBroker.work_open_orders`,
  called once per later bar before new orders, fills more under the same cap, at most once per bar
  timestamp, until it is filled or cancelled (a HALTED kill switch cancels it). An open order whose symbol
  has no valid quote that bar simply waits.

Identity and idempotence: a duplicate ``client_order_id`` is REJECTED as DUPLICATE_CLIENT_ORDER_ID and
changes nothing; rejected orders are recorded too, so a lookup by client id always tells the order's fate.
``fill_id`` = sha256(client_order_id | n-th fill of the order), so replaying the same orders yields the
same ids; booking a fill id already booked is a no-op; a fill beyond the order's quantity raises
:class:`Overfill` and is not booked.

Corporate actions (:meth:`PaperBroker.apply_corporate_action`, called by the positions step on the effective
date): a split scales the position and its last price, a cash dividend is paid on the position; each action once.

Not modelled (on purpose): buying power / margin (the kill switch's gross exposure limit is the guard),
limit orders, borrow for shorts. Initial cash (``broker.initial_cash``) is read when the book is created
or :meth:`reset`; a later config change does not alter an existing book.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.protocol import (
    OPEN_STATUSES,
    Account,
    BrokerError,
    BrokerTimeout,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Overfill,
    RejectReason,
    Side,
    SubmitResult,
    check_transition,
)

SCHEMA_VERSION = 1
_ORDER_COLS = ("client_order_id", "broker_order_id", "symbol", "side", "quantity", "filled_quantity",
               "avg_price", "status", "reason_code", "bar_key", "reduce_only", "submitted_at",
               "last_worked_at", "n_fills")
_FILL_COLS = ("fill_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "ts", "seq", "mid")
_SCHEMA = (
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
)


@dataclass(frozen=True)
class Quote:
    """The market at the fill time for one symbol: prices, the bar's volume (shares), σ_daily (bps) and
    ADV (shares)."""

    mid: float
    bid: float
    ask: float
    volume: float
    sigma_daily_bps: float
    adv: float


class QuoteProvider(Protocol):
    def __call__(self, symbols: Sequence[str], ts: dt.datetime) -> Mapping[str, Quote]:
        """Quotes for the symbols it knows at ``ts``; a symbol left out is unknown (UNKNOWN_SYMBOL)."""
        ...


class FrameQuotes:
    """A quote provider over one snapshot: a DataFrame indexed by symbol with the :class:`Quote` fields
    as columns (``ts`` is ignored; build one per fill bar)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame.loc[~frame.index.duplicated(keep="first"), list(Quote.__dataclass_fields__)]

    def __call__(self, symbols: Sequence[str], ts: dt.datetime) -> dict[str, Quote]:
        sub = self._frame.loc[self._frame.index.intersection(pd.Index(symbols))]
        return {sym: Quote(*map(float, row)) for sym, row in zip(sub.index, sub.to_numpy(), strict=True)}


class BarClock:
    """A settable clock: the engine sets it to the fill bar's timestamp (tz-aware UTC)."""

    def __init__(self, ts: dt.datetime | None = None) -> None:
        self.ts = ts

    def set(self, ts: dt.datetime) -> None:
        self.ts = ts

    def __call__(self) -> dt.datetime:
        if self.ts is None:
            raise BrokerError("paper broker clock not set: set it to the fill bar's timestamp")
        return self.ts


@dataclass(frozen=True)
class _Params:
    fee_bps: float
    impact_y: float
    participation_cap: float
    carry: bool
    allow_fractional: bool

    @classmethod
    def load(cls) -> _Params:
        return cls(get_cfg("broker.fee_bps"), get_cfg("broker.impact_y"), get_cfg("broker.participation_cap"),
                   get_cfg("broker.partial_remainder") == "carry", get_cfg("broker.allow_fractional"))


def fill_id_for(client_order_id: str, n: int) -> str:
    """Deterministic id of the n-th fill (0-based) of an order."""
    return hashlib.sha256(f"{client_order_id}|{n}".encode()).hexdigest()[:24]


def fill_price(quote: Quote, side: Side, quantity: float, impact_y: float) -> float:
    """Mid + half the spread + square-root impact, against the trader."""
    impact_bps = impact_y * quote.sigma_daily_bps * math.sqrt(quantity / quote.adv)
    return quote.mid + side.sign * ((quote.ask - quote.bid) / 2.0 + quote.mid * impact_bps / 1e4)


def _to_db(ts: dt.datetime) -> dt.datetime:
    if ts.tzinfo is None:
        raise BrokerError(f"naive timestamp {ts!r}: the engine is UTC, pass tz-aware times")
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


def _from_db(ts: dt.datetime | None) -> dt.datetime | None:
    return None if ts is None else ts.replace(tzinfo=dt.UTC)


def _finite(*xs: Any) -> bool:
    return all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _quote_reason(quote: Quote | None) -> RejectReason | None:
    """Why a quote cannot fill an order (None: it can)."""
    if quote is None:
        return RejectReason.UNKNOWN_SYMBOL
    if not _finite(quote.mid, quote.bid, quote.ask) or min(quote.mid, quote.bid, quote.ask) <= 0 \
            or not quote.bid <= quote.mid <= quote.ask:
        return RejectReason.INVALID_PRICE
    if not _finite(quote.volume, quote.sigma_daily_bps, quote.adv) or quote.volume < 0 \
            or quote.sigma_daily_bps < 0 or quote.adv <= 0:
        return RejectReason.INVALID_MARKET_DATA
    return None


def _side(value: Any) -> Side | Any:
    try:
        return Side(value)
    except ValueError:
        return value  # only an INVALID_SIDE reject keeps a raw value


def _broker_errors(fn: Callable) -> Callable:
    """DuckDB failures surface as BrokerError, the one error type the engine handles."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except duckdb.Error as exc:
            raise BrokerError(f"paper broker storage error in {fn.__name__}: {exc}") from exc
    return wrapper


class PaperBroker:
    """The paper adapter of :class:`resources.brokers.protocol.Broker` (plus ``submit_many``,
    ``work_open_orders``, ``book_fill``, ``reset`` and ``batch``)."""

    def __init__(self, db_path: str | Path | None = None, *, quotes: QuoteProvider | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else resolve_path("paths.paper_broker_db")
        self.quotes = quotes
        self.clock = clock
        self._con: duckdb.DuckDBPyConnection | None = None
        self._schema_ready = False

    # ---- connections -------------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting (bounded) for a lock held by another process."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + get_cfg("broker.submit_timeout_seconds")
        pause = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.db_path))
                break
            except duckdb.IOException as exc:
                left = deadline - time.monotonic()
                if "lock" not in str(exc).lower():
                    raise BrokerError(f"paper broker: cannot open {self.db_path}: {exc}") from exc
                if left <= 0:
                    raise BrokerTimeout(f"paper broker: {self.db_path} locked by another process: {exc}") from exc
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)
        if not self._schema_ready:
            try:
                for stmt in _SCHEMA:
                    con.execute(stmt)
                con.execute("INSERT INTO paper_account VALUES (1, ?, ?, 0, 0, ?) ON CONFLICT DO NOTHING",
                            [get_cfg("broker.initial_cash")] * 2 + [SCHEMA_VERSION])
            except BaseException:
                con.close()
                raise
            self._schema_ready = True
        return con

    @contextmanager
    def _conn(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            yield self._con
            return
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def batch(self) -> Iterator[PaperBroker]:
        """Hold one connection for a block of calls (one bar's orders); each submit stays its own
        transaction. Other processes are blocked only for the block's duration."""
        if self._con is not None:
            yield self
            return
        self._con = _broker_errors(self._open)()
        try:
            yield self
        finally:
            con, self._con = self._con, None
            con.close()

    @staticmethod
    @contextmanager
    def _tx(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _now(self) -> dt.datetime:
        if self.clock is None:
            raise BrokerError("paper broker has no clock: pass clock= (the fill bar's timestamp)")
        return self.clock()

    def _quotes(self, symbols: Sequence[str], now: dt.datetime) -> Mapping[str, Quote]:
        if self.quotes is None:
            raise BrokerError("paper broker has no quote provider: pass quotes= to fill market orders")
        return self.quotes(sorted(set(symbols)), now)

    # ---- orders ------------------------------------------------------------------------------------
    def submit(self, request: OrderRequest) -> SubmitResult:
        return self.submit_many([request])[0]

    @_broker_errors
    def submit_many(self, requests: Sequence[OrderRequest]) -> list[SubmitResult]:
        """Submit orders in the given order, one transaction each, filling them at once."""
        if not requests:
            return []
        params = _Params.load()
        now = self._now()
        quotes = self._quotes([str(r.symbol) for r in requests], now)
        with self._conn() as con:
            return [self._submit_one(con, r, quotes.get(r.symbol), now, params) for r in requests]

    def _submit_one(self, con: duckdb.DuckDBPyConnection, req: OrderRequest, quote: Quote | None,
                    now: dt.datetime, params: _Params) -> SubmitResult:
        with self._tx(con):
            if con.execute("SELECT 1 FROM paper_orders WHERE client_order_id = ?",
                           [req.client_order_id]).fetchone():
                return SubmitResult(req.client_order_id, OrderStatus.REJECTED,
                                    RejectReason.DUPLICATE_CLIENT_ORDER_ID)
            order_seq = con.execute(
                "UPDATE paper_account SET order_seq = order_seq + 1 RETURNING order_seq").fetchone()[0]
            reason = self._reject_reason(req, quote, params, self._position(con, req.symbol))
            status = check_transition(OrderStatus.NEW,
                                      OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED)
            order = dict(client_order_id=req.client_order_id, broker_order_id=f"PB-{order_seq:010d}",
                         symbol=req.symbol, side=str(req.side), quantity=float(req.quantity)
                         if isinstance(req.quantity, numbers.Real) else math.nan,
                         filled_quantity=0.0, avg_price=None, status=status.value,
                         reason_code=reason.value if reason else None, bar_key=req.bar_key,
                         reduce_only=bool(req.reduce_only), submitted_at=_to_db(now), last_worked_at=None,
                         n_fills=0)
            con.execute(f"INSERT INTO paper_orders VALUES ({', '.join('?' * len(_ORDER_COLS))})",
                        [order[c] for c in _ORDER_COLS])
            if status is OrderStatus.ACCEPTED:
                self._work(con, order, quote, now, params)
            return self._to_order(order).as_result()

    @staticmethod
    def _reject_reason(req: OrderRequest, quote: Quote | None, params: _Params,
                       position: float) -> RejectReason | None:
        if not isinstance(_side(req.side), Side):
            return RejectReason.INVALID_SIDE
        if req.order_type != OrderType.MARKET:
            return RejectReason.UNSUPPORTED_ORDER_TYPE
        q = req.quantity
        if not _finite(q) or q <= 0 or (not params.allow_fractional and q != math.floor(q)):
            return RejectReason.INVALID_QUANTITY
        if not req.symbol:
            return RejectReason.UNKNOWN_SYMBOL
        if (reason := _quote_reason(quote)) is not None:
            return reason
        if req.reduce_only and not (position * Side(req.side).sign < 0 and q <= abs(position)):
            return RejectReason.REDUCE_ONLY_VIOLATION
        return None

    def _work(self, con: duckdb.DuckDBPyConnection, order: dict, quote: Quote, now: dt.datetime,
              params: _Params) -> Fill | None:
        """Fill what the participation cap allows now; then cancel or carry the remainder."""
        side = Side(order["side"])
        remaining = order["quantity"] - order["filled_quantity"]
        cap = params.participation_cap * quote.volume
        q = liquid_q = min(remaining, cap if params.allow_fractional else math.floor(cap))
        if order["reduce_only"]:  # never past flat, whatever filled since submission
            q = min(q, max(0.0, -side.sign * self._position(con, order["symbol"])))
        fill = None
        if q > 0:
            price = fill_price(quote, side, q, params.impact_y)
            fill = Fill(fill_id_for(order["client_order_id"], order["n_fills"]), order["client_order_id"],
                        order["symbol"], side, q, price, params.fee_bps / 1e4 * q * price, now, mid=quote.mid)
            fill = self._book(con, fill, order)
            filled = order["filled_quantity"] + q
            order["avg_price"] = ((order["avg_price"] or 0.0) * order["filled_quantity"] + price * q) / filled
            order["filled_quantity"] = filled
            order["n_fills"] += 1
            self._move(order, OrderStatus.FILLED if filled >= order["quantity"] else OrderStatus.PARTIALLY_FILLED)
        if order["status"] != OrderStatus.FILLED and (not params.carry or q < liquid_q):
            # a reduce-only order clipped at flat can never complete: cancelled even when carrying
            self._move(order, OrderStatus.CANCELLED)
            order["reason_code"] = (RejectReason.REDUCE_ONLY_VIOLATION if q < liquid_q
                                    else RejectReason.INSUFFICIENT_LIQUIDITY).value
        order["last_worked_at"] = _to_db(now)
        con.execute("UPDATE paper_orders SET filled_quantity = ?, avg_price = ?, status = ?, reason_code = ?, "
                    "last_worked_at = ?, n_fills = ? WHERE client_order_id = ?",
                    [order["filled_quantity"], order["avg_price"], order["status"], order["reason_code"],
                     order["last_worked_at"], order["n_fills"], order["client_order_id"]])
        return fill

    @staticmethod
    def _move(order: dict, new: OrderStatus) -> None:
        if new != order["status"]:
            order["status"] = check_transition(order["status"], new).value

    @staticmethod
    def _position(con: duckdb.DuckDBPyConnection, symbol: str) -> float:
        row = con.execute("SELECT quantity FROM paper_positions WHERE symbol = ?", [symbol]).fetchone()
        return float(row[0]) if row else 0.0

    def _book(self, con: duckdb.DuckDBPyConnection, fill: Fill, order: dict | None) -> Fill | None:
        """Insert the fill and move cash and position; a fill id already booked changes nothing."""
        if con.execute("SELECT 1 FROM paper_fills WHERE fill_id = ?", [fill.fill_id]).fetchone():
            return None
        if order is not None and order["filled_quantity"] + fill.quantity > order["quantity"]:
            raise Overfill(f"fill {fill.fill_id}: {fill.quantity} more on order {fill.client_order_id} "
                           f"({order['filled_quantity']} of {order['quantity']} filled)")
        seq = con.execute("UPDATE paper_account SET fill_seq = fill_seq + 1, cash = cash - ? "
                          "RETURNING fill_seq",
                          [Side(fill.side).sign * fill.quantity * fill.price + fill.fee]).fetchone()[0]
        fill = Fill(fill.fill_id, fill.client_order_id, fill.symbol, Side(fill.side), fill.quantity, fill.price,
                    fill.fee, fill.ts, seq, fill.mid)
        con.execute(f"INSERT INTO paper_fills ({', '.join(_FILL_COLS)}) VALUES "
                    f"({', '.join('?' * len(_FILL_COLS))})",
                    [fill.fill_id, fill.client_order_id, fill.symbol, fill.side.value, fill.quantity,
                     fill.price, fill.fee, _to_db(fill.ts), seq, fill.mid])
        con.execute("INSERT INTO paper_positions VALUES (?, ?, ?) ON CONFLICT (symbol) DO UPDATE SET "
                    "quantity = paper_positions.quantity + excluded.quantity, last_price = excluded.last_price",
                    [fill.symbol, fill.side.sign * fill.quantity, fill.price])
        return fill

    @_broker_errors
    def book_fill(self, fill: Fill) -> bool:
        """Book an externally known fill (restoring a book from recorded fills). Returns False when its
        ``fill_id`` is already booked; raises :class:`Overfill` if it would overfill its order. The
        order's own filled quantity is not changed here."""
        with self._conn() as con, self._tx(con):
            row = con.execute("SELECT quantity, (SELECT coalesce(sum(quantity), 0) FROM paper_fills f "
                              "WHERE f.client_order_id = o.client_order_id) FROM paper_orders o "
                              "WHERE client_order_id = ?", [fill.client_order_id]).fetchone()
            order = None if row is None else {"quantity": row[0], "filled_quantity": row[1],
                                              "client_order_id": fill.client_order_id}
            return self._book(con, fill, order) is not None

    @_broker_errors
    def work_open_orders(self) -> list[Fill]:
        """``carry`` mode: fill more of each open order at the current bar, at most once per bar."""
        params = _Params.load()
        now = self._now()
        with self._conn() as con:
            rows = con.execute(f"SELECT {', '.join(_ORDER_COLS)} FROM paper_orders WHERE status IN (SELECT unnest(?)) "
                               "AND (last_worked_at IS NULL OR last_worked_at < ?) ORDER BY broker_order_id",
                               [sorted(s.value for s in OPEN_STATUSES), _to_db(now)]).fetchall()
            if not rows:
                return []
            orders = [dict(zip(_ORDER_COLS, r, strict=True)) for r in rows]
            quotes = self._quotes([o["symbol"] for o in orders], now)
            fills = []
            for order in orders:
                quote = quotes.get(order["symbol"])
                if _quote_reason(quote) is not None:
                    continue  # no valid quote this bar: the order waits
                with self._tx(con):
                    fill = self._work(con, order, quote, now, params)
                if fill is not None:
                    fills.append(fill)
            return fills

    @_broker_errors
    def cancel(self, client_order_id: str) -> SubmitResult:
        with self._conn() as con, self._tx(con):
            order = self._load_order(con, client_order_id)
            if order is None:
                return SubmitResult(client_order_id, OrderStatus.REJECTED, RejectReason.ORDER_NOT_FOUND)
            if OrderStatus(order["status"]) not in OPEN_STATUSES:
                return replace(self._to_order(order).as_result(), reason_code=RejectReason.ORDER_NOT_OPEN)
            self._move(order, OrderStatus.CANCELLED)
            order["reason_code"] = RejectReason.CANCELLED_BY_REQUEST.value
            con.execute("UPDATE paper_orders SET status = ?, reason_code = ? WHERE client_order_id = ?",
                        [order["status"], order["reason_code"], client_order_id])
            return self._to_order(order).as_result()

    # ---- queries -----------------------------------------------------------------------------------
    @staticmethod
    def _load_order(con: duckdb.DuckDBPyConnection, client_order_id: str) -> dict | None:
        row = con.execute(f"SELECT {', '.join(_ORDER_COLS)} FROM paper_orders WHERE client_order_id = ?",
                          [client_order_id]).fetchone()
        return None if row is None else dict(zip(_ORDER_COLS, row, strict=True))

    @staticmethod
    def _to_order(o: dict) -> Order:
        return Order(o["client_order_id"], o["broker_order_id"], o["symbol"], _side(o["side"]), o["quantity"],
                     o["filled_quantity"], o["avg_price"], OrderStatus(o["status"]),
                     RejectReason(o["reason_code"]) if o["reason_code"] else None, o["bar_key"],
                     bool(o["reduce_only"]), _from_db(o["submitted_at"]))

    @_broker_errors
    def order_status(self, client_order_id: str) -> Order | None:
        with self._conn() as con:
            order = self._load_order(con, client_order_id)
        return None if order is None else self._to_order(order)

    @_broker_errors
    def open_orders(self) -> list[Order]:
        with self._conn() as con:
            rows = con.execute(f"SELECT {', '.join(_ORDER_COLS)} FROM paper_orders WHERE status IN (SELECT unnest(?)) "
                               "ORDER BY broker_order_id", [sorted(s.value for s in OPEN_STATUSES)]).fetchall()
        return [self._to_order(dict(zip(_ORDER_COLS, r, strict=True))) for r in rows]

    @_broker_errors
    def positions(self) -> dict[str, float]:
        with self._conn() as con:
            rows = con.execute("SELECT symbol, quantity FROM paper_positions WHERE quantity <> 0 "
                               "ORDER BY symbol").fetchall()
        return {s: float(q) for s, q in rows}

    @_broker_errors
    def account(self, marks: Mapping[str, float] | None = None) -> Account:
        """Cash, equity and positions. Marks: ``marks`` if given, else the quote mids at the clock's time
        when a quote provider and clock are set, else each position's last fill price."""
        with self._conn() as con:
            cash = float(con.execute("SELECT cash FROM paper_account").fetchone()[0])
            pos = con.execute("SELECT symbol, quantity, last_price FROM paper_positions WHERE quantity <> 0 "
                              "ORDER BY symbol").df()
        if marks is None and self.quotes is not None and self.clock is not None and len(pos):
            marks = {s: q.mid for s, q in self._quotes(list(pos["symbol"]), self.clock()).items()}
        px = pd.Series(marks or {}, dtype=float).reindex(pos["symbol"]).to_numpy()
        px = np.where(np.isfinite(px), px, pos["last_price"].to_numpy(dtype=float))
        equity = cash + float(np.dot(pos["quantity"].to_numpy(dtype=float), px))
        return Account(cash, equity, dict(zip(pos["symbol"], pos["quantity"].astype(float), strict=True)))

    @_broker_errors
    def fills_since(self, since: dt.datetime | int | None = None) -> list[Fill]:
        where, args = "", []
        if isinstance(since, dt.datetime):
            where, args = "WHERE ts >= ?", [_to_db(since)]
        elif since is not None:
            where, args = "WHERE seq > ?", [int(since)]
        with self._conn() as con:
            rows = con.execute(f"SELECT {', '.join(_FILL_COLS)} FROM paper_fills {where} ORDER BY seq",
                               args).fetchall()
        return [Fill(fid, cid, sym, Side(side), q, px, fee, _from_db(ts), seq, math.nan if mid is None else mid)
                for fid, cid, sym, side, q, px, fee, ts, seq, mid in rows]

    @_broker_errors
    def apply_corporate_action(self, symbol: str, effective_date: dt.date, split_ratio: float,
                               cash_dividend: float) -> dict[str, Any]:
        """Apply a split and/or a cash dividend to the book, once per (symbol, effective date): the position
        × ``split_ratio``, its last price ÷ ``split_ratio``, cash + ``cash_dividend`` × the position before the
        split (a short pays it). Returns ``applied`` (False when it already was, nothing changed), the position
        before and after and the cash change, for lineage (``positions_adjustments``)."""
        if not (_finite(split_ratio, cash_dividend) and split_ratio > 0 and cash_dividend >= 0):
            raise BrokerError(f"corporate action {symbol} {effective_date}: split_ratio {split_ratio} must be > 0 "
                              f"and cash_dividend {cash_dividend} ≥ 0")
        with self._conn() as con, self._tx(con):
            done = con.execute("SELECT qty_before, qty_after, cash_change FROM paper_corporate_actions "
                               "WHERE symbol = ? AND effective_date = ?", [symbol, effective_date]).fetchone()
            if done:
                return {"applied": False, "qty_before": done[0], "qty_after": done[1], "cash_change": done[2]}
            before = self._position(con, symbol)
            after = before * split_ratio
            cash = before * cash_dividend
            if before != 0:
                con.execute("UPDATE paper_positions SET quantity = ?, last_price = last_price / ? WHERE symbol = ?",
                            [after, split_ratio, symbol])
            if cash:
                con.execute("UPDATE paper_account SET cash = cash + ?", [cash])
            con.execute("INSERT INTO paper_corporate_actions VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [symbol, effective_date, split_ratio, cash_dividend, before, after, cash])
        return {"applied": True, "qty_before": before, "qty_after": after, "cash_change": cash}

    @_broker_errors
    def reset(self) -> None:
        """A fresh account with ``broker.initial_cash`` (tests, replay). Deletes every order and fill."""
        with self._conn() as con, self._tx(con):
            for table in ("paper_corporate_actions", "paper_fills", "paper_orders", "paper_positions",
                          "paper_account"):
                con.execute(f"DELETE FROM {table}")
            con.execute("INSERT INTO paper_account VALUES (1, ?, ?, 0, 0, ?)",
                        [get_cfg("broker.initial_cash")] * 2 + [SCHEMA_VERSION])

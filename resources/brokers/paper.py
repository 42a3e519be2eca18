"""The paper broker: a simulated venue whose book lives in DuckDB tables of its own.

Why DuckDB tables, short-lived connections: the book (cash, positions, orders, fills) must survive the
process (every Dagster run is a new process) and be seen identically by the next one, while the DuckDB
file lock would block every other process that holds the file open. So each public call opens the file,
runs one transaction per order and closes it; :meth:`PaperBroker.batch` keeps one connection for a
block of calls (one bar's orders) to pay the ~10 ms open once. A lock held elsewhere is waited for up to
``broker.submit_timeout_seconds``, then :class:`BrokerTimeout`.

The fill model (SPEC §6; the idea of Lean's next-bar fill models). An order decided at a bar's close can
only fill at a price the market offered after the decision, so :meth:`submit` never fills: a valid order
is ACCEPTED and waits. :meth:`settle` is called once per bar (the engine's ``positions`` step, before any
new order) and is what the venue does between two bar closes:

1. day orders of a session that has closed are EXPIRED (EXPIRED_AT_CLOSE);
2. every working MARKET order decided at least ``1 + broker.fill_latency_bars`` calendar bars before the
   settled bar fills at that bar's **open**, against the trader::

       price = open + side × (half the bar's quoted spread + open × impact_bps / 1e4)
       impact_bps = broker.impact_y × σ_daily_bps × sqrt(q / ADV)        (square-root law)
       fee = broker.fee_bps / 1e4 × q × price

   taking at most ``broker.participation_cap`` × the bar's volume (floored to whole shares, or to
   ``broker.qty_decimals`` with ``broker.allow_fractional``). The rest, per ``broker.partial_remainder``:
   ``cancel`` (default, CANCELLED / INSUFFICIENT_LIQUIDITY: an IOC order) or ``carry`` (stays
   PARTIALLY_FILLED and is worked at the next bars' opens under the same cap). An order whose symbol has no
   valid quote at the settled bar waits (a halt) until it has one or its session closes;
3. at the session's closing bar, MOC (market-on-close) orders fill in full at the bar's close (the closing
   auction: no spread, square-root impact, fees) and every order still working EXPIRES.

The decision bar's own quote is never a fill price. A MARKET or MOC order sent once the session has
closed (the clock at or after the closing bar) is REJECTED / SESSION_CLOSED. A bar the engine did not
run is not settled on its own: the next :meth:`settle` fills what is due at that later bar's open.

Quantities are rounded to ``broker.qty_decimals`` after every sum (``resources.brokers.quantity``), so
fractional positions carry no float residue. Positions keep their average entry price (``avg_cost``,
average-cost method), reported as :attr:`Account.cost_basis`.

Identity and idempotence: a duplicate ``client_order_id`` is REJECTED as DUPLICATE_CLIENT_ORDER_ID and
changes nothing; rejected orders are recorded too, so a lookup by client id always tells the order's fate.
``fill_id`` = sha256(client_order_id | n-th fill of the order), so replaying the same orders yields the
same ids; booking a fill id already booked is a no-op; a fill beyond the order's quantity raises
:class:`Overfill` and is not booked. Settling a bar twice changes nothing the second time.

Corporate actions (:meth:`PaperBroker.apply_corporate_action`, called by the positions step on the effective
date): a split scales the position and divides its last price and average cost, a cash dividend is paid on the
position; each action once.

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
from dataclasses import dataclass, field, replace
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
from resources.brokers.quantity import floor_qty, round_qty

SCHEMA_VERSION = 2
_ORDER_COLS = ("client_order_id", "broker_order_id", "symbol", "side", "quantity", "filled_quantity",
               "avg_price", "status", "reason_code", "bar_key", "reduce_only", "submitted_at",
               "last_worked_at", "n_fills", "order_type")
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
    # version 2 (an existing version-1 book gains the columns; its values stay)
    "ALTER TABLE paper_orders ADD COLUMN IF NOT EXISTS order_type VARCHAR DEFAULT 'MARKET'",
    "ALTER TABLE paper_positions ADD COLUMN IF NOT EXISTS avg_cost DOUBLE",
    "ALTER TABLE paper_account ADD COLUMN IF NOT EXISTS settled_through TIMESTAMP",
)
SUPPORTED_ORDER_TYPES = frozenset({OrderType.MARKET, OrderType.MOC})


@dataclass(frozen=True)
class Quote:
    """The market of one symbol at one bar: the last quote (bid, ask and their ``mid``), the bar's volume
    (shares), σ_daily (bps), ADV (shares), and the bar's ``open`` and ``close`` (the prices a market order
    and a market-on-close order fill at). ``open``/``close`` NaN: that bar cannot fill such an order."""

    mid: float
    bid: float
    ask: float
    volume: float
    sigma_daily_bps: float
    adv: float
    open: float = math.nan
    close: float = math.nan


class QuoteProvider(Protocol):
    def __call__(self, symbols: Sequence[str], ts: dt.datetime) -> Mapping[str, Quote]:
        """Quotes for the symbols it knows at ``ts``; a symbol left out is unknown (UNKNOWN_SYMBOL)."""
        ...


class FrameQuotes:
    """A quote provider over one snapshot: a DataFrame indexed by symbol with the :class:`Quote` fields
    as columns (a missing ``open``/``close`` column is NaN; ``ts`` is ignored: build one per bar)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        frame = frame.reindex(columns=list(Quote.__dataclass_fields__))
        self._frame = frame.loc[~frame.index.duplicated(keep="first")].astype(float)

    def __call__(self, symbols: Sequence[str], ts: dt.datetime) -> dict[str, Quote]:
        sub = self._frame.loc[self._frame.index.intersection(pd.Index(symbols))]
        return {sym: Quote(*map(float, row)) for sym, row in zip(sub.index, sub.to_numpy(), strict=True)}


class BarClock:
    """A settable clock: the engine sets it to the bar's timestamp (tz-aware UTC)."""

    def __init__(self, ts: dt.datetime | None = None) -> None:
        self.ts = ts

    def set(self, ts: dt.datetime) -> None:
        self.ts = ts

    def __call__(self) -> dt.datetime:
        if self.ts is None:
            raise BrokerError("paper broker clock not set: set it to the bar's timestamp")
        return self.ts


@dataclass(frozen=True)
class _Params:
    fee_bps: float
    impact_y: float
    participation_cap: float
    carry: bool
    allow_fractional: bool
    latency_bars: int
    qty_decimals: int

    @classmethod
    def load(cls) -> _Params:
        return cls(get_cfg("broker.fee_bps"), get_cfg("broker.impact_y"), get_cfg("broker.participation_cap"),
                   get_cfg("broker.partial_remainder") == "carry", get_cfg("broker.allow_fractional"),
                   get_cfg("broker.fill_latency_bars"), get_cfg("broker.qty_decimals"))

    def cap(self, volume: float) -> float:
        """The most one order may take from a bar of ``volume`` shares."""
        return floor_qty(self.participation_cap * volume, self.qty_decimals if self.allow_fractional else 0)


@dataclass(frozen=True)
class Settlement:
    """What :meth:`PaperBroker.settle` did at one bar: the fills booked (in booking order) and every order
    whose status or filled quantity changed, as it stands after the settlement (in broker order id order)."""

    ts: dt.datetime
    fills: list[Fill] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


def fill_id_for(client_order_id: str, n: int) -> str:
    """Deterministic id of the n-th fill (0-based) of an order."""
    return hashlib.sha256(f"{client_order_id}|{n}".encode()).hexdigest()[:24]


def impact_bps(quote: Quote, quantity: float, impact_y: float) -> float:
    """Square-root impact in bps: Y × σ_daily × sqrt(q / ADV)."""
    return impact_y * quote.sigma_daily_bps * math.sqrt(quantity / quote.adv)


def fill_price(quote: Quote, side: Side, quantity: float, impact_y: float,
               order_type: OrderType = OrderType.MARKET) -> float:
    """The fill price against the trader. MARKET: the bar's open + half its quoted spread + impact.
    MOC: the bar's close (the closing auction, no spread) + impact."""
    if OrderType(order_type) is OrderType.MOC:
        return quote.close * (1.0 + side.sign * impact_bps(quote, quantity, impact_y) / 1e4)
    return quote.open + side.sign * ((quote.ask - quote.bid) / 2.0
                                     + quote.open * impact_bps(quote, quantity, impact_y) / 1e4)


def _to_db(ts: dt.datetime) -> dt.datetime:
    if ts.tzinfo is None:
        raise BrokerError(f"naive timestamp {ts!r}: the engine is UTC, pass tz-aware times")
    return ts.astimezone(dt.UTC).replace(tzinfo=None)


def _from_db(ts: dt.datetime | None) -> dt.datetime | None:
    return None if ts is None else ts.replace(tzinfo=dt.UTC)


def _finite(*xs: Any) -> bool:
    return all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _quote_reason(quote: Quote | None, fill_base: float | None = None) -> RejectReason | None:
    """Why a quote cannot take (or, with ``fill_base`` = the open or close, fill) an order (None: it can)."""
    if quote is None:
        return RejectReason.UNKNOWN_SYMBOL
    if not _finite(quote.mid, quote.bid, quote.ask) or min(quote.mid, quote.bid, quote.ask) <= 0 \
            or not quote.bid <= quote.mid <= quote.ask:
        return RejectReason.INVALID_PRICE
    if fill_base is not None and not (_finite(fill_base) and fill_base > 0):
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


class _Sessions:
    """The venue's trading hours, from the engine's calendar (``resources.market.calendar``)."""

    def __init__(self) -> None:
        from resources.market.calendar import get_calendar

        self.cal = get_calendar()
        self._of: dict[dt.datetime, dt.date] = {}

    def session(self, ts: dt.datetime) -> dt.date:
        if ts not in self._of:  # the same few decision times come back bar after bar
            self._of[ts] = self.cal.session_of(pd.Timestamp(ts))
        return self._of[ts]

    def bars(self, day: dt.date) -> pd.DatetimeIndex | None:
        try:
            return self.cal.session_bars(day)
        except ValueError:  # not a session (weekend, holiday) or outside the calendar's span
            return None

    def is_open(self, ts: dt.datetime) -> bool:
        """The regular session is open at ``ts``: after its open, before its closing bar's close."""
        bars = self.bars(self.session(ts))
        if bars is None:
            return False
        t = pd.Timestamp(ts)
        return bars[0] - pd.Timedelta(minutes=self.cal.bar_minutes) <= t < bars[-1]

    def is_closing_bar(self, ts: dt.datetime) -> bool:
        bars = self.bars(self.session(ts))
        return bars is not None and pd.Timestamp(ts) == bars[-1]

    def due_cutoff(self, ts: dt.datetime, latency_bars: int) -> dt.datetime | None:
        """Orders decided at or before this bar are due at ``ts``: the bar 1 + latency bars earlier."""
        bars, t = self.bars(self.session(ts)), pd.Timestamp(ts)
        if bars is not None and t in bars and bars.get_loc(t) > latency_bars:  # within the session
            return bars[bars.get_loc(t) - latency_bars - 1].to_pydatetime()
        prev = self.cal.previous_bars(t, latency_bars + 2)
        return prev[0].to_pydatetime() if len(prev) == latency_bars + 2 else None


class PaperBroker:
    """The paper adapter of :class:`resources.brokers.protocol.Broker` (plus ``submit_many``, ``settle``,
    ``book_fill``, ``reset`` and ``batch``)."""

    supported_order_types = SUPPORTED_ORDER_TYPES

    def __init__(self, db_path: str | Path | None = None, *, quotes: QuoteProvider | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else resolve_path("paths.paper_broker_db")
        self.quotes = quotes
        self.clock = clock
        self._con: duckdb.DuckDBPyConnection | None = None
        self._schema_ready = False
        self._sessions: _Sessions | None = None

    @property
    def sessions(self) -> _Sessions:
        if self._sessions is None:
            self._sessions = _Sessions()
        return self._sessions

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
                self._new_account(con, "ON CONFLICT DO NOTHING")
            except BaseException:
                con.close()
                raise
            self._schema_ready = True
        return con

    @staticmethod
    def _new_account(con: duckdb.DuckDBPyConnection, conflict: str = "") -> None:
        cash = get_cfg("broker.initial_cash")
        con.execute("INSERT INTO paper_account (id, cash, initial_cash, fill_seq, order_seq, schema_version, "
                    f"settled_through) VALUES (1, ?, ?, 0, 0, ?, NULL) {conflict}", [cash, cash, SCHEMA_VERSION])

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
            raise BrokerError("paper broker has no clock: pass clock= (the bar's timestamp)")
        return self.clock()

    def _quotes(self, symbols: Sequence[str], now: dt.datetime) -> Mapping[str, Quote]:
        if self.quotes is None:
            raise BrokerError("paper broker has no quote provider: pass quotes= (the bar's market)")
        return self.quotes(sorted(set(symbols)), now)

    # ---- orders ------------------------------------------------------------------------------------
    def submit(self, request: OrderRequest) -> SubmitResult:
        return self.submit_many([request])[0]

    @_broker_errors
    def submit_many(self, requests: Sequence[OrderRequest]) -> list[SubmitResult]:
        """Take orders in the given order, one transaction each: a valid order is ACCEPTED (it fills at a
        later :meth:`settle`), an invalid one REJECTED with its reason."""
        if not requests:
            return []
        params = _Params.load()
        now = self._now()
        _to_db(now)
        session_open = self.sessions.is_open(now)
        quotes = self._quotes([str(r.symbol) for r in requests], now)
        with self._conn() as con:
            return [self._submit_one(con, r, quotes.get(r.symbol), now, params, session_open) for r in requests]

    def _submit_one(self, con: duckdb.DuckDBPyConnection, req: OrderRequest, quote: Quote | None,
                    now: dt.datetime, params: _Params, session_open: bool) -> SubmitResult:
        with self._tx(con):
            if con.execute("SELECT 1 FROM paper_orders WHERE client_order_id = ?",
                           [req.client_order_id]).fetchone():
                return SubmitResult(req.client_order_id, OrderStatus.REJECTED,
                                    RejectReason.DUPLICATE_CLIENT_ORDER_ID)
            order_seq = con.execute(
                "UPDATE paper_account SET order_seq = order_seq + 1 RETURNING order_seq").fetchone()[0]
            reason = self._reject_reason(req, quote, params, self._position(con, req.symbol)[0], session_open)
            status = check_transition(OrderStatus.NEW,
                                      OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED)
            order = dict(client_order_id=req.client_order_id, broker_order_id=f"PB-{order_seq:010d}",
                         symbol=req.symbol, side=str(req.side), quantity=float(req.quantity)
                         if isinstance(req.quantity, numbers.Real) else math.nan,
                         filled_quantity=0.0, avg_price=None, status=status.value,
                         reason_code=reason.value if reason else None, bar_key=req.bar_key,
                         reduce_only=bool(req.reduce_only), submitted_at=_to_db(now), last_worked_at=None,
                         n_fills=0, order_type=str(req.order_type))
            con.execute(f"INSERT INTO paper_orders ({', '.join(_ORDER_COLS)}) VALUES "
                        f"({', '.join('?' * len(_ORDER_COLS))})", [order[c] for c in _ORDER_COLS])
            return self._to_order(order).as_result()

    @staticmethod
    def _reject_reason(req: OrderRequest, quote: Quote | None, params: _Params, position: float,
                       session_open: bool) -> RejectReason | None:
        if not isinstance(_side(req.side), Side):
            return RejectReason.INVALID_SIDE
        if req.order_type not in SUPPORTED_ORDER_TYPES:
            return RejectReason.UNSUPPORTED_ORDER_TYPE
        q = req.quantity
        if not _finite(q) or q <= 0 or (not params.allow_fractional and q != math.floor(q)):
            return RejectReason.INVALID_QUANTITY
        if not req.symbol:
            return RejectReason.UNKNOWN_SYMBOL
        if not session_open:
            return RejectReason.SESSION_CLOSED
        if (reason := _quote_reason(quote)) is not None:
            return reason
        if req.reduce_only and not (position * Side(req.side).sign < 0 and q <= abs(position)):
            return RejectReason.REDUCE_ONLY_VIOLATION
        return None

    # ---- the venue between two bars ----------------------------------------------------------------
    @_broker_errors
    def settle(self, ts: dt.datetime | None = None) -> Settlement:
        """Everything the venue does up to bar ``ts`` (default: the clock), once per bar: expiries of
        closed sessions, due MARKET orders filled at the bar's open (carried remainders worked again), and
        at the session's closing bar MOC fills at its close and the expiry of what is still working.
        A bar at or before the last settled one changes nothing. Quotes come from the quote provider.

        The whole settlement is computed in memory (orders in broker order id order, positions updated
        fill by fill for reduce-only clipping and cost basis) and written in one transaction with a
        handful of bulk statements, whatever the number of fills."""
        now = ts or self._now()
        params = _Params.load()
        sessions = self.sessions
        with self._conn() as con:
            last, seq, cash = con.execute("SELECT settled_through, fill_seq, cash FROM paper_account").fetchone()
            if last is not None and _to_db(now) <= last:
                return Settlement(now)
            orders = [dict(zip(_ORDER_COLS, r, strict=True)) for r in con.execute(
                f"SELECT {', '.join(_ORDER_COLS)} FROM paper_orders WHERE status IN (SELECT unnest(?)) "
                "ORDER BY broker_order_id", [sorted(s.value for s in OPEN_STATUSES)]).fetchall()]
            out = Settlement(now)
            if orders:
                session, closing = sessions.session(now), sessions.is_closing_bar(now)
                cutoff = sessions.due_cutoff(now, params.latency_bars)
                symbols = sorted({o["symbol"] for o in orders})
                quotes = self._quotes(symbols, now)
                book = {sym: (float(q), a) for sym, q, a in con.execute(
                    "SELECT symbol, quantity, avg_cost FROM paper_positions WHERE symbol IN (SELECT unnest(?))",
                    [symbols]).fetchall()}
                for order in orders:  # the account's working orders, in the order the venue took them
                    before = (order["status"], order["filled_quantity"])
                    decided = _from_db(order["submitted_at"])
                    if sessions.session(decided) < session:          # its session closed unsettled
                        self._expire(order)
                    elif (order["order_type"] == OrderType.MARKET and cutoff is not None and decided <= cutoff) \
                            or (order["order_type"] == OrderType.MOC and closing):
                        fill = self._work(order, quotes.get(order["symbol"]), now, params, book)
                        if fill is not None:
                            seq += 1
                            cash -= fill.side.sign * fill.quantity * fill.price + fill.fee
                            out.fills.append(replace(fill, seq=seq))
                    if closing and OrderStatus(order["status"]) in OPEN_STATUSES:
                        self._expire(order)
                    if (order["status"], order["filled_quantity"]) != before:
                        order["last_worked_at"] = _to_db(now)
                        out.orders.append(order)
            with self._tx(con):
                self._write_settlement(con, out, cash, seq, book if orders else {}, now)
            out.orders[:] = [self._to_order(o) for o in out.orders]
        return out

    @staticmethod
    def _write_settlement(con: duckdb.DuckDBPyConnection, out: Settlement, cash: float, seq: int,
                          book: dict[str, tuple[float, float | None]], now: dt.datetime) -> None:
        """The settlement's fills, positions, orders and account, in bulk (inside the caller's transaction)."""
        if out.fills:
            fills = pd.DataFrame([(f.fill_id, f.client_order_id, f.symbol, f.side.value, f.quantity, f.price, f.fee,
                                   _to_db(f.ts), f.seq, f.mid) for f in out.fills], columns=list(_FILL_COLS))
            touched = sorted({f.symbol for f in out.fills})
            positions = pd.DataFrame({"symbol": touched, "quantity": [book[s][0] for s in touched],
                                      "last_price": [next(f.price for f in reversed(out.fills) if f.symbol == s)
                                                     for s in touched],
                                      "avg_cost": pd.Series([book[s][1] for s in touched], dtype="Float64")})
            con.register("_fills", fills)
            con.register("_positions", positions)
            try:
                con.execute(f"INSERT INTO paper_fills ({', '.join(_FILL_COLS)}) SELECT * FROM _fills")
                con.execute("INSERT INTO paper_positions (symbol, quantity, last_price, avg_cost) "
                            "SELECT symbol, quantity, last_price, avg_cost FROM _positions "
                            "ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity, "
                            "last_price = excluded.last_price, avg_cost = excluded.avg_cost")
            finally:
                con.unregister("_fills")
                con.unregister("_positions")
        if out.orders:
            cols = ["client_order_id", "filled_quantity", "avg_price", "status", "reason_code", "last_worked_at",
                    "n_fills"]
            changed = pd.DataFrame([[o[c] for c in cols] for o in out.orders], columns=cols).astype(
                {"filled_quantity": float, "avg_price": "Float64", "n_fills": int})  # Float64: None stays NULL
            con.register("_orders", changed)
            try:
                con.execute("UPDATE paper_orders o SET filled_quantity = c.filled_quantity, avg_price = c.avg_price, "
                            "status = c.status, reason_code = c.reason_code, last_worked_at = c.last_worked_at, "
                            "n_fills = c.n_fills FROM _orders c WHERE o.client_order_id = c.client_order_id")
            finally:
                con.unregister("_orders")
        con.execute("UPDATE paper_account SET fill_seq = ?, cash = ?, settled_through = ?", [seq, cash, _to_db(now)])

    def _expire(self, order: dict) -> None:
        self._move(order, OrderStatus.EXPIRED)
        order["reason_code"] = RejectReason.EXPIRED_AT_CLOSE.value

    def _work(self, order: dict, quote: Quote | None, now: dt.datetime, params: _Params,
              book: dict[str, tuple[float, float | None]]) -> Fill | None:
        """Fill what this bar allows (``book``, symbol → (quantity, average cost), is moved by the fill);
        then cancel or carry the remainder. No valid quote: the order waits. Returns the fill (no seq yet)."""
        moc = order["order_type"] == OrderType.MOC
        if _quote_reason(quote, quote.close if moc and quote else quote.open if quote else None) is not None:
            return None
        side = Side(order["side"])
        held, avg = book.get(order["symbol"], (0.0, None))
        remaining = round_qty(order["quantity"] - order["filled_quantity"], params.qty_decimals)
        q = liquid_q = remaining if moc else min(remaining, params.cap(quote.volume))
        if order["reduce_only"]:  # never past flat, whatever filled since submission
            q = min(q, max(0.0, -side.sign * held))
        fill = None
        if q > 0:
            price = fill_price(quote, side, q, params.impact_y, OrderType(order["order_type"]))
            fill = Fill(fill_id_for(order["client_order_id"], order["n_fills"]), order["client_order_id"],
                        order["symbol"], side, q, price, params.fee_bps / 1e4 * q * price, now,
                        mid=quote.close if moc else quote.open)
            book[order["symbol"]] = average_cost(held, avg, side.sign * q, price, params.qty_decimals)
            filled = round_qty(order["filled_quantity"] + q, params.qty_decimals)
            order["avg_price"] = ((order["avg_price"] or 0.0) * order["filled_quantity"] + price * q) / filled
            order["filled_quantity"] = filled
            order["n_fills"] += 1
            self._move(order, OrderStatus.FILLED if filled >= order["quantity"] else OrderStatus.PARTIALLY_FILLED)
        if order["status"] != OrderStatus.FILLED and (not params.carry or q < liquid_q):
            # a reduce-only order clipped at flat can never complete: cancelled even when carrying
            self._move(order, OrderStatus.CANCELLED)
            order["reason_code"] = (RejectReason.REDUCE_ONLY_VIOLATION if q < liquid_q
                                    else RejectReason.INSUFFICIENT_LIQUIDITY).value
        return fill

    @staticmethod
    def _move(order: dict, new: OrderStatus) -> None:
        if new != order["status"]:
            order["status"] = check_transition(order["status"], new).value

    @staticmethod
    def _position(con: duckdb.DuckDBPyConnection, symbol: str) -> tuple[float, float | None]:
        row = con.execute("SELECT quantity, avg_cost FROM paper_positions WHERE symbol = ?", [symbol]).fetchone()
        return (float(row[0]), row[1]) if row else (0.0, None)

    def _book(self, con: duckdb.DuckDBPyConnection, fill: Fill, order: dict | None,
              decimals: int) -> Fill | None:
        """Insert the fill and move cash and position; a fill id already booked changes nothing."""
        if con.execute("SELECT 1 FROM paper_fills WHERE fill_id = ?", [fill.fill_id]).fetchone():
            return None
        if order is not None and round_qty(order["filled_quantity"] + fill.quantity, decimals) > order["quantity"]:
            raise Overfill(f"fill {fill.fill_id}: {fill.quantity} more on order {fill.client_order_id} "
                           f"({order['filled_quantity']} of {order['quantity']} filled)")
        side = Side(fill.side)
        seq = con.execute("UPDATE paper_account SET fill_seq = fill_seq + 1, cash = cash - ? "
                          "RETURNING fill_seq", [side.sign * fill.quantity * fill.price + fill.fee]).fetchone()[0]
        fill = replace(fill, side=side, seq=seq)
        con.execute(f"INSERT INTO paper_fills ({', '.join(_FILL_COLS)}) VALUES "
                    f"({', '.join('?' * len(_FILL_COLS))})",
                    [fill.fill_id, fill.client_order_id, fill.symbol, fill.side.value, fill.quantity,
                     fill.price, fill.fee, _to_db(fill.ts), seq, fill.mid])
        qty, avg = self._position(con, fill.symbol)
        new_qty, new_avg = average_cost(qty, avg, side.sign * fill.quantity, fill.price, decimals)
        con.execute("INSERT INTO paper_positions (symbol, quantity, last_price, avg_cost) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity, "
                    "last_price = excluded.last_price, avg_cost = excluded.avg_cost",
                    [fill.symbol, new_qty, fill.price, new_avg])
        return fill

    @_broker_errors
    def book_fill(self, fill: Fill) -> bool:
        """Book an externally known fill (restoring a book from recorded fills). Returns False when its
        ``fill_id`` is already booked; raises :class:`Overfill` if it would overfill its order. The
        order's own filled quantity is not changed here."""
        decimals = get_cfg("broker.qty_decimals")
        with self._conn() as con, self._tx(con):
            row = con.execute("SELECT quantity, (SELECT coalesce(sum(quantity), 0) FROM paper_fills f "
                              "WHERE f.client_order_id = o.client_order_id) FROM paper_orders o "
                              "WHERE client_order_id = ?", [fill.client_order_id]).fetchone()
            order = None if row is None else {"quantity": row[0], "filled_quantity": row[1],
                                              "client_order_id": fill.client_order_id}
            return self._book(con, fill, order, decimals) is not None

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
                     bool(o["reduce_only"]), _from_db(o["submitted_at"]),
                     OrderType(o["order_type"] or OrderType.MARKET))

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
        """Cash, equity, positions and their average entry prices. Marks: ``marks`` if given, else the
        quote mids at the clock's time when a quote provider and clock are set, else each position's last
        fill price."""
        with self._conn() as con:
            cash = float(con.execute("SELECT cash FROM paper_account").fetchone()[0])
            pos = con.execute("SELECT symbol, quantity, last_price, avg_cost FROM paper_positions "
                              "WHERE quantity <> 0 ORDER BY symbol").df()
        if marks is None and self.quotes is not None and self.clock is not None and len(pos):
            marks = {s: q.mid for s, q in self._quotes(list(pos["symbol"]), self.clock()).items()}
        px = pd.Series(marks or {}, dtype=float).reindex(pos["symbol"]).to_numpy()
        px = np.where(np.isfinite(px), px, pos["last_price"].to_numpy(dtype=float))
        equity = cash + float(np.dot(pos["quantity"].to_numpy(dtype=float), px))
        return Account(cash, equity, dict(zip(pos["symbol"], pos["quantity"].astype(float), strict=True)),
                       dict(zip(pos["symbol"], pos["avg_cost"].astype(float), strict=True)))

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
            before, _ = self._position(con, symbol)
            after = round_qty(before * split_ratio, _Params.load().qty_decimals)
            cash = before * cash_dividend
            if before != 0:
                con.execute("UPDATE paper_positions SET quantity = ?, last_price = last_price / ?, "
                            "avg_cost = avg_cost / ? WHERE symbol = ?", [after, split_ratio, split_ratio, symbol])
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
            self._new_account(con)


def average_cost(qty: float, avg: float | None, delta: float, price: float, decimals: int) -> tuple[float, float | None]:
    """Position and average entry price after a signed trade ``delta`` at ``price`` (average-cost method,
    as ``assets.pnl.logic``): adding moves the average; reducing keeps it; crossing zero opens the rest at
    ``price``; flat has none. The quantity is rounded to ``decimals``."""
    new = round_qty(qty + delta, decimals)
    if new == 0:
        return 0.0, None
    if qty == 0 or (qty > 0) == (delta > 0):
        return new, (abs(qty) * (avg or 0.0) + abs(delta) * price) / abs(new)
    return new, (price if (new > 0) != (qty > 0) else avg)

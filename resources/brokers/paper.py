"""The paper broker: a simulated venue, its rules written once over a pluggable book.

Where the book lives (``resources.brokers.paper_book``): by default in DuckDB tables of its own
(:class:`DuckDBBook`): the book (cash, positions, orders, fills) must survive the process (every Dagster run
is a new process) and be seen identically by the next one, while the DuckDB file lock would block every
other process that holds the file open. So each public call opens the file, runs one transaction per order
and closes it; :meth:`PaperBroker.batch` keeps one connection for a block of calls (one bar's orders) to pay
the ~10 ms open once. A lock held elsewhere is waited for up to ``broker.submit_timeout_seconds``, then
:class:`BrokerTimeout`. The replay trades one account bar after bar in one process: :meth:`PaperBroker.in_memory`
runs the same rules on a :class:`MemoryBook` loaded from the account file and saved back to it
(:meth:`PaperBroker.save`), the same rows a file book would have written.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.paper_book import SCHEMA_VERSION, DuckDBBook, MemoryBook, PaperBook, from_db, to_db
from resources.brokers.protocol import (
    OPEN_STATUSES,
    Account,
    BrokerError,
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

__all__ = ["SCHEMA_VERSION", "BarClock", "FrameQuotes", "PaperBroker", "Quote", "Settlement", "average_cost",
           "fill_id_for", "fill_price", "impact_bps"]

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
        self._quotes: dict[str, Quote] | None = None

    def __call__(self, symbols: Sequence[str], ts: dt.datetime) -> dict[str, Quote]:
        if self._quotes is None:  # built once: the venue asks again for every order of the bar
            self._quotes = {sym: Quote(*row) for sym, row in zip(self._frame.index, self._frame.to_numpy().tolist(),
                                                                 strict=True)}
        return {sym: q for sym in symbols if (q := self._quotes.get(sym)) is not None}


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
    ``book_fill``, ``apply_corporate_action``, ``reset``, ``batch`` and ``save``).

    ``book``: where the book lives (``resources.brokers.paper_book``); default the DuckDB file ``db_path``
    (default ``paths.paper_broker_db``), every call durable before it returns. :meth:`in_memory` gives the
    same venue on a :class:`MemoryBook` (the replay's stepping loop), durable only once :meth:`save` has run."""

    supported_order_types = SUPPORTED_ORDER_TYPES

    def __init__(self, db_path: str | Path | None = None, *, quotes: QuoteProvider | None = None,
                 clock: Callable[[], dt.datetime] | None = None, book: PaperBook | None = None) -> None:
        if book is None:
            book = DuckDBBook(db_path if db_path is not None else resolve_path("paths.paper_broker_db"))
        self.book = book
        self.db_path = book.path
        self.quotes = quotes
        self.clock = clock
        self._sessions: _Sessions | None = None

    @classmethod
    def in_memory(cls, db_path: str | Path | None = None, *, quotes: QuoteProvider | None = None,
                  clock: Callable[[], dt.datetime] | None = None) -> PaperBroker:
        """The venue on a :class:`MemoryBook`: loaded from the paper account file ``db_path`` (which stays
        locked until :meth:`close`; :meth:`save` writes the changes back), or a fresh account in memory only
        when ``db_path`` is None."""
        book = _broker_errors(MemoryBook.load)(db_path) if db_path is not None else MemoryBook()
        return cls(quotes=quotes, clock=clock, book=book)

    @property
    def sessions(self) -> _Sessions:
        if self._sessions is None:
            self._sessions = _Sessions()
        return self._sessions

    @contextmanager
    def batch(self) -> Iterator[PaperBroker]:
        """Hold the book open for a block of calls (one bar's orders); each submit stays its own
        transaction. Other processes are blocked only for the block's duration."""
        with _broker_errors(self.book.session)():
            yield self

    @_broker_errors
    def save(self) -> None:
        """Make the book durable (a file book already is; a memory book writes its changes to its file)."""
        self.book.save()

    def close(self) -> None:
        """Release what the book holds (a memory book's file, without saving)."""
        self.book.close()

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
        to_db(now)
        session_open = self.sessions.is_open(now)
        quotes = self._quotes([str(r.symbol) for r in requests], now)
        with self.book.session():
            return [self._submit_one(r, quotes.get(r.symbol), now, params, session_open) for r in requests]

    def _submit_one(self, req: OrderRequest, quote: Quote | None, now: dt.datetime, params: _Params,
                    session_open: bool) -> SubmitResult:
        book = self.book
        with book.transaction():
            if book.order(req.client_order_id) is not None:
                return SubmitResult(req.client_order_id, OrderStatus.REJECTED,
                                    RejectReason.DUPLICATE_CLIENT_ORDER_ID)
            order_seq = book.next_order_seq()
            reason = self._reject_reason(req, quote, params, book.position(req.symbol)[0], session_open)
            status = check_transition(OrderStatus.NEW,
                                      OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED)
            order = dict(client_order_id=req.client_order_id, broker_order_id=f"PB-{order_seq:010d}",
                         symbol=req.symbol, side=str(req.side), quantity=float(req.quantity)
                         if isinstance(req.quantity, numbers.Real) else math.nan,
                         filled_quantity=0.0, avg_price=None, status=status.value,
                         reason_code=reason.value if reason else None, bar_key=req.bar_key,
                         reduce_only=bool(req.reduce_only), submitted_at=to_db(now), last_worked_at=None,
                         n_fills=0, order_type=str(req.order_type))
            book.insert_order(order)
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

        The whole settlement is computed on copies (orders in broker order id order, positions updated
        fill by fill for reduce-only clipping and cost basis) and written in one transaction (a file book:
        a handful of bulk statements, whatever the number of fills)."""
        now = ts or self._now()
        params = _Params.load()
        sessions = self.sessions
        book = self.book
        with book.session():
            last, seq, cash = book.settle_state()
            if last is not None and to_db(now) <= last:
                return Settlement(now)
            orders = book.open_orders()
            out = Settlement(now)
            held: dict[str, tuple[float, float | None]] = {}
            if orders:
                session, closing = sessions.session(now), sessions.is_closing_bar(now)
                cutoff = sessions.due_cutoff(now, params.latency_bars)
                symbols = sorted({o["symbol"] for o in orders})
                quotes = self._quotes(symbols, now)
                held = book.positions_of(symbols)
                for order in orders:  # the account's working orders, in the order the venue took them
                    before = (order["status"], order["filled_quantity"])
                    decided = from_db(order["submitted_at"])
                    if sessions.session(decided) < session:          # its session closed unsettled
                        self._expire(order)
                    elif (order["order_type"] == OrderType.MARKET and cutoff is not None and decided <= cutoff) \
                            or (order["order_type"] == OrderType.MOC and closing):
                        fill = self._work(order, quotes.get(order["symbol"]), now, params, held)
                        if fill is not None:
                            seq += 1
                            cash -= fill.side.sign * fill.quantity * fill.price + fill.fee
                            out.fills.append(replace(fill, seq=seq))
                    if closing and OrderStatus(order["status"]) in OPEN_STATUSES:
                        self._expire(order)
                    if (order["status"], order["filled_quantity"]) != before:
                        order["last_worked_at"] = to_db(now)
                        out.orders.append(order)
            touched = sorted({f.symbol for f in out.fills})
            positions = [(s, held[s][0], next(f.price for f in reversed(out.fills) if f.symbol == s), held[s][1])
                         for s in touched]
            with book.transaction():
                book.write_settlement(out.fills, positions, out.orders, cash, seq, to_db(now))
            out.orders[:] = [self._to_order(o) for o in out.orders]
        return out

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

    @_broker_errors
    def book_fill(self, fill: Fill) -> bool:
        """Book an externally known fill (restoring a book from recorded fills). Returns False when its
        ``fill_id`` is already booked; raises :class:`Overfill` if it would overfill its order. The
        order's own filled quantity is not changed here."""
        decimals = get_cfg("broker.qty_decimals")
        book = self.book
        with book.session(), book.transaction():
            if book.has_fill(fill.fill_id):
                return False
            total = book.order_fill_total(fill.client_order_id)
            if total is not None and round_qty(total[1] + fill.quantity, decimals) > total[0]:
                raise Overfill(f"fill {fill.fill_id}: {fill.quantity} more on order {fill.client_order_id} "
                               f"({total[1]} of {total[0]} filled)")
            side = Side(fill.side)
            fill = book.append_fill(replace(fill, side=side), side.sign * fill.quantity * fill.price + fill.fee)
            qty, avg = book.position(fill.symbol)
            new_qty, new_avg = average_cost(qty, avg, side.sign * fill.quantity, fill.price, decimals)
            book.upsert_position(fill.symbol, new_qty, fill.price, new_avg)
            return True

    @_broker_errors
    def cancel(self, client_order_id: str) -> SubmitResult:
        book = self.book
        with book.session(), book.transaction():
            order = book.order(client_order_id)
            if order is None:
                return SubmitResult(client_order_id, OrderStatus.REJECTED, RejectReason.ORDER_NOT_FOUND)
            if OrderStatus(order["status"]) not in OPEN_STATUSES:
                return replace(self._to_order(order).as_result(), reason_code=RejectReason.ORDER_NOT_OPEN)
            self._move(order, OrderStatus.CANCELLED)
            order["reason_code"] = RejectReason.CANCELLED_BY_REQUEST.value
            book.set_order_status(client_order_id, order["status"], order["reason_code"])
            return self._to_order(order).as_result()

    # ---- queries -----------------------------------------------------------------------------------
    @staticmethod
    def _to_order(o: dict) -> Order:
        return Order(o["client_order_id"], o["broker_order_id"], o["symbol"], _side(o["side"]), o["quantity"],
                     o["filled_quantity"], o["avg_price"], OrderStatus(o["status"]),
                     RejectReason(o["reason_code"]) if o["reason_code"] else None, o["bar_key"],
                     bool(o["reduce_only"]), from_db(o["submitted_at"]),
                     OrderType(o["order_type"] or OrderType.MARKET))

    @_broker_errors
    def order_status(self, client_order_id: str) -> Order | None:
        with self.book.session():
            order = self.book.order(client_order_id)
        return None if order is None else self._to_order(order)

    @_broker_errors
    def open_orders(self) -> list[Order]:
        with self.book.session():
            rows = self.book.open_orders()
        return [self._to_order(o) for o in rows]

    @_broker_errors
    def positions(self) -> dict[str, float]:
        with self.book.session():
            rows = self.book.nonzero_positions()
        return {s: float(q) for s, q, _, _ in rows}

    @_broker_errors
    def account(self, marks: Mapping[str, float] | None = None) -> Account:
        """Cash, equity, positions and their average entry prices. Marks: ``marks`` if given, else the
        quote mids at the clock's time when a quote provider and clock are set, else each position's last
        fill price."""
        with self.book.session():
            cash = float(self.book.cash())
            rows = self.book.nonzero_positions()
        symbols = [r[0] for r in rows]
        qty = np.array([r[1] for r in rows], dtype=float)
        last = np.array([math.nan if r[2] is None else r[2] for r in rows], dtype=float)
        avg = np.array([math.nan if r[3] is None else r[3] for r in rows], dtype=float)
        if marks is None and self.quotes is not None and self.clock is not None and rows:
            marks = {s: q.mid for s, q in self._quotes(symbols, self.clock()).items()}
        px = pd.Series(marks or {}, dtype=float).reindex(symbols).to_numpy()
        px = np.where(np.isfinite(px), px, last)
        equity = cash + float(np.dot(qty, px))
        return Account(cash, equity, dict(zip(symbols, qty, strict=True)), dict(zip(symbols, avg, strict=True)))

    @_broker_errors
    def fills_since(self, since: dt.datetime | int | None = None) -> list[Fill]:
        with self.book.session():
            return self.book.fills_since(since)

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
        book = self.book
        with book.session(), book.transaction():
            done = book.corporate_action(symbol, effective_date)
            if done:
                return {"applied": False, "qty_before": done[0], "qty_after": done[1], "cash_change": done[2]}
            before, _ = book.position(symbol)
            after = round_qty(before * split_ratio, _Params.load().qty_decimals)
            cash = before * cash_dividend
            book.apply_corporate_action((symbol, effective_date, split_ratio, cash_dividend, before, after, cash),
                                        split_ratio)
        return {"applied": True, "qty_before": before, "qty_after": after, "cash_change": cash}

    @_broker_errors
    def reset(self) -> None:
        """A fresh account with ``broker.initial_cash`` (tests, replay). Deletes every order and fill."""
        with self.book.session(), self.book.transaction():
            self.book.reset(get_cfg("broker.initial_cash"))


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

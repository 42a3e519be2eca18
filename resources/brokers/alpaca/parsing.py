"""Pure parsing of Alpaca's JSON (orders, positions, account, FILL activities) into our domain objects.

No alpaca-py import: these functions take the JSON shapes of Alpaca's published Trading API v2 reference
("Orders", "Positions", "Account", "Account activities") as plain mappings, so they are tested without a
client or a network. Numbers arrive as strings; they are parsed with ``float`` and a missing or
unparseable required field is a :class:`BrokerError` naming the field, never a silent zero.

Order status (Alpaca "Order Lifecycle") → our lifecycle, every Alpaca status listed (a new one is an error
naming it, :class:`UnknownVenueStatus`):

============================================================  ===========================================
``pending_new``, ``pending_review``                           SUBMITTED (not yet working)
``new``, ``accepted``, ``accepted_for_bidding``, ``held``,    ACCEPTED (working at the venue)
``stopped``, ``suspended``, ``pending_cancel``,
``pending_replace``
``partially_filled``                                          PARTIALLY_FILLED
``filled``                                                    FILLED
``canceled``                                                  CANCELLED (CANCELLED_BY_REQUEST)
``replaced``                                                  CANCELLED (superseded by another order)
``expired``                                                   EXPIRED (EXPIRED_AT_CLOSE)
``done_for_day``, ``calculated``                              EXPIRED (EXPIRED_AT_CLOSE): done for the day
                                                              with a remainder; FILLED when nothing remains
``rejected``                                                  REJECTED (BROKER_REJECTED)
============================================================  ===========================================

A working status with shares already filled is PARTIALLY_FILLED (``pending_cancel`` of a half-filled order
is still working until the venue confirms the cancel). Our day orders never see ``done_for_day`` as a
pause: a day order that is done for the day will not trade again, so it is an expiry.

Order types: ``market`` with ``time_in_force: cls`` is MOC; ``market`` → MARKET; ``limit`` → LIMIT (a
``limit`` with ``cls`` is a limit-on-close, which the engine never sends: an error). Reduce-only orders are
sent with ``position_intent`` ``buy_to_close``/``sell_to_close`` and read back from it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from resources.brokers.protocol import (
    Account,
    BrokerError,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
)


class UnknownVenueStatus(BrokerError):
    """A status, side or order type the adapter has no mapping for; the message names it."""


_SUBMITTED = frozenset({"pending_new", "pending_review"})
_WORKING = frozenset({"new", "accepted", "accepted_for_bidding", "held", "stopped", "suspended",
                      "pending_cancel", "pending_replace"})
_DONE_FOR_DAY = frozenset({"done_for_day", "calculated"})
_TERMINAL: Mapping[str, tuple[OrderStatus, RejectReason | None]] = {
    "filled": (OrderStatus.FILLED, None),
    "canceled": (OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST),
    "replaced": (OrderStatus.CANCELLED, None),
    "expired": (OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE),
    "rejected": (OrderStatus.REJECTED, RejectReason.BROKER_REJECTED),
}
#: every Alpaca order status this module maps (a test checks it equals alpaca-py's ``OrderStatus`` enum)
KNOWN_STATUSES = frozenset(_SUBMITTED | _WORKING | _DONE_FOR_DAY | {"partially_filled"} | set(_TERMINAL))
CLOSE_INTENTS = frozenset({"buy_to_close", "sell_to_close"})


def map_status(status: str, filled_qty: float, qty: float) -> tuple[OrderStatus, RejectReason | None]:
    """Our status (and reason) for an Alpaca order status, given how much of the order has filled."""
    s = str(status)
    if s in _SUBMITTED:
        return (OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.SUBMITTED), None
    if s in _WORKING or s == "partially_filled":
        return (OrderStatus.PARTIALLY_FILLED if filled_qty > 0 else OrderStatus.ACCEPTED), None
    if s in _DONE_FOR_DAY:
        if qty > 0 and filled_qty >= qty:
            return OrderStatus.FILLED, None
        return OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE
    if s in _TERMINAL:
        return _TERMINAL[s]
    raise UnknownVenueStatus(f"Alpaca order status {s!r} is not mapped onto the order lifecycle "
                             f"(known: {', '.join(sorted(KNOWN_STATUSES))})")


def _num(d: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = d.get(key)
    if value is None or value == "":
        if default is None:
            raise BrokerError(f"Alpaca answer without {key!r}: {_ident(d)}")
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BrokerError(f"Alpaca answer with a non-numeric {key!r}={value!r}: {_ident(d)}") from None
    if not math.isfinite(out):
        raise BrokerError(f"Alpaca answer with a non-finite {key!r}={value!r}: {_ident(d)}")
    return out


def _ident(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={d[k]}" for k in ("client_order_id", "id", "symbol") if d.get(k))


def parse_time(value: Any) -> dt.datetime | None:
    """An Alpaca RFC 3339 time (``Z`` or an offset, up to nanoseconds) as an aware UTC datetime."""
    if value in (None, ""):
        return None
    text = str(value).replace("Z", "+00:00")
    head, sep, frac_tz = text.partition(".")
    if sep:  # Python parses at most microseconds: cut the fraction to 6 digits, keep the offset
        n = len(frac_tz) - len(frac_tz.lstrip("0123456789"))
        digits, tz = frac_tz[:n], frac_tz[n:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    out = dt.datetime.fromisoformat(text)
    if out.tzinfo is None:
        raise BrokerError(f"Alpaca time without a zone: {value!r}")
    return out.astimezone(dt.UTC)


def seq_of(ts: dt.datetime) -> int:
    """A fill's booking sequence: its venue time in microseconds since the epoch (ties: fill_id order)."""
    return int(round(ts.timestamp() * 1e6))


def _side(value: Any, d: Mapping[str, Any]) -> Side:
    try:
        return Side(str(value).upper())
    except ValueError:
        raise UnknownVenueStatus(f"Alpaca side {value!r} is not buy/sell: {_ident(d)}") from None


def order_type_of(d: Mapping[str, Any]) -> OrderType:
    kind = d.get("type") or d.get("order_type")
    tif = d.get("time_in_force")
    if kind == "market":
        return OrderType.MOC if tif == "cls" else OrderType.MARKET
    if kind == "limit" and tif != "cls":
        return OrderType.LIMIT
    raise UnknownVenueStatus(f"Alpaca order type {kind!r} with time_in_force {tif!r} is not one the engine "
                             f"manages ({_ident(d)}): cancel it, or trade it from another account")


def parse_order(d: Mapping[str, Any]) -> Order:
    """One Alpaca order object → :class:`Order` (``bar_key`` is unknown to the venue: empty)."""
    qty = _num(d, "qty")
    filled = _num(d, "filled_qty", 0.0)
    status, reason = map_status(d.get("status"), filled, qty)
    avg = _num(d, "filled_avg_price", 0.0) if filled > 0 else None
    limit = _num(d, "limit_price", 0.0) if d.get("limit_price") not in (None, "") else None
    return Order(client_order_id=str(d.get("client_order_id") or ""), broker_order_id=str(d.get("id") or "") or None,
                 symbol=str(d.get("symbol") or ""), side=_side(d.get("side"), d), quantity=qty,
                 filled_quantity=filled, avg_price=avg, status=status, reason_code=reason, bar_key="",
                 reduce_only=d.get("position_intent") in CLOSE_INTENTS, submitted_at=parse_time(d.get("submitted_at")),
                 order_type=order_type_of(d), limit_price=limit)


def parse_fill(activity: Mapping[str, Any], client_order_id: str) -> Fill:
    """One FILL account activity → :class:`Fill`. ``fill_id`` is the activity id (unique and stable at the
    venue); fee 0 (Alpaca charges no commission; regulatory fees are separate FEE activities, seen in cash);
    the venue reports no reference mid (NaN)."""
    if activity.get("activity_type") not in (None, "FILL"):
        raise BrokerError(f"not a FILL activity: {activity.get('activity_type')!r} ({activity.get('id')})")
    ts = parse_time(activity.get("transaction_time"))
    if ts is None or not activity.get("id"):
        raise BrokerError(f"Alpaca FILL activity without id or transaction_time: {activity!r}")
    return Fill(fill_id=str(activity["id"]), client_order_id=client_order_id, symbol=str(activity.get("symbol")),
                side=_side(activity.get("side"), activity), quantity=_num(activity, "qty"),
                price=_num(activity, "price"), fee=0.0, ts=ts, seq=seq_of(ts), mid=math.nan)


def signed_quantity(p: Mapping[str, Any]) -> float:
    """A position's signed quantity: Alpaca reports shorts with ``side: short`` (and a negative qty)."""
    q = abs(_num(p, "qty"))
    return -q if p.get("side") == "short" else q


def parse_positions(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Positions → (symbol → signed quantity, symbol → avg_entry_price), zero positions omitted, sorted."""
    qty, basis = {}, {}
    for p in sorted(rows, key=lambda r: str(r.get("symbol"))):
        q = signed_quantity(p)
        if q != 0:
            sym = str(p.get("symbol"))
            qty[sym] = q
            basis[sym] = _num(p, "avg_entry_price")
    return qty, basis


def parse_account(acct: Mapping[str, Any], positions: Iterable[Mapping[str, Any]]) -> Account:
    """The account object and the positions list → :class:`Account` (cash, equity, positions, cost basis)."""
    qty, basis = parse_positions(positions)
    return Account(cash=_num(acct, "cash"), equity=_num(acct, "equity"), positions=qty, cost_basis=basis)


def is_duplicate_client_order_id(status: int | None, message: str) -> bool:
    """Alpaca's answer to a reused ``client_order_id`` (HTTP 422, "client_order_id must be unique")."""
    text = message.lower()
    return status == 422 and "client_order_id" in text and ("unique" in text or "duplicate" in text)


def is_insufficient_buying_power(status: int | None, message: str) -> bool:
    """Alpaca's 403 "insufficient buying power" (code 40310000)."""
    return status == 403 and "buying power" in message.lower()

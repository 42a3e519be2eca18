"""The ``alpaca`` broker adapter: :class:`resources.brokers.protocol.Broker` on alpaca-py's ``TradingClient``.

Identity: every order is sent with our deterministic ``client_order_id``; Alpaca enforces its uniqueness per
account. A 422 "client_order_id must be unique" therefore means the venue already holds that order: it is
looked up and reported as REJECTED / DUPLICATE_CLIENT_ORDER_ID with the existing order's venue id, never
sent again. A submit that timed out, failed with a 5xx or ran out of rate-limit waits raises
:class:`BrokerError` and is settled by ``submit_with_lookup`` (look the id up, never resend blindly).

What the venue refuses is a REJECTED result, nothing placed: a 403 "insufficient buying power" →
INSUFFICIENT_BUYING_POWER; any other 4xx on submit → BROKER_REJECTED with Alpaca's message. What the engine
can tell before sending is refused locally with the paper broker's reasons (side, quantity, symbol, a limit
order without a price, a reduce-only order that would not shrink the venue's position).

Orders are day orders: MARKET (``market``/``day``), LIMIT (``limit``/``day``), MOC (``market``/``cls``:
Alpaca's closing auction; it refuses ``cls`` orders sent after 15:50 ET). Fills are the account's FILL
activities (``GET /v2/account/activities/FILL``, paged by ``page_token``); the activity names the venue's
order id, mapped to our ``client_order_id`` by one lookup per unknown order (cached). Positions, cash and
equity are the venue's; ``cost_basis`` is each position's ``avg_entry_price``.

Credentials are held only inside the client; ``repr`` shows the endpoint, and every error text is redacted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from CONFIG.config_loader import get_cfg
from resources.brokers.alpaca.parsing import (
    is_duplicate_client_order_id,
    is_insufficient_buying_power,
    parse_account,
    parse_fill,
    parse_order,
    parse_positions,
    signed_quantity,
)
from resources.brokers.alpaca.transport import RetryPolicy, VenueError, call, harden
from resources.brokers.protocol import (
    OPEN_STATUSES,
    Account,
    BrokerError,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    SubmitResult,
)
from resources.brokers.validation import local_reject_reason, reduces
from resources.credentials import AlpacaKeys

ORDERS_PAGE = 500       # Alpaca's maximum ``limit`` for GET /v2/orders
ACTIVITIES_PAGE = 100   # Alpaca's maximum ``page_size`` for account activities


class AlpacaBroker:
    """The Alpaca adapter (paper endpoint unless ``live``). ``sleep``/``clock`` reach the rate-limit
    waits (tests pass fakes); ``allow_fractional`` defaults to ``broker.allow_fractional``."""

    def __init__(self, keys: AlpacaKeys, *, live: bool = False, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, allow_fractional: bool | None = None) -> None:
        from alpaca.trading.client import TradingClient  # the [brokers] extra

        self.endpoint = "live" if live else "paper"
        self._secrets = keys.secrets
        self._client = harden(TradingClient(keys.key_id, keys.secret, paper=not live, raw_data=True),
                              RetryPolicy.from_config(get_cfg("broker.submit_timeout_seconds")), sleep, clock)
        self._fractional = get_cfg("broker.allow_fractional") if allow_fractional is None else allow_fractional
        self._client_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AlpacaBroker(endpoint={self.endpoint})"

    def _call(self, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        return call(fn, *args, secrets=self._secrets, what=what)

    # ---- orders ------------------------------------------------------------------------------------
    def submit(self, request: OrderRequest) -> SubmitResult:
        reason = local_reject_reason(request, self._fractional)
        if reason is None and request.reduce_only and not reduces(
                self._position(request.symbol), Side(request.side), float(request.quantity)):
            reason = RejectReason.REDUCE_ONLY_VIOLATION
        if reason is not None:
            return SubmitResult(request.client_order_id, OrderStatus.REJECTED, reason)
        try:
            raw = self._call(self._client.submit_order, self._order_data(request), what="submit")
        except VenueError as exc:
            return self._refused(request, exc)
        order = parse_order(raw)
        self._client_ids[order.broker_order_id or ""] = order.client_order_id
        return replace(order, bar_key=request.bar_key).as_result()

    def _order_data(self, req: OrderRequest) -> Any:
        from alpaca.trading.enums import OrderSide, PositionIntent, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

        side = OrderSide.BUY if Side(req.side) is Side.BUY else OrderSide.SELL
        common = dict(symbol=req.symbol, qty=float(req.quantity), side=side, client_order_id=req.client_order_id,
                      time_in_force=TimeInForce.CLS if req.order_type == OrderType.MOC else TimeInForce.DAY)
        if req.reduce_only:
            common["position_intent"] = (PositionIntent.BUY_TO_CLOSE if side is OrderSide.BUY
                                         else PositionIntent.SELL_TO_CLOSE)
        if req.order_type == OrderType.LIMIT:
            return LimitOrderRequest(limit_price=float(req.limit_price), **common)
        return MarketOrderRequest(**common)

    def _refused(self, req: OrderRequest, exc: VenueError) -> SubmitResult:
        """A venue error on submit: a duplicate is looked up; a rejection is REJECTED; else raise (unknown)."""
        if is_duplicate_client_order_id(exc.status, exc.message):
            existing = self.order_status(req.client_order_id)
            if existing is None:
                raise BrokerError(f"order {req.client_order_id}: Alpaca calls the id a duplicate but has no order "
                                  "under it; fate unknown, reconcile before trading it again") from None
            return SubmitResult(req.client_order_id, OrderStatus.REJECTED, RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                                existing.broker_order_id, error=f"already at the venue as {existing.status}")
        if is_insufficient_buying_power(exc.status, exc.message):
            return SubmitResult(req.client_order_id, OrderStatus.REJECTED, RejectReason.INSUFFICIENT_BUYING_POWER,
                                error=str(exc))
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            return SubmitResult(req.client_order_id, OrderStatus.REJECTED, RejectReason.BROKER_REJECTED,
                                error=str(exc))
        raise exc

    def cancel(self, client_order_id: str) -> SubmitResult:
        order = self.order_status(client_order_id)
        if order is None:
            return SubmitResult(client_order_id, OrderStatus.REJECTED, RejectReason.ORDER_NOT_FOUND)
        if order.status not in OPEN_STATUSES:
            return replace(order.as_result(), reason_code=RejectReason.ORDER_NOT_OPEN)
        try:
            self._call(self._client.cancel_order_by_id, order.broker_order_id, what="cancel")
        except VenueError as exc:
            if exc.status != 422:  # 422: no longer cancelable (filled meanwhile): report what it is now
                raise
        now = self.order_status(client_order_id) or order
        if now.status in OPEN_STATUSES:  # pending_cancel: the venue has the request, confirms later
            return replace(now.as_result(), reason_code=RejectReason.CANCELLED_BY_REQUEST)
        if now.status is OrderStatus.CANCELLED:
            return replace(now.as_result(), reason_code=RejectReason.CANCELLED_BY_REQUEST)
        return replace(now.as_result(), reason_code=RejectReason.ORDER_NOT_OPEN)

    # ---- queries -----------------------------------------------------------------------------------
    def order_status(self, client_order_id: str) -> Order | None:
        try:
            raw = self._call(self._client.get_order_by_client_id, client_order_id, what="order lookup")
        except VenueError as exc:
            if exc.status == 404:
                return None
            raise
        order = parse_order(raw)
        self._client_ids[order.broker_order_id or ""] = order.client_order_id
        return order

    def open_orders(self) -> list[Order]:
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        out: list[Order] = []
        after: dt.datetime | None = None
        while True:
            page = self._call(self._client.get_orders, GetOrdersRequest(
                status=QueryOrderStatus.OPEN, limit=ORDERS_PAGE, direction=Sort.ASC, after=after), what="open orders")
            orders = [parse_order(o) for o in page]
            out += [o for o in orders if o.client_order_id not in {x.client_order_id for x in out}]
            if len(page) < ORDERS_PAGE:
                break
            after = max(o.submitted_at for o in orders if o.submitted_at is not None)
        for o in out:
            self._client_ids[o.broker_order_id or ""] = o.client_order_id
        return sorted(out, key=lambda o: (o.submitted_at or dt.datetime.min.replace(tzinfo=dt.UTC),
                                          o.client_order_id))

    def _position(self, symbol: str) -> float:
        try:
            raw = self._call(self._client.get_open_position, symbol, what="position")
        except VenueError as exc:
            if exc.status == 404:
                return 0.0
            raise
        return signed_quantity(raw)

    def positions(self) -> dict[str, float]:
        return parse_positions(self._call(self._client.get_all_positions, what="positions"))[0]

    def account(self) -> Account:
        acct = self._call(self._client.get_account, what="account")
        return parse_account(acct, self._call(self._client.get_all_positions, what="positions"))

    def fills_since(self, since: dt.datetime | int | None = None) -> list[Fill]:
        """FILL activities in booking order: an ``int`` is a ``seq`` cursor (µs since the epoch), a datetime
        gives fills with ts >= since, ``None`` every fill of the account (paged; may be slow on an old one)."""
        params: dict[str, Any] = {"direction": "asc", "page_size": ACTIVITIES_PAGE}
        after = None
        if isinstance(since, dt.datetime):
            if since.tzinfo is None:
                raise BrokerError(f"naive timestamp {since!r}: the engine is UTC, pass tz-aware times")
            after = since
        elif since is not None:
            after = dt.datetime.fromtimestamp(int(since) / 1e6, dt.UTC)
        if after is not None:  # a margin of a second: Alpaca's `after` is exclusive and second-resolved
            params["after"] = (after - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        activities: list[dict] = []
        while True:
            page = self._call(self._client.get, "/account/activities/FILL", dict(params), what="fills")
            activities += list(page or [])
            if not page or len(page) < ACTIVITIES_PAGE:
                break
            params["page_token"] = page[-1]["id"]
        fills = [parse_fill(a, self._client_id_for(str(a.get("order_id")))) for a in activities]
        if isinstance(since, dt.datetime):
            fills = [f for f in fills if f.ts >= since]
        elif since is not None:
            fills = [f for f in fills if f.seq > int(since)]
        unique = {f.fill_id: f for f in fills}
        return sorted(unique.values(), key=lambda f: (f.seq, f.fill_id))

    def _client_id_for(self, order_id: str) -> str:
        if order_id not in self._client_ids:
            raw = self._call(self._client.get_order_by_id, order_id, what="order of a fill")
            self._client_ids[order_id] = str(raw.get("client_order_id") or order_id)
        return self._client_ids[order_id]


"""A stateful Alpaca venue behind ``responses``: alpaca-py's real clients talk HTTP to it, no network.

The JSON follows Alpaca's published Trading API v2 and Market Data v2 references (orders, positions,
account, account activities of type FILL, stock bars with ``next_page_token``). Orders rest as
``accepted`` until :meth:`AlpacaVenue.advance` fills them (a real venue does not fill at submit either);
faults are queued with :meth:`AlpacaVenue.fail_next`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import pandas as pd
import requests
import responses

TRADING = "https://paper-api.alpaca.markets"
LIVE = "https://api.alpaca.markets"
DATA = "https://data.alpaca.markets"
T0 = dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Fault:
    method: str
    path: str                     # regex on the path (e.g. r"/v2/orders$")
    status: int = 500
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    exception: type[Exception] | None = None
    apply: bool = False           # process the request (state changes) and then fail the answer


class AlpacaVenue:
    """One Alpaca account: orders, positions, cash, FILL activities, and a bars table for the data API."""

    def __init__(self, cash: float = 1_000_000.0, prices: dict[str, float] | None = None, base: str = TRADING,
                 bars_page: int = 10_000) -> None:
        self.base, self.cash, self.prices = base, cash, dict(prices or {})
        self.orders: dict[str, dict] = {}
        self.by_cid: dict[str, str] = {}
        self.positions: dict[str, dict] = {}
        self.activities: list[dict] = []
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, dict]] = []
        self.now = T0
        self.bars = pd.DataFrame(columns=["symbol", "t", "o", "h", "l", "c", "v"])
        self.daily = pd.DataFrame(columns=["symbol", "t", "o", "h", "l", "c", "v"])
        self.bars_page = bars_page
        self.auto_fill = False
        self._n = 0

    # ---- wiring ------------------------------------------------------------------------------------
    def install(self, rsps: responses.RequestsMock) -> AlpacaVenue:
        for method in ("GET", "POST", "DELETE", "PATCH"):
            rsps.add_callback(method, re.compile(re.escape(self.base) + r"/.*"), callback=self._dispatch)
        rsps.add_callback("GET", re.compile(re.escape(DATA) + r"/.*"), callback=self._dispatch)
        return self

    def fail_next(self, method: str, path: str, status: int = 500, body: dict | None = None,
                  headers: dict | None = None, exception: type[Exception] | None = None, apply: bool = False) -> None:
        self.faults.append(Fault(method, path, status, body, headers or {}, exception, apply))

    def calls(self, method: str, path: str) -> list[dict]:
        return [b for m, p, b in self.log if m == method and re.search(path, p)]

    def _tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now

    def _uuid(self) -> str:
        self._n += 1
        return str(uuid.UUID(int=self._n))

    def _dispatch(self, request: requests.PreparedRequest):
        url = urlparse(request.url)
        path = url.path
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(request.body) if request.body else {}
        self.log.append((request.method, path, body or query))
        fault = next((f for f in self.faults if f.method == request.method and re.search(f.path, path)), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.apply:
                self._route(request.method, path, query, body)
            if fault.exception is not None:
                raise fault.exception(f"simulated {fault.exception.__name__} on {request.method} {path}")
            return fault.status, {"Content-Type": "application/json", **fault.headers}, json.dumps(
                fault.body or {"code": 50010000, "message": "internal server error"})
        status, payload = self._route(request.method, path, query, body)
        text = "" if payload is None else json.dumps(payload)
        return status, {"Content-Type": "application/json", "X-RateLimit-Limit": "200",
                        "X-RateLimit-Remaining": "199"}, text

    def _route(self, method: str, path: str, q: dict, body: dict) -> tuple[int, object]:
        if path == "/v2/stocks/bars":
            return self._bars(q)
        if method == "POST" and path == "/v2/orders":
            return self._submit(body)
        if method == "GET" and path == "/v2/orders":
            return self._list_orders(q)
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            oid = self.by_cid.get(q.get("client_order_id", ""))
            return (200, self.orders[oid]) if oid else (404, {"code": 40410000, "message": "order not found"})
        if m := re.fullmatch(r"/v2/orders/([^/]+)", path):
            order = self.orders.get(m.group(1))
            if order is None:
                return 404, {"code": 40410000, "message": "order not found"}
            if method == "GET":
                return 200, order
            if method == "DELETE":
                if order["status"] not in ("new", "accepted", "partially_filled", "pending_new"):
                    return 422, {"code": 42210000, "message": "order is not cancelable"}
                self._set(order, "canceled", canceled_at=iso(self._tick()))
                return 204, None
        if method == "GET" and path == "/v2/positions":
            return 200, [self._position_json(s) for s in sorted(self.positions) if self.positions[s]["qty"]]
        if m := re.fullmatch(r"/v2/positions/([^/]+)", path):
            p = self.positions.get(m.group(1))
            if not p or not p["qty"]:
                return 404, {"code": 40410000, "message": "position does not exist"}
            return 200, self._position_json(m.group(1))
        if method == "GET" and path == "/v2/account":
            return 200, self._account_json()
        if method == "GET" and path == "/v2/account/activities/FILL":
            return self._activities(q)
        return 404, {"code": 40410000, "message": f"no route {method} {path}"}

    # ---- trading -----------------------------------------------------------------------------------
    def _submit(self, body: dict) -> tuple[int, object]:
        cid = body.get("client_order_id") or self._uuid()
        if cid in self.by_cid:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        sym, qty = body["symbol"], float(body["qty"])
        if sym not in self.prices:
            return 422, {"code": 40010001, "message": f"asset \"{sym}\" not found"}
        if body["side"] == "buy" and qty * self.prices[sym] > self.cash:
            return 403, {"code": 40310000, "message": "insufficient buying power"}
        now = self._tick()
        oid = self._uuid()
        order = {"id": oid, "client_order_id": cid, "created_at": iso(now), "updated_at": iso(now),
                 "submitted_at": iso(now), "filled_at": None, "expired_at": None, "canceled_at": None,
                 "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
                 "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, sym)), "symbol": sym, "asset_class": "us_equity",
                 "notional": None, "qty": body["qty"] if isinstance(body["qty"], str) else repr(qty),
                 "filled_qty": "0", "filled_avg_price": None, "order_class": "", "order_type": body["type"],
                 "type": body["type"], "side": body["side"], "time_in_force": body["time_in_force"],
                 "limit_price": None if body.get("limit_price") is None else str(body["limit_price"]),
                 "stop_price": None, "status": "accepted", "extended_hours": False, "legs": None,
                 "trail_percent": None, "trail_price": None, "hwm": None,
                 "position_intent": body.get("position_intent")}
        self.orders[oid] = order
        self.by_cid[cid] = oid
        answer = dict(order)  # the POST answers "accepted"; a fast venue has filled it by the next read
        if self.auto_fill:
            self.advance(only={oid})
        return 200, answer

    def _list_orders(self, q: dict) -> tuple[int, object]:
        open_ = ("new", "accepted", "partially_filled", "pending_new", "pending_cancel", "held")
        rows = [o for o in self.orders.values() if q.get("status", "open") != "open" or o["status"] in open_]
        if q.get("after"):
            after = pd.Timestamp(q["after"])
            rows = [o for o in rows if pd.Timestamp(o["submitted_at"]) > after]
        rows.sort(key=lambda o: o["submitted_at"], reverse=q.get("direction", "desc") == "desc")
        return 200, rows[: int(q.get("limit", 50))]

    def _set(self, order: dict, status: str, **fields) -> None:
        order.update(status=status, updated_at=iso(self.now), **fields)

    def set_status(self, client_order_id: str, status: str) -> None:
        """Put an order into any Alpaca status (tests of the lifecycle mapping)."""
        self._set(self.orders[self.by_cid[client_order_id]], status)

    def advance(self, ratio: float = 1.0, price: Callable[[str], float] | None = None,
                only: set[str] | None = None) -> list[dict]:
        """The venue trades: every working order fills ``ratio`` of its remainder (whole shares) at the
        symbol's price (a limit order only at its limit or better). Returns the new FILL activities."""
        new = []
        for order in list(self.orders.values()):
            if order["status"] not in ("accepted", "new", "partially_filled") or (only and order["id"] not in only):
                continue
            sym, side = order["symbol"], order["side"]
            px = price(sym) if price else self.prices[sym]
            lim = order["limit_price"]
            if lim is not None and ((side == "buy" and px > float(lim)) or (side == "sell" and px < float(lim))):
                continue
            qty, filled = float(order["qty"]), float(order["filled_qty"])
            q = math.floor((qty - filled) * ratio) if ratio < 1 else qty - filled
            if q <= 0:
                continue
            now = self._tick()
            cum = filled + q
            avg = ((float(order["filled_avg_price"] or 0) * filled) + px * q) / cum
            status = "filled" if cum >= qty else "partially_filled"
            self._set(order, status, filled_qty=repr(cum), filled_avg_price=repr(avg),
                      filled_at=iso(now) if status == "filled" else None)
            sign = 1 if side == "buy" else -1
            pos = self.positions.setdefault(sym, {"qty": 0.0, "avg": 0.0})
            new_qty = pos["qty"] + sign * q
            if pos["qty"] == 0 or (pos["qty"] > 0) == (sign > 0):
                pos["avg"] = (abs(pos["qty"]) * pos["avg"] + q * px) / abs(new_qty)
            elif new_qty * pos["qty"] < 0:
                pos["avg"] = px
            pos["qty"] = new_qty
            self.cash -= sign * q * px
            act = {"id": f"{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}::{self._uuid()}",
                   "activity_type": "FILL", "transaction_time": iso(now),
                   "type": "fill" if status == "filled" else "partial_fill", "price": repr(px), "qty": repr(float(q)),
                   "side": side, "symbol": sym, "leaves_qty": repr(qty - cum), "order_id": order["id"],
                   "cum_qty": repr(cum), "order_status": status}
            self.activities.append(act)
            new.append(act)
        return new

    def _position_json(self, sym: str) -> dict:
        p = self.positions[sym]
        px = self.prices[sym]
        return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, sym)), "symbol": sym, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": repr(p["avg"]),
                "qty": repr(p["qty"]), "qty_available": repr(p["qty"]), "side": "long" if p["qty"] > 0 else "short",
                "market_value": repr(p["qty"] * px), "cost_basis": repr(p["qty"] * p["avg"]),
                "unrealized_pl": repr(p["qty"] * (px - p["avg"])), "unrealized_plpc": "0",
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": repr(px),
                "lastday_price": repr(px), "change_today": "0"}

    def _account_json(self) -> dict:
        mv = sum(p["qty"] * self.prices[s] for s, p in self.positions.items())
        long_mv = sum(p["qty"] * self.prices[s] for s, p in self.positions.items() if p["qty"] > 0)
        return {"id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3U1EFEWVQP",
                "status": "ACTIVE", "currency": "USD", "cash": repr(self.cash), "portfolio_value": repr(self.cash + mv),
                "equity": repr(self.cash + mv), "last_equity": repr(self.cash + mv), "buying_power": repr(self.cash),
                "regt_buying_power": repr(self.cash), "non_marginable_buying_power": repr(self.cash),
                "long_market_value": repr(long_mv), "short_market_value": repr(mv - long_mv),
                "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
                "daytrade_count": 0, "multiplier": "1", "shorting_enabled": True, "trading_blocked": False,
                "transfers_blocked": False, "account_blocked": False, "trade_suspended_by_user": False,
                "created_at": "2024-01-02T15:00:00Z", "accrued_fees": "0", "pending_transfer_in": "0",
                "pending_transfer_out": "0", "crypto_status": "INACTIVE"}

    def _activities(self, q: dict) -> tuple[int, object]:
        rows = list(self.activities)
        if q.get("after"):
            after = pd.Timestamp(q["after"])
            rows = [a for a in rows if pd.Timestamp(a["transaction_time"]) > after]
        if q.get("direction", "desc") == "desc":
            rows.reverse()
        if q.get("page_token"):
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(q["page_token"]) + 1:] if q["page_token"] in ids else []
        return 200, rows[: int(q.get("page_size", 100))]

    # ---- market data -------------------------------------------------------------------------------
    def _bars(self, q: dict) -> tuple[int, object]:
        table = self.daily if q.get("timeframe") == "1Day" else self.bars
        symbols = q["symbols"].split(",")
        start, end = pd.Timestamp(q["start"]), pd.Timestamp(q["end"])
        rows = table[table["symbol"].isin(symbols) & (table["t"] >= start) & (table["t"] <= end)]
        rows = rows.sort_values(["symbol", "t"], kind="mergesort")
        offset = int(q.get("page_token") or 0)
        page = min(self.bars_page, int(q.get("limit") or self.bars_page))
        chunk = rows.iloc[offset: offset + page]
        out: dict[str, list] = {}
        for r in chunk.itertuples(index=False):
            out.setdefault(r.symbol, []).append({"t": iso(r.t.to_pydatetime()).replace(".000000", ""), "o": r.o,
                                                 "h": r.h, "l": r.l, "c": r.c, "v": r.v, "n": 10, "vw": r.c})
        token = str(offset + page) if offset + page < len(rows) else None
        return 200, {"bars": out, "next_page_token": token}

"""A fake of ib_async's wire-level ``Client`` and the IB gateway behind it, for tests without TWS.

The adapter under test uses a real ``ib_async.IB``; only ``ib.client`` (the object that would encode
requests onto the socket and decode TWS's answers) is replaced. :class:`FakeClient` answers each request
by calling the real ``Wrapper`` callbacks TWS's messages would trigger (``openOrder``, ``orderStatus``,
``execDetails``, ``commissionReport``, ``position``, ``updateAccountValue``, ``error``, the ``…End``
markers), so ib_async's own bookkeeping (trades, fills, events) runs as it does live. :class:`FakeGateway`
is the venue: it acknowledges orders, fills them (wholly or partly) when the test calls :meth:`advance`,
rejects with IB's error 201, drops connections and refuses reconnects on demand.
"""

from __future__ import annotations

import copy
import datetime as dt
import math

from eventkit import Event
from ib_async import IB, CommissionReport, Contract, ContractDetails, Execution, Order, OrderState, util
from ib_async.objects import ConnectionStats

T0 = dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC)


class FakeGateway:
    """One IB login: its account, the contracts it knows, orders, executions, positions and cash."""

    def __init__(self, prices: dict[str, float], account: str = "DU1234567", cash: float = 1_000_000.0) -> None:
        self.account, self.prices, self.cash = account, dict(prices), cash
        self.orders: dict[int, dict] = {}       # permId → {contract, order, status, filled, avg, client}
        self.executions: list[tuple[Contract, Execution, CommissionReport]] = []
        self.positions: dict[str, list[float]] = {}  # symbol → [qty, avg cost]
        self.clients: list[FakeClient] = []
        self.refuse_connects = 0
        self.connect_attempts = 0
        self.ack = True
        self.reject_next: str | None = None
        self.drop_on_place: str | None = None   # "before" | "after" the venue records the order
        self.now = T0
        self._perm = 1000
        self._exec = 0
        self.fee_per_share = 0.005

    def con_id(self, symbol: str) -> int:
        return 100_000 + sorted(self.prices).index(symbol)

    def contract(self, symbol: str) -> Contract:
        return Contract(secType="STK", conId=self.con_id(symbol), symbol=symbol, exchange="SMART",
                        primaryExchange="NASDAQ", currency="USD", localSymbol=symbol, tradingClass="NMS")

    def _tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now

    def drop(self) -> None:
        """The link to TWS breaks: every connected client sees the socket close."""
        for client in list(self.clients):
            client.lose_connection()

    def _status(self, rec: dict) -> None:
        o = rec["order"]
        for c in self.connected(rec["client"]):
            c.wrapper.orderStatus(o.orderId, rec["status"], rec["filled"], o.totalQuantity - rec["filled"],
                                  rec["avg"], o.permId, 0, rec["avg"], o.clientId, "", 0.0)
            c.wrapper.tcpDataProcessed()

    def connected(self, client_id: int | None = None) -> list[FakeClient]:
        return [c for c in self.clients if c.ready and (client_id is None or c.clientId == client_id)]

    def place(self, client: FakeClient, order_id: int, contract: Contract, order: Order) -> None:
        """Record the order; TWS's answers arrive later, when ib_async next reads the socket (the event
        loop runs), as they would from a real gateway."""
        lost, self.drop_on_place = self.drop_on_place, None
        if lost == "before":  # the link died before the order left: the venue never saw it
            self.drop()
            raise ConnectionError("Socket disconnect")
        self._perm += 1
        o = copy.copy(order)
        o.orderId, o.clientId, o.permId = order_id, client.clientId, self._perm
        rec = {"contract": self.contract(contract.symbol), "order": o, "status": "PreSubmitted", "filled": 0.0,
               "avg": 0.0, "client": client.clientId}
        self.orders[o.permId] = rec
        if lost == "after":  # the venue has it, but the link died before any answer
            rec["status"] = "PreSubmitted" if o.orderType == "MOC" else "Submitted"
            self.drop()
            raise ConnectionError("Socket disconnect")
        if self.reject_next is not None:
            message, self.reject_next = self.reject_next, None
            rec["status"] = "Cancelled"
            later(client, lambda: client.wrapper.error(order_id, 201, f"Order rejected - reason:{message}", ""))
            return
        if not self.ack:
            return
        rec["status"] = "PreSubmitted" if o.orderType == "MOC" else "Submitted"
        later(client, lambda: (client.wrapper.openOrder(order_id, rec["contract"], copy.copy(o),
                                                        OrderState(status=rec["status"])), self._status(rec)))

    def cancel(self, order_id: int, client_id: int) -> None:
        rec = next((r for r in self.orders.values() if r["order"].orderId == order_id and r["client"] == client_id),
                   None)
        if rec is None or rec["status"] in ("Filled", "Cancelled", "Inactive"):
            for c in self.connected(client_id):
                c.wrapper.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.", "")
            return
        rec["status"] = "Cancelled"
        for c in self.connected(client_id):
            later(c, lambda: self._status(rec))

    def advance(self, ratio: float = 1.0) -> None:
        """The venue trades: every working order fills ``ratio`` of its remainder (whole shares)."""
        for rec in self.orders.values():
            if rec["status"] not in ("Submitted", "PreSubmitted"):
                continue
            o = rec["order"]
            left = o.totalQuantity - rec["filled"]
            q = math.floor(left * ratio) if ratio < 1 else left
            if q <= 0:
                continue
            sym = rec["contract"].symbol
            px = self.prices[sym]
            now = self._tick()
            self._exec += 1
            side = "BOT" if o.action == "BUY" else "SLD"
            rec["avg"] = (rec["avg"] * rec["filled"] + px * q) / (rec["filled"] + q)
            rec["filled"] += q
            rec["status"] = "Filled" if rec["filled"] >= o.totalQuantity else "Submitted"
            ex = Execution(execId=f"0000e0d5.6543a3b1.01.{self._exec:02d}", time=now, acctNumber=self.account,
                           exchange="NASDAQ", side=side, shares=q, price=px, permId=o.permId, clientId=o.clientId,
                           orderId=o.orderId, cumQty=rec["filled"], avgPrice=rec["avg"], orderRef=o.orderRef)
            cr = CommissionReport(execId=ex.execId, commission=round(q * self.fee_per_share, 6), currency="USD")
            self.executions.append((rec["contract"], ex, cr))
            sign = 1 if side == "BOT" else -1
            pos = self.positions.setdefault(sym, [0.0, 0.0])
            new = pos[0] + sign * q
            pos[1] = px if pos[0] == 0 or new * pos[0] < 0 else (
                (abs(pos[0]) * pos[1] + q * px) / abs(new) if (pos[0] > 0) == (sign > 0) else pos[1])
            pos[0] = new
            self.cash -= sign * q * px + cr.commission
            for c in self.connected():
                c.wrapper.execDetails(-1, rec["contract"], copy.copy(ex))
                c.wrapper.commissionReport(copy.copy(cr))
                c.wrapper.position(self.account, rec["contract"], pos[0], pos[1])
                c.push_account()
            self._status(rec)

    def account_values(self) -> list[tuple[str, str, str]]:
        mv = sum(q * self.prices[s] for s, (q, _) in self.positions.items())
        out = []
        for cur in ("USD", "BASE"):
            out += [("TotalCashValue", repr(self.cash), cur), ("NetLiquidation", repr(self.cash + mv), cur)]
        return out


def later(client: FakeClient, fn) -> None:
    """Deliver ``fn`` (TWS messages) when the event loop next runs, if the client is still connected."""
    def deliver() -> None:
        if client.ready:
            fn()
            client.wrapper.tcpDataProcessed()
    util.getLoop().call_soon(deliver)


class FakeClient:
    """Stands in for ``ib_async.client.Client``: the requests ib_async's ``IB`` makes, answered at once."""

    def __init__(self, wrapper, gateway: FakeGateway) -> None:
        self.wrapper, self.gateway = wrapper, gateway
        self.apiStart, self.apiEnd, self.apiError = Event("apiStart"), Event("apiEnd"), Event("apiError")
        self.throttleStart, self.throttleEnd = Event("throttleStart"), Event("throttleEnd")
        self.host, self.port, self.clientId = "", 0, -1
        self.ready = False
        self._req = 1

    # connection
    async def connectAsync(self, host, port, clientId, timeout=2.0):
        self.gateway.connect_attempts += 1
        if self.gateway.refuse_connects > 0:
            self.gateway.refuse_connects -= 1
            raise ConnectionRefusedError(f"connection to {host}:{port} refused")
        self.host, self.port, self.clientId = host, int(port), int(clientId)
        self.ready = True
        self.gateway.clients.append(self)
        self.wrapper.managedAccounts(self.gateway.account)

    def isReady(self) -> bool:
        return self.ready

    isConnected = isReady

    def getAccounts(self) -> list[str]:
        return [self.gateway.account]

    def serverVersion(self) -> int:
        return 176

    def getReqId(self) -> int:
        self._req += 1
        return self._req

    def updateReqId(self, minReqId: int) -> None:
        self._req = max(self._req, minReqId)

    def connectionStats(self) -> ConnectionStats:
        return ConnectionStats(0, 0, 0, 0, 0, 0)

    def disconnect(self) -> None:
        self.ready = False
        if self in self.gateway.clients:
            self.gateway.clients.remove(self)

    def lose_connection(self) -> None:
        """The socket closed under us (what ``Client.connectionLost`` does)."""
        was = self.ready
        self.disconnect()
        self.wrapper.setEventsDone()
        if was:
            self.wrapper.connectionClosed()
            self.apiEnd.emit()

    def _need(self) -> None:
        if not self.ready:
            raise ConnectionError("Not connected")

    # requests
    def reqAutoOpenOrders(self, bAutoBind) -> None:
        pass

    def reqPositions(self) -> None:
        for sym, (q, avg) in sorted(self.gateway.positions.items()):
            self.wrapper.position(self.gateway.account, self.gateway.contract(sym), q, avg)
        self.wrapper.positionEnd()

    def reqOpenOrders(self) -> None:
        for rec in self.gateway.orders.values():
            if rec["client"] == self.clientId and rec["status"] in ("PreSubmitted", "Submitted"):
                o = copy.copy(rec["order"])
                self.wrapper.openOrder(o.orderId, rec["contract"], o, OrderState(status=rec["status"]))
                self.wrapper.orderStatus(o.orderId, rec["status"], rec["filled"], o.totalQuantity - rec["filled"],
                                         rec["avg"], o.permId, 0, rec["avg"], o.clientId, "", 0.0)
        self.wrapper.openOrderEnd()

    reqAllOpenOrders = reqOpenOrders

    def reqCompletedOrders(self, apiOnly: bool) -> None:
        for rec in self.gateway.orders.values():
            if rec["status"] in ("Filled", "Cancelled", "Inactive"):
                o = copy.copy(rec["order"])
                o.filledQuantity = rec["filled"]
                self.wrapper.completedOrder(rec["contract"], o, OrderState(status=rec["status"]))
        self.wrapper.completedOrdersEnd()

    def reqAccountUpdates(self, subscribe: bool, acctCode: str) -> None:
        self.push_account()
        self.wrapper.accountDownloadEnd(acctCode)

    def push_account(self) -> None:
        for tag, val, cur in self.gateway.account_values():
            self.wrapper.updateAccountValue(tag, val, cur, self.gateway.account)

    def reqAccountUpdatesMulti(self, reqId, account, modelCode, ledgerAndNLV) -> None:
        self.wrapper.accountUpdateMultiEnd(reqId)

    def reqExecutions(self, reqId: int, execFilter) -> None:
        self._need()
        for contract, ex, cr in self.gateway.executions:
            self.wrapper.execDetails(reqId, contract, copy.copy(ex))
            self.wrapper.commissionReport(copy.copy(cr))
        self.wrapper.execDetailsEnd(reqId)

    def reqContractDetails(self, reqId: int, contract: Contract) -> None:
        self._need()
        if contract.symbol in self.gateway.prices:
            self.wrapper.contractDetails(reqId, ContractDetails(contract=self.gateway.contract(contract.symbol)))
        self.wrapper.contractDetailsEnd(reqId)

    def placeOrder(self, orderId: int, contract: Contract, order: Order) -> None:
        self._need()
        self.gateway.place(self, orderId, contract, order)

    def cancelOrder(self, orderId: int, manualCancelOrderTime: str = "") -> None:
        self._need()
        self.gateway.cancel(orderId, self.clientId)


def fake_ib(gateway: FakeGateway) -> IB:
    """A real ``IB`` whose wire client is a :class:`FakeClient` on ``gateway``."""
    ib = IB()
    client = FakeClient(ib.wrapper, gateway)
    client.apiEnd += ib.disconnectedEvent
    ib.client = client
    return ib

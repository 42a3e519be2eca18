"""The ``executions`` stage: the kill switch's verdict on each order, the broker's answer and its fills.

Who may reach a broker (SPEC §7): ``audit`` never (nothing is sent, every order is recorded NOT_SENT);
``replay`` only the replay paper account on the simulated clock; ``live`` only for the live bar — a
rematerialized past bar is refused before the kill switch is even asked, and records what the broker says
of its orders (a read-only lookup by client id: an order a killed run had sent shows as the broker holds
it, the rest NOT_SENT). A rerun of a bar never submits an order twice: an order whose client id the broker
already knows is looked up, not resubmitted.

Per order the record holds the kill switch's verdict, the broker's status, the order type and the
**decision price** (the price sizing used: the bar's close), so slippage is measured against the decision.
A MARKET order's fills arrive at a later bar's ``positions`` (the paper venue fills at the next bar's open);
fills a broker reports at once for these orders go to ``executions_fills`` (source ``executed``).
Tables (append-only in lineage: a rerun adds rows, stamped with its run id, and never replaces any):
``executions`` (per order), ``executions_fills`` (per fill), ``executions_killswitch`` (events),
``executions_refusals`` (runs of the bar that reached no broker, and why).
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pandas as pd

from assets.positions.logic import fills_frame, slippage_bps
from assets.positions.stage import empty_taken
from assets.take import as_text, as_text_at
from resources.brokers.protocol import Broker, BrokerError, OrderRequest, OrderType, Side, SubmitResult
from resources.brokers.submit import submit_with_lookup
from resources.kill_switch.logic import KillSwitch, KillSwitchEvent

EXEC_COLUMNS = ["client_order_id", "symbol", "side", "quantity", "order_type", "decision_price", "verdict",
                "verdict_reason", "status", "reason_code", "filled_quantity", "avg_price", "error"]
EVENT_COLUMNS = ["ts", "check", "value", "limit", "verdict", "reason", "transition", "subject"]
REFUSAL_COLUMNS = ["ts", "mode", "run_id", "orders", "reason"]
FILL_OUT_COLUMNS = [*empty_taken().columns]


def _empty_execs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("quantity", "decision_price", "filled_quantity",
                                                           "avg_price") else object) for c in EXEC_COLUMNS})


def fresh_share(snapshot: pd.DataFrame) -> float:
    """Share of the universe whose row of this bar arrived (``ok`` or skipped by a rule: the feed delivered it);
    ``missing`` symbols are what a stalled feed leaves. An empty universe is 0 (fails closed)."""
    if not len(snapshot):
        return 0.0
    return float((snapshot["status"].astype(str) != "missing").mean())


def _order_frame(orders: pd.DataFrame, bar: str) -> pd.DataFrame:
    reduce_only = orders["reduce_only"] if "reduce_only" in orders else orders["gate"] == "exit"
    order_type = orders["order_type"] if "order_type" in orders else pd.Series(OrderType.MARKET.value, orders.index)
    return pd.DataFrame({"client_order_id": orders["client_order_id"].to_numpy(), "symbol": orders["symbol"].to_numpy(),
                         "side": orders["side"].to_numpy(), "quantity": np.abs(orders["shares"].to_numpy(dtype=float)),
                         "bar_key": bar, "reduce_only": reduce_only.to_numpy(bool),
                         "order_type": order_type.replace("", OrderType.MARKET.value).to_numpy(),
                         "decision_price": orders["price"].to_numpy(dtype=float)})


def _orders_of(sized: pd.DataFrame, bar: str) -> pd.DataFrame:
    """``_order_frame`` of the sized rows that are orders (``has_order``), taken with one mask."""
    has = sized["has_order"].to_numpy()
    if has.dtype != bool or not has.any():   # no order: the empty frame as _order_frame types it
        return _order_frame(sized[sized["has_order"]].reset_index(drop=True), bar)

    def col(name: str, dtype=None) -> np.ndarray:
        return sized[name].to_numpy(dtype=dtype)[has]

    reduce_only = col("reduce_only", bool) if "reduce_only" in sized.columns else col("gate") == "exit"
    order_type = col("order_type") if "order_type" in sized.columns else np.full(int(has.sum()),
                                                                                 OrderType.MARKET.value, dtype=object)
    return pd.DataFrame({"client_order_id": as_text_at(sized["client_order_id"], has),
                         "symbol": as_text_at(sized["symbol"], has), "side": as_text_at(sized["side"], has),
                         "quantity": np.abs(col("shares", float)), "bar_key": bar, "reduce_only": reduce_only,
                         "order_type": np.where(order_type == "", OrderType.MARKET.value, order_type).astype(object),
                         "decision_price": col("price", float)})


def _record(frame: pd.DataFrame, verdict: np.ndarray, verdict_reason: np.ndarray,
            results: dict[str, SubmitResult], account: str) -> pd.DataFrame:
    """One row per order of ``frame`` (:data:`EXEC_COLUMNS` + ``account``), built in one construction."""
    if not len(frame):
        return _record_reference(frame, verdict, verdict_reason, results, account)
    ids = frame["client_order_id"].tolist()
    got = [results.get(c) for c in ids]
    answer = {col: [_attr(r, col) for r in got] for col in ("status", "reason_code", "filled_quantity", "avg_price",
                                                            "error")}
    answer["status"] = [s if s != "" else "NOT_SENT" for s in answer["status"]]
    return pd.DataFrame({"client_order_id": as_text(frame["client_order_id"]), "symbol": as_text(frame["symbol"]),
                         "side": as_text(frame["side"]), "quantity": frame["quantity"].to_numpy(),
                         "order_type": as_text(frame["order_type"]),
                         "decision_price": frame["decision_price"].to_numpy(), "verdict": verdict,
                         "verdict_reason": verdict_reason, **answer, "account": account})


def _record_reference(frame: pd.DataFrame, verdict: np.ndarray, verdict_reason: np.ndarray,
                      results: dict[str, SubmitResult], account: str) -> pd.DataFrame:
    """:func:`_record` column by column (the empty case, and the reference its tests compare against)."""
    execs = frame[["client_order_id", "symbol", "side", "quantity", "order_type", "decision_price"]].assign(
        verdict=verdict, verdict_reason=verdict_reason)
    for col in ("status", "reason_code", "filled_quantity", "avg_price", "error"):
        execs[col] = [_attr(results.get(c), col) for c in execs["client_order_id"]]
    execs["status"] = execs["status"].replace("", "NOT_SENT")
    return execs.reindex(columns=EXEC_COLUMNS).assign(account=account).reset_index(drop=True)


def not_sent(orders: pd.DataFrame, reason: str, account: str, bar: str = "") -> dict[str, pd.DataFrame]:
    """Every order NOT_SENT with ``reason`` (an audit: no broker call is possible)."""
    frame = _order_frame(orders, bar)
    execs = _record(frame, np.full(len(frame), "NOT_SENT", dtype=object), np.full(len(frame), reason, dtype=object),
                    {}, account) if len(frame) else _empty_execs().assign(account=pd.Series(dtype=object))
    return {"executions": execs, "executions_fills": empty_taken().assign(account=pd.Series(dtype=object)),
            "executions_killswitch": _events(pd.DataFrame(columns=EVENT_COLUMNS)).assign(account=account)}


def looked_up(orders: pd.DataFrame, reason: str, broker: Broker, account: str, bar: str) -> dict[str, pd.DataFrame]:
    """A refused live run: nothing is sent; each order is looked up at the broker by client id (read only)
    and recorded as the broker holds it (an order sent by an earlier, killed run of the bar), or NOT_SENT.
    Fills are not taken in here: the live bar's ``positions`` step takes in every fill lineage lacks."""
    out = not_sent(orders, reason, account, bar)
    execs = out["executions"]
    results, failed = {}, {}
    for cid in execs["client_order_id"]:  # one bar's orders, read only
        try:
            found = broker.order_status(cid)
        except BrokerError as exc:  # its fate unknown here: the live bar's reconciliation settles it
            failed[cid] = f"lookup failed: {type(exc).__name__}: {exc}"
            continue
        if found is not None:
            results[cid] = found.as_result()
    if results:
        out["executions"] = execs = _record(_order_frame(orders, bar), execs["verdict"].to_numpy(),
                                            execs["verdict_reason"].to_numpy(), results, account)
    if failed:
        execs["error"] = execs["client_order_id"].map(failed).fillna(execs["error"])
    return out


def refusal_frame(now: dt.datetime, mode: str, run_id: str, n_orders: int, reason: str) -> pd.DataFrame:
    """One row saying this run of the bar reached no broker, and why."""
    return pd.DataFrame([{"ts": pd.Timestamp(now).tz_convert("UTC"), "mode": mode, "run_id": run_id,
                          "orders": int(n_orders), "reason": reason}], columns=REFUSAL_COLUMNS)


def _submit_all(broker: Broker, frame: pd.DataFrame, allowed: np.ndarray) -> list[SubmitResult]:
    """Submit the allowed orders in order. Every order of the bar — denied ones too — is first looked up
    by client id: one the broker already knows (an earlier attempt of this bar that crashed) is reported
    as the broker has it, never resubmitted, so it is recorded even if this attempt denies it."""
    results = []
    # the columns as Python values (what ``itertuples`` gives, without building a tuple class per bar)
    cols = [frame[c].tolist() for c in ("client_order_id", "symbol", "side", "quantity", "bar_key", "reduce_only",
                                        "order_type")]
    for cid, symbol, side, quantity, bar_key, reduce_only, order_type, ok in zip(*cols, allowed, strict=True):
        known = broker.order_status(cid)   # one bar's orders
        if known is not None:
            results.append(known.as_result())
        elif ok:
            req = OrderRequest(cid, symbol, Side(side), float(quantity), bar_key, bool(reduce_only),
                               OrderType(order_type))
            results.append(submit_with_lookup(broker, req))
    return results


def cancel_working(broker: Broker, keep: set[str]) -> list[SubmitResult]:
    """Cancel every working order but those in ``keep`` (flatten before the close); a failed cancel is
    returned as that order's answer with the error, not raised."""
    out = []
    for order in broker.open_orders():  # the account's working orders: a handful
        if order.client_order_id in keep:
            continue
        try:
            out.append(broker.cancel(order.client_order_id))
        except BrokerError as exc:
            out.append(order.as_result(error=f"cancel failed: {type(exc).__name__}: {exc}"))
    return out


def execute(bar: str, bar_ts: dt.datetime, now: dt.datetime, sized: pd.DataFrame, positions: dict,
            broker: Broker, switch: KillSwitch, session_date: dt.date, account: str,
            session_open: bool = True, flatten: bool = False,
            fresh_share: float | None = None) -> dict[str, pd.DataFrame]:
    """Kill switch → broker for one bar's orders; every verdict, answer, fill and event recorded.
    ``session_open`` False on the session's closing bar (no order is made; flatten orders wait);
    ``flatten`` (``execution.flatten_before_close`` on the bar before the close): every working order is
    cancelled before the bar's exits are sent (verdict ``FLATTEN_BEFORE_CLOSE``); ``fresh_share``: the bar's
    share of the universe with a row (:func:`fresh_share`), the stalled-feed check."""
    book = positions["positions"]
    acct = positions["positions_account"].iloc[0]
    frame = _orders_of(sized, bar)
    prices = dict(zip(sized["symbol"].tolist(), sized["price"].tolist(), strict=True))
    symbols = pd.Index(book["symbol"])   # the book's columns by symbol (``set_index`` copied the whole book)

    def by_symbol(col: str) -> pd.Series:
        return pd.Series(book[col].to_numpy(), index=symbols, name=col)

    pending = by_symbol("pending_qty") if "pending_qty" in book.columns else None
    mismatched = [s for s in str(acct.get("mismatched_symbols", "") or "").split(",") if s]
    # the book's marks that are not NaN (``dict(by_symbol("price").dropna())``), then the bar's prices
    marks = {s: p for s, p in zip(symbols.tolist(), book["price"].tolist(), strict=True) if p == p}
    check = switch.pre_trade_check(frame, positions=by_symbol("qty"), prices={**marks, **prices},
                                   equity=float(acct["portfolio_value"]), now=now, bar_ts=bar_ts,
                                   session_date=session_date, reconciliation_mismatch=int(acct["n_mismatched"]),
                                   mismatched=mismatched, bar_key=bar, pending=pending, session_open=session_open,
                                   fresh_share=fresh_share)
    # the working orders, for the record of any cancel (asked only when something may be cancelled)
    working = ({o.client_order_id: o for o in broker.open_orders()} if flatten or check.cancel_open_orders
               else {})
    enforced = switch_enforce(check, broker)
    if flatten:
        cancelled = cancel_working(broker, set(frame["client_order_id"]))
        enforced += cancelled
        flatten_ids = {r.client_order_id for r in cancelled}
    else:
        flatten_ids = set()
    verdicts = check.verdicts.reset_index(drop=True)
    results = _submit_all(broker, frame, (verdicts["verdict"] == "ALLOW").to_numpy()) + enforced
    outcome = switch.record_broker_outcomes([not r.error for r in results], now) if results else None
    by_id = {r.client_order_id: r for r in results}
    execs = _record(frame, verdicts["verdict"].to_numpy() if len(frame) else np.array([], dtype=object),
                    verdicts["reason"].fillna("").to_numpy() if len(frame) else np.array([], dtype=object),
                    by_id, account)
    extra = [r for r in enforced if r.client_order_id not in set(frame["client_order_id"])]
    if extra:  # kill-switch cancels and flatten orders, session-rule cancels: recorded like any broker answer
        info = {o: (w.symbol, str(w.side), float(w.quantity)) for o, w in working.items()}
        info.update({r["client_order_id"]: (r["symbol"], r["side"], float(r["quantity"]))
                     for r in check.flatten_orders.to_dict("records")})
        known = [info.get(r.client_order_id, ("", "", np.nan)) for r in extra]
        rows = pd.DataFrame({
            "client_order_id": [r.client_order_id for r in extra],
            "symbol": [k[0] for k in known], "side": [k[1] for k in known], "quantity": [k[2] for k in known],
            "order_type": OrderType.MARKET.value, "decision_price": np.nan,
            "verdict": ["FLATTEN_BEFORE_CLOSE" if r.client_order_id in flatten_ids else "KILL_SWITCH" for r in extra],
            "verdict_reason": ["cancel working orders before the flatten" if r.client_order_id in flatten_ids
                               else check.trading_state.value for r in extra],
            **{c: [_attr(r, c) for r in extra] for c in ("status", "reason_code", "filled_quantity", "avg_price",
                                                         "error")}})
        rows["decision_price"] = rows["symbol"].map(prices).astype(float)
        execs = pd.concat([execs, rows.assign(account=account)], ignore_index=True)
    # fills reported at once for this bar's own orders (its orders and the switch's flatten orders); fills
    # of older orders were taken in by this bar's positions step, or are the next bar's to take in
    ids = set(frame["client_order_id"]) | set(check.flatten_orders["client_order_id"])
    seen = set(positions["positions_fills"]["fill_id"]) if "positions_fills" in positions else set()
    got = [f for f in broker.fills_since(bar_ts) if f.client_order_id in ids and f.fill_id not in seen]
    events = [*check.events, *(outcome.events if outcome else [])]
    return {"executions": execs,
            "executions_fills": executed_fills(got, execs).assign(account=account) if got
            else _no_fills_of(account),
            "executions_killswitch": events_table(events, account)}


def _no_fills_of(account: str) -> pd.DataFrame:
    """``executed_fills([], …).assign(account=account)``, built once per account (most bars: the paper venue
    never fills at once)."""
    return _no_fills_frame(account).copy()


@functools.cache
def _no_fills_frame(account: str) -> pd.DataFrame:
    return empty_taken().assign(account=account)


def events_table(events: list[KillSwitchEvent], account: str) -> pd.DataFrame:
    """The ``executions_killswitch`` table of ``events``: what ``_events(pd.DataFrame(e.as_dict() for e in
    events)).assign(account=account)`` gives, built from the events' fields at once."""
    if not events or not all(isinstance(e.ts, dt.datetime) and not isinstance(e.ts, pd.Timestamp)
                             and e.ts.tzinfo is dt.UTC for e in events):
        frame = pd.DataFrame([e.as_dict() for e in events], columns=list(KillSwitchEvent.__dataclass_fields__))
        return _events(frame).assign(account=account)

    def text(values: list) -> list[str]:
        return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]

    def number(values: list) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    return pd.DataFrame({"ts": pd.DatetimeIndex([e.ts for e in events]),
                         "check": text([e.check for e in events]), "value": number([e.value for e in events]),
                         "limit": number([e.limit for e in events]), "verdict": text([e.verdict for e in events]),
                         "reason": text([e.reason for e in events]),
                         "transition": text([e.transition for e in events]),
                         "subject": text([e.subject for e in events]), "account": account})


def executed_fills(fills: list, execs: pd.DataFrame) -> pd.DataFrame:
    """Fills reported at once for this bar's orders, with the decision price and slippage (source executed)."""
    if not fills:
        return empty_taken()
    f = fills_frame(fills)
    dp = execs.drop_duplicates("client_order_id").set_index("client_order_id")["decision_price"]
    f = f.assign(source="executed", decision_price=f["client_order_id"].map(dp).astype(float))
    f = f.assign(slippage_bps=slippage_bps(f))
    return f.sort_values(["seq", "fill_id"], kind="mergesort").reset_index(drop=True)[FILL_OUT_COLUMNS]


def switch_enforce(check, broker: Broker) -> list[SubmitResult]:
    from resources.kill_switch.resource import KillSwitchResource

    return KillSwitchResource.enforce(check, broker)


def _attr(result: SubmitResult | None, attr: str):
    if result is None:
        return {"filled_quantity": 0.0, "avg_price": np.nan}.get(attr, "")
    value = getattr(result, attr)
    if value is None:
        return {"filled_quantity": 0.0, "avg_price": np.nan}.get(attr, "")
    return str(value) if attr in ("status", "reason_code", "error") else float(value)


def _events(events: pd.DataFrame) -> pd.DataFrame:
    out = events.reindex(columns=EVENT_COLUMNS)
    for c in ("check", "verdict", "reason", "transition", "subject"):
        out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
    for c in ("value", "limit"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out


def bar_outcome(refused: bool, execs: pd.DataFrame, switch_state: str | None) -> tuple[str, str]:
    """What a bar's ``executions`` step amounted to, for the run tag ``tradegraph/outcome`` and the check
    ``reached_the_broker``: ``(outcome, why)``.

    ``refused`` (the run reached no broker), ``traded`` (at least one of the bar's orders was sent),
    ``halted`` (orders denied while the switch was not ACTIVE: HALTED, REDUCING, never armed, state missing),
    ``error`` (allowed orders the broker did not take, e.g. its errors), ``denied`` (every order denied by a
    per-order limit while ACTIVE), ``nothing_to_trade`` (no order at this bar). ``execs``: the bar's
    ``executions`` rows (kill-switch cancels and flattens, verdict ``KILL_SWITCH``, are not the bar's orders).
    """
    if refused:
        return "refused", "the run reached no broker"
    own = execs[execs["verdict"].isin(["ALLOW", "DENY"])] if len(execs) else execs
    if not len(own):
        halted = switch_state not in (None, "ACTIVE")
        return ("halted", f"no order; kill switch {switch_state}") if halted else ("nothing_to_trade", "no order")
    sent = int((own["status"] != "NOT_SENT").sum())
    if sent:
        return "traded", f"{sent} of {len(own)} order(s) sent"
    allowed = int((own["verdict"] == "ALLOW").sum())
    if allowed:
        return "error", f"{allowed} allowed order(s) not taken by the broker"
    if switch_state not in (None, "ACTIVE"):
        return "halted", f"{len(own)} order(s) denied: kill switch {switch_state}"
    return "denied", f"{len(own)} order(s) denied by per-order limits"

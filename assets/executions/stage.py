"""The ``executions`` stage: the kill switch's verdict on each order, the broker's answer and the fills.

Who may reach a broker (SPEC §7): ``audit`` never (nothing is sent, every order is recorded "not sent");
``replay`` only the replay paper account on the simulated clock; ``live`` only for the live bar — a
rematerialized past bar is refused before the kill switch is even asked (so a click on an old partition
cannot trip it either). A rerun of a bar never submits an order twice: an order whose client id the
broker already knows is looked up, not resubmitted, and fills are booked by fill id once.
A refused run (audit, a past live bar) adds a row to ``executions_refusals``; a past bar that was traded keeps
its recorded orders and fills (a refusal cannot unmake them, and erasing them would break reconciliation).
Tables: ``executions`` (per order), ``executions_fills`` (per fill), ``executions_killswitch`` (events),
``executions_refusals`` (refused runs).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from assets.positions.logic import FILL_COLUMNS, fills_frame
from resources.brokers.paper import FrameQuotes, Quote
from resources.brokers.protocol import Broker, OrderRequest, Side, SubmitResult
from resources.brokers.submit import submit_with_lookup
from resources.kill_switch.logic import KillSwitch

EXEC_COLUMNS = ["client_order_id", "symbol", "side", "quantity", "verdict", "verdict_reason", "status",
                "reason_code", "filled_quantity", "avg_price", "error"]
EVENT_COLUMNS = ["ts", "check", "value", "limit", "verdict", "reason", "transition", "subject"]
REFUSAL_COLUMNS = ["ts", "mode", "run_id", "orders", "reason"]


def quotes_frame(snapshot: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Quotes for the fill: this bar's bid/ask/mid and volume, σ_daily and ADV (from features)."""
    f = features.set_index("symbol")
    s = snapshot[snapshot["status"] == "ok"].set_index("symbol").reindex(f.index)
    return pd.DataFrame({"mid": (s["bid"] + s["ask"]) / 2, "bid": s["bid"], "ask": s["ask"],
                         "volume": s["volume"], "sigma_daily_bps": f["sigma_daily_bps"],
                         "adv": f["adv_shares"]}, index=f.index)[list(Quote.__dataclass_fields__)]


def fresh_share(snapshot: pd.DataFrame) -> float:
    """Share of the universe whose row of this bar arrived (``ok`` or skipped by a rule: the feed delivered it);
    ``missing`` symbols are what a stalled feed leaves. An empty universe is 0 (fails closed)."""
    if not len(snapshot):
        return 0.0
    return float((snapshot["status"].astype(str) != "missing").mean())


def empty_fills() -> pd.DataFrame:
    """A typed, empty fills table (so its first recording gets real column types)."""
    return pd.DataFrame({"fill_id": pd.Series(dtype=object), "client_order_id": pd.Series(dtype=object),
                         "symbol": pd.Series(dtype=object), "side": pd.Series(dtype=object),
                         "quantity": pd.Series(dtype=float), "price": pd.Series(dtype=float),
                         "fee": pd.Series(dtype=float), "ts": pd.Series(dtype="datetime64[us, UTC]"),
                         "seq": pd.Series(dtype=np.int64), "mid": pd.Series(dtype=float)})[FILL_COLUMNS]


def not_sent(orders: pd.DataFrame, reason: str) -> dict[str, pd.DataFrame]:
    out = pd.DataFrame({"client_order_id": orders["client_order_id"], "symbol": orders["symbol"],
                        "side": orders["side"], "quantity": np.abs(orders["shares"].to_numpy(dtype=float)),
                        "verdict": "NOT_SENT", "verdict_reason": reason, "status": "NOT_SENT", "reason_code": "",
                        "filled_quantity": 0.0, "avg_price": np.nan, "error": ""}, columns=EXEC_COLUMNS)
    return {"executions": out.reset_index(drop=True), "executions_fills": empty_fills(),
            "executions_killswitch": pd.DataFrame(columns=EVENT_COLUMNS)}


def refusal_frame(now: dt.datetime, mode: str, run_id: str, n_orders: int, reason: str) -> pd.DataFrame:
    """One row saying this run of the bar reached no broker, and why."""
    return pd.DataFrame([{"ts": pd.Timestamp(now).tz_convert("UTC"), "mode": mode, "run_id": run_id,
                          "orders": int(n_orders), "reason": reason}], columns=REFUSAL_COLUMNS)


def kept_record(recorded: dict[str, pd.DataFrame] | pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A bar's recorded execution tables, unchanged, typed where a table was empty (an empty first write
    creates no lineage table, so it reads back without columns)."""
    rec = recorded if isinstance(recorded, dict) else {"executions": recorded}
    execs = rec.get("executions", pd.DataFrame())
    fills = rec.get("executions_fills", pd.DataFrame())
    events = rec.get("executions_killswitch", pd.DataFrame())
    empty = pd.DataFrame({c: pd.Series(dtype=float if c in ("quantity", "filled_quantity", "avg_price") else object)
                          for c in EXEC_COLUMNS})
    return {"executions": execs if len(execs.columns) else empty,
            "executions_fills": fills if len(fills.columns) else empty_fills().assign(account=pd.Series(dtype=object)),
            "executions_killswitch": events if len(events.columns) else _events(pd.DataFrame(columns=EVENT_COLUMNS))}


def _order_frame(orders: pd.DataFrame, bar: str) -> pd.DataFrame:
    return pd.DataFrame({"client_order_id": orders["client_order_id"].to_numpy(), "symbol": orders["symbol"].to_numpy(),
                         "side": orders["side"].to_numpy(), "quantity": np.abs(orders["shares"].to_numpy(dtype=float)),
                         "bar_key": bar, "reduce_only": (orders["gate"] == "exit").to_numpy()})


def _submit_all(broker: Broker, frame: pd.DataFrame, allowed: np.ndarray) -> list[SubmitResult]:
    """Submit the allowed orders in order. Every order of the bar — denied ones too — is first looked up
    by client id: one the broker already knows (an earlier attempt of this bar that crashed) is reported
    as the broker has it, never resubmitted, so its fills are recorded even if this attempt denies it."""
    results = []
    for row, ok in zip(frame.itertuples(index=False), allowed, strict=True):  # one bar's orders
        known = broker.order_status(row.client_order_id)
        if known is not None:
            results.append(known.as_result())
        elif ok:
            req = OrderRequest(row.client_order_id, row.symbol, Side(row.side), float(row.quantity), row.bar_key,
                               bool(row.reduce_only))
            results.append(submit_with_lookup(broker, req))
    return results


def execute(bar: str, bar_ts: dt.datetime, now: dt.datetime, sized: pd.DataFrame, positions: dict,
            broker: Broker, switch: KillSwitch, session_date: dt.date,
            fresh_share: float | None = None) -> dict[str, pd.DataFrame]:
    """Kill switch → broker for one bar's orders; every verdict, answer, fill and event recorded.
    ``fresh_share``: the bar's share of the universe with a row (:func:`fresh_share`), the stalled-feed check."""
    orders = sized[sized["has_order"]].reset_index(drop=True)
    book = positions["positions"]
    account = positions["positions_account"].iloc[0]
    frame = _order_frame(orders, bar)
    prices = dict(zip(sized["symbol"], sized["price"], strict=True))
    held = book.set_index("symbol")
    check = switch.pre_trade_check(frame, positions=held["qty"], prices={**dict(held["price"].dropna()), **prices},
                                   equity=float(account["portfolio_value"]), now=now, bar_ts=bar_ts,
                                   session_date=session_date, reconciliation_mismatch=bool(account["mismatch"]),
                                   bar_key=bar, fresh_share=fresh_share)
    enforced = switch_enforce(check, broker)
    verdicts = check.verdicts.reset_index(drop=True)
    results = _submit_all(broker, frame, (verdicts["verdict"] == "ALLOW").to_numpy()) + enforced
    outcome = switch.record_broker_outcomes([not r.error for r in results], now) if results else None
    by_id = {r.client_order_id: r for r in results}
    execs = pd.DataFrame({
        "client_order_id": frame["client_order_id"], "symbol": frame["symbol"], "side": frame["side"],
        "quantity": frame["quantity"], "verdict": verdicts["verdict"].to_numpy() if len(frame) else [],
        "verdict_reason": verdicts["reason"].fillna("").to_numpy() if len(frame) else [],
    })
    for col, attr in (("status", "status"), ("reason_code", "reason_code"), ("filled_quantity", "filled_quantity"),
                      ("avg_price", "avg_price"), ("error", "error")):
        execs[col] = [_attr(by_id.get(c), attr) for c in execs["client_order_id"]]
    execs["status"] = execs["status"].replace("", "NOT_SENT")
    extra = [r for r in enforced if r.client_order_id not in set(frame["client_order_id"])]
    if extra:  # kill-switch cancels and flatten orders: recorded like any other broker answer
        execs = pd.concat([execs, pd.DataFrame({
            "client_order_id": [r.client_order_id for r in extra], "symbol": "", "side": "", "quantity": np.nan,
            "verdict": "KILL_SWITCH", "verdict_reason": check.trading_state.value,
            **{c: [_attr(r, c) for r in extra] for c in ("status", "reason_code", "filled_quantity", "avg_price",
                                                         "error")}})], ignore_index=True)
    ids = set(by_id)
    got = [f for f in broker.fills_since(bar_ts) if f.client_order_id in ids]
    fills = fills_frame(got) if got else empty_fills()
    events = pd.concat([check.events_frame()] + ([outcome.events_frame()] if outcome else []), ignore_index=True)
    return {"executions": execs.reindex(columns=EXEC_COLUMNS),
            "executions_fills": fills.sort_values(["seq", "fill_id"], kind="mergesort").reset_index(drop=True),
            "executions_killswitch": _events(events)}


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


def quotes_provider(snapshot: pd.DataFrame, features: pd.DataFrame) -> FrameQuotes:
    return FrameQuotes(quotes_frame(snapshot, features))

"""The daily P&L report of one session and account (markdown + CSV), from the lineage tables.

Written by the post-close schedule (``daily_report_job``) under ``paths.reports/daily``; tables are rendered
by pandas (``to_markdown``), never by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.lineage.records import LOG_TABLE
from resources.lineage.store import LineageStore

REPORT_COLUMNS = ["bar", "start_of_day_equity", "portfolio_value", "cash", "pnl", "realised_pnl", "unrealised_pnl", "fees",
                  "realised_cost", "est_cost", "slippage", "decided_notional", "traded_notional", "n_fills", "orders",
                  "sent", "denied", "ks_trips", "ks_transitions", "daily_return"]
MD_COLUMNS = [c for c in REPORT_COLUMNS if c not in ("start_of_day_equity", "decided_notional")]


def _query(store: LineageStore, sql: str, params: list, table: str) -> pd.DataFrame:
    if not store.path.exists():
        return pd.DataFrame()
    with store.connect(read_only=True) as con:
        if not store.has_table(con, table):
            return pd.DataFrame()
        return con.execute(sql, params).df()


def daily_rows(store: LineageStore, session: dt.date, account: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per bar of the session: the ``pnl`` row joined with its orders and kill-switch counts; and the
    session's notable kill-switch events (trips, records, transitions; per-order denials are counted)."""
    pnl = _query(store, "SELECT * FROM pnl WHERE account = ? AND session = ? ORDER BY bar",
                 [account, session.isoformat()], "pnl")
    if pnl.empty:
        return pd.DataFrame(columns=REPORT_COLUMNS), pd.DataFrame()
    bars = pnl["bar"].tolist()
    # executions are append-only (a rerun adds rows): orders are counted once each, by client order id
    orders = _query(store, """SELECT bar, count(DISTINCT client_order_id) AS orders,
                              count(DISTINCT client_order_id) FILTER (WHERE status <> 'NOT_SENT') AS sent,
                              count(DISTINCT client_order_id) FILTER (WHERE verdict = 'DENY') AS denied
                              FROM executions WHERE bar IN (SELECT unnest(?)) AND account = ? GROUP BY bar""",
                    [bars, account], "executions")
    events = _query(store, """SELECT bar, ts, "check", verdict, reason, transition FROM executions_killswitch
                              WHERE bar IN (SELECT unnest(?)) ORDER BY bar, ts""", [bars], "executions_killswitch")
    notable = events[events["verdict"].isin(["TRIP", "RECORD"]) | (events["transition"] != "")] \
        if len(events) else pd.DataFrame(columns=["bar", "ts", "check", "verdict", "reason", "transition"])
    day = session.isoformat()
    ops = _query(store, f"""SELECT NULL AS bar, ts, "check", verdict, reason, transition FROM {LOG_TABLE}
                            WHERE account = ? AND (verdict IN ('TRIP', 'RECORD') OR transition <> ''
                                                   OR "check" IN ('reset', 'session_open'))
                              AND strftime(ts AT TIME ZONE ?, '%Y-%m-%d') = ? ORDER BY ts""",
                 [account, get_cfg("market.timezone"), day], LOG_TABLE)
    if len(ops):
        notable = pd.concat([f for f in (notable, ops) if len(f)], ignore_index=True).sort_values("ts", kind="stable")
    per_bar = pnl.set_index("bar")
    counts = (orders.set_index("bar") if len(orders) else pd.DataFrame(columns=["orders", "sent", "denied"]))
    out = pd.DataFrame({c: per_bar[c] if c in per_bar else 0.0 for c in REPORT_COLUMNS
                        if c in per_bar or c in ("slippage", "decided_notional")})
    for c in ("orders", "sent", "denied"):
        out[c] = counts[c].reindex(out.index).fillna(0).astype(int) if c in counts else 0
    trips = notable[notable["verdict"].isin(["TRIP", "RECORD"])].groupby("bar").size() if len(notable) else None
    moves = notable[notable["transition"] != ""].groupby("bar").size() if len(notable) else None
    out["ks_trips"] = (trips.reindex(out.index).fillna(0).astype(int) if trips is not None else 0)
    out["ks_transitions"] = (moves.reindex(out.index).fillna(0).astype(int) if moves is not None else 0)
    return out.reset_index()[REPORT_COLUMNS], notable


def _write(path: Path, text: str) -> None:
    """Temp file + os.replace: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _money(x: float) -> str:
    return f"{x:,.2f}" if np.isfinite(x) else "n/a"


def report_summary(rows: pd.DataFrame) -> dict[str, float]:
    """The session's numbers: start and end value, P&L, daily return, fees, costs, orders, events."""
    if rows.empty:
        return {"bars": 0}
    sod = float(rows["start_of_day_equity"].iloc[0])
    end = float(rows["portfolio_value"].iloc[-1])
    return {"bars": len(rows), "start_of_day_equity": sod, "end_value": end, "pnl": end - sod,
            "daily_return": float(rows["daily_return"].iloc[-1]), "realised_pnl": float(rows["realised_pnl"].sum()),
            "unrealised_pnl": float(rows["unrealised_pnl"].iloc[-1]), "fees": float(rows["fees"].sum()),
            "realised_cost": float(rows["realised_cost"].sum()), "est_cost": float(rows["est_cost"].sum()),
            "slippage": float(rows["slippage"].sum()), "decided_notional": float(rows["decided_notional"].sum()),
            "traded_notional": float(rows["traded_notional"].sum()), "fills": int(rows["n_fills"].sum()),
            "orders": int(rows["orders"].sum()), "sent": int(rows["sent"].sum()),
            "denied": int(rows["denied"].sum()), "ks_trips": int(rows["ks_trips"].sum()),
            "ks_transitions": int(rows["ks_transitions"].sum())}


def _summary_table(s: dict, rows: pd.DataFrame) -> pd.DataFrame:
    notional = s["traded_notional"]
    bps = s["realised_cost"] / notional * 1e4 if notional else np.nan
    est_bps = s["est_cost"] / notional * 1e4 if notional else np.nan
    slip_bps = s["slippage"] / s["decided_notional"] * 1e4 if s["decided_notional"] else np.nan
    return pd.DataFrame([
        ("bars", f"{s['bars']} ({rows['bar'].iloc[0]} … {rows['bar'].iloc[-1]})"),
        ("start-of-day equity", _money(s["start_of_day_equity"])),
        ("end portfolio value", _money(s["end_value"])),
        ("P&L", _money(s["pnl"])),
        ("daily return", f"{s['daily_return'] * 100:.4f} %"),
        ("realised P&L", _money(s["realised_pnl"])),
        ("unrealised P&L (end)", _money(s["unrealised_pnl"])),
        ("fees", _money(s["fees"])),
        ("realised costs (fill vs mid + fees)", f"{_money(s['realised_cost'])} ({bps:.2f} bps)"),
        ("estimated costs", f"{_money(s['est_cost'])} ({est_bps:.2f} bps)"),
        ("slippage vs the decision price", f"{_money(s['slippage'])} ({slip_bps:.2f} bps)"),
        ("traded notional", _money(notional)),
        ("orders / sent / denied / fills", f"{s['orders']} / {s['sent']} / {s['denied']} / {s['fills']}"),
        ("kill-switch trips / transitions", f"{s['ks_trips']} / {s['ks_transitions']}"),
    ], columns=["measure", "value"])


def _per_bar_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows[MD_COLUMNS].copy()
    for c in MD_COLUMNS:
        if c == "daily_return":
            out[c] = [f"{float(v) * 100:.4f} %" for v in out[c]]
        elif out[c].dtype.kind == "f":
            out[c] = [_money(float(v)) for v in out[c]]
    return out


def render_markdown(session: dt.date, account: str, summary: dict, rows: pd.DataFrame,
                    events: pd.DataFrame) -> str:
    """The report's markdown: summary table, per-bar table and the kill-switch events (pandas tables)."""
    lines = [f"# Daily P&L report: {session.isoformat()} ({account} account)", ""]
    if not summary.get("bars"):
        return "\n".join(lines + [f"No bars recorded for session {session.isoformat()}.", ""])
    lines += [_summary_table(summary, rows).to_markdown(index=False), "", "## Per bar", "",
              _per_bar_table(rows).to_markdown(index=False, disable_numparse=True), "",
              "## Kill-switch events (trips, records, transitions, resets)", ""]
    if events.empty:
        lines.append("None.")
    for e in events.itertuples(index=False):
        lines.append(f"- {pd.Timestamp(e.ts).isoformat()} {e.check}: {e.transition or e.verdict} — {e.reason}")
    return "\n".join(lines + [""])


def write_daily_report(store: LineageStore, session: dt.date, account: str, out_dir: Path) -> tuple[
        Path, Path, dict]:
    """``<out_dir>/<session>.md`` and ``.csv`` (one row per bar) from the lineage; returns paths and summary."""
    rows, events = daily_rows(store, session, account)
    summary = report_summary(rows)
    md, csv = out_dir / f"{session.isoformat()}.md", out_dir / f"{session.isoformat()}.csv"
    _write(csv, rows.to_csv(index=False, float_format="%.10g"))
    _write(md, render_markdown(session, account, summary, rows, events))
    return md, csv, summary



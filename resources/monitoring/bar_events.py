"""What a trading run's step outputs mean for alerts and metrics (pure: tables in, alerts/observations out).

Read from the outputs the assets already return (no asset changes):
- ``positions``: ``positions_account.n_mismatched`` (reconciliation) and ``positions_fills`` when present
  (fills taken in while settling the venue);
- ``executions``: ``executions`` (verdict, status, reason_code per order), ``executions_fills``,
  ``executions_killswitch`` (``transition`` like ``ACTIVE->HALTED``) and ``executions_refusals``;
- ``pnl``: ``pnl`` (``portfolio_value``, ``daily_return``).

Only ``live`` bars raise alerts (a replay's kill switch and book are simulated); metrics carry the account.
A table that is absent or empty contributes nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

import pandas as pd

from resources.monitoring.alerts import Alert
from resources.monitoring.metrics import BarObservation

MAX_LISTED = 10  # symbols named in one reconciliation alert; the rest are counted


def _table(output: object, name: str) -> pd.DataFrame:
    if isinstance(output, Mapping):
        value = output.get(name)
        return value if isinstance(value, pd.DataFrame) else pd.DataFrame()
    return pd.DataFrame()


def _finite(value: object) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def kill_switch_alerts(events: pd.DataFrame, account: str, bar: str) -> list[Alert]:
    """One alert per state transition in a bar's kill-switch events, in event order."""
    if events.empty or "transition" not in events:
        return []
    moved = events[events["transition"].fillna("").astype(str) != ""]
    out = []
    for row in moved.to_dict("records"):
        target = str(row["transition"]).split("->")[-1]
        severity = "failure" if target == "HALTED" else "info" if target == "ACTIVE" else "warning"
        reason = str(row.get("reason") or "")
        out.append(Alert("kill_switch", str(row["transition"]), f"kill switch {row['transition']}: {reason}".strip(),
                         severity, account, bar))
    return out


def reconciliation_alert(account_row: pd.DataFrame, positions: pd.DataFrame, account: str, bar: str) -> list[Alert]:
    """An alert when the broker's book differs from the recorded fills (``n_mismatched`` > 0)."""
    if account_row.empty or "n_mismatched" not in account_row:
        return []
    n = int(account_row["n_mismatched"].iloc[0])
    if n <= 0:
        return []
    lines = []
    if {"symbol", "difference"} <= set(positions.columns):
        diff = positions[positions["difference"].fillna(1.0) != 0]  # NaN: a non-finite quantity is a mismatch
        diff = diff.assign(_abs=diff["difference"].abs()).sort_values(["_abs", "symbol"], ascending=[False, True],
                                                                      kind="mergesort")
        for row in diff.head(MAX_LISTED).to_dict("records"):
            lines.append(f"{row['symbol']}: recorded {row.get('expected_qty', float('nan')):g}, "
                         f"broker {row.get('qty', float('nan')):g} ({row['difference']:+g})")
        if len(diff) > MAX_LISTED:
            lines.append(f"… and {len(diff) - MAX_LISTED} more")
    body = f"{n} symbol(s) differ between the broker and the recorded fills" + (":\n" + "\n".join(lines) if lines else "")
    return [Alert("reconciliation", f"{n} mismatched symbol(s)", body, "warning", account, bar)]


def refusal_alerts(refusals: pd.DataFrame, account: str, bar: str) -> list[Alert]:
    """An alert per refused run of a live bar (nothing reached the broker)."""
    out = []
    for row in refusals.to_dict("records"):
        out.append(Alert("refused_bar", f"bar {bar} refused ({int(row.get('orders', 0))} order(s) not sent)",
                         str(row.get("reason", "")), "warning", account, bar))
    return out


def halted_alert(outcome: str | None, execs: pd.DataFrame, moved: bool, account: str, bar: str) -> list[Alert]:
    """A bar whose orders the kill switch denied (outcome ``halted``) when no transition alert already says
    so (a switch halted at an earlier bar stays silent otherwise, bar after bar)."""
    if outcome != "halted" or moved:
        return []
    denied = int((execs["verdict"] == "DENY").sum()) if len(execs) and "verdict" in execs else 0
    reasons = sorted(set(execs.loc[execs["verdict"] == "DENY", "verdict_reason"].astype(str))) if denied else []
    return [Alert("halted_bar", f"bar {bar} halted: {denied} order(s) denied by the kill switch",
                  "; ".join(reasons) or "the kill switch is not ACTIVE", "failure", account, bar)]


def step_alerts(step: str, output: object, mode: str, account: str, bar: str,
                outcome: str | None = None) -> list[Alert]:
    """The alerts one finished step of a live bar raises (none for other modes or other steps); ``outcome``:
    the run's ``tradegraph/outcome`` tag after ``executions``."""
    if mode != "live":
        return []
    if step == "positions":
        return reconciliation_alert(_table(output, "positions_account"), _table(output, "positions"), account, bar)
    if step == "executions":
        moved = kill_switch_alerts(_table(output, "executions_killswitch"), account, bar)
        return (moved + refusal_alerts(_table(output, "executions_refusals"), account, bar)
                + halted_alert(outcome, _table(output, "executions"), bool(moved), account, bar))
    return []


def step_observation(step: str, output: object, account: str, latency_s: float | None = None,
                     bar_ts: dt.datetime | None = None) -> BarObservation | None:
    """What one finished step contributes to the metrics, or None for a step that has nothing to say."""
    if step == "positions":
        acct = _table(output, "positions_account")
        fills = _table(output, "positions_fills")
        mism = int(acct["n_mismatched"].iloc[0]) if len(acct) and "n_mismatched" in acct else None
        return BarObservation(account, fills=len(fills), mismatches=mism)
    if step == "executions":
        execs = _table(output, "executions")
        refused = len(_table(output, "executions_refusals")) > 0
        orders: dict[tuple[str, str], int] = {}
        rejects: dict[str, int] = {}
        if len(execs) and not refused:
            counts = execs.groupby(["verdict", "status"], sort=True).size()
            orders = {(str(v), str(s)): int(n) for (v, s), n in counts.items()}
            rej = execs[execs["status"] == "REJECTED"]
            if len(rej):
                rejects = {str(r): int(n) for r, n in rej["reason_code"].fillna("").replace("", "UNKNOWN")
                           .value_counts().sort_index().items()}
        sent = int((execs["status"] != "NOT_SENT").sum()) if len(execs) and not refused else 0
        outcome = "refused" if refused else "traded" if sent else "no_orders"
        return BarObservation(account, orders=orders, rejects=rejects,
                              fills=0 if refused else len(_table(output, "executions_fills")),
                              latency_s=None if refused else latency_s, outcome=outcome)
    if step == "pnl":
        row = _table(output, "pnl")
        if row.empty:
            return None
        return BarObservation(account, portfolio_value=_finite(row["portfolio_value"].iloc[-1]),
                              daily_return=_finite(row["daily_return"].iloc[-1]), bar_ts=bar_ts)
    return None

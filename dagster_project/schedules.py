"""Schedules and the jobs around a trading day: pre-open checks, the post-close daily report, and the
manual kill-switch reset (SPEC §6, §7).

Why an evaluation function on top of the cron: a cron cannot tell a holiday or a half day. Each schedule
fires at every local time the calendar can need (``orchestration.preopen_minutes`` before an open,
``orchestration.postclose_minutes`` after a close: 16:10 and 13:10 for XNYS half days) in the exchange's
time zone, and the evaluation asks the calendar whether that instant is *the* time for that day's session;
otherwise it skips with the reason (a holiday, the regular-close tick of a half day). Run keys carry the
session, so a session is never run twice by a schedule.

Kill-switch operations of these jobs (session open, reset) are recorded in the lineage table
``kill_switch_log`` (not keyed by bar: they happen between bars), so every transition keeps its reason.
Both schedules default to STOPPED (Dagster's default): turn them on in the UI for a live deployment.
(No ``from __future__ import annotations``: Dagster reads the ops' config and resource annotations.)
"""

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.paper import PaperBroker
from resources.brokers.resource import BrokerResource
from resources.kill_switch.logic import CheckResult
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.resource import LineageResource
from resources.lineage.store import LineageStore
from resources.market.calendar import bar_key, get_calendar
from resources.market.clock import market_now
from resources.market.resource import MarketDataResource
from resources.model_registry import ModelRegistryResource

SESSION_TAG = "tradegraph/session"
LOG_TABLE = "kill_switch_log"
_LOG_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    run_id VARCHAR, job VARCHAR, account VARCHAR, ts TIMESTAMPTZ, "check" VARCHAR, value DOUBLE,
    "limit" DOUBLE, verdict VARCHAR, reason VARCHAR, transition VARCHAR, subject VARCHAR)"""
REPORT_COLUMNS = ["bar", "start_of_day_equity", "portfolio_value", "cash", "pnl", "realised_pnl", "unrealised_pnl", "fees",
                  "realised_cost", "est_cost", "traded_notional", "n_fills", "orders", "sent", "denied",
                  "ks_trips", "ks_transitions", "daily_return"]
MD_COLUMNS = [c for c in REPORT_COLUMNS if c != "start_of_day_equity"]


# ---- the calendar side ---------------------------------------------------------------------------------

def session_open_close(session: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Open and close (UTC) of a session, from its bar closes (half days close early)."""
    cal = get_calendar()
    closes = cal.session_bars(session)
    return closes[0] - pd.Timedelta(minutes=cal.bar_minutes), closes[-1]


def preopen_time(session: dt.date) -> pd.Timestamp:
    return session_open_close(session)[0] - pd.Timedelta(minutes=get_cfg("orchestration.preopen_minutes"))


def postclose_time(session: dt.date) -> pd.Timestamp:
    return session_open_close(session)[1] + pd.Timedelta(minutes=get_cfg("orchestration.postclose_minutes"))


def is_session(day: dt.date) -> bool:
    return get_calendar().is_session(day)


def _dow(days: set[int]) -> str:
    """Cron day-of-week field (0 = Sunday) from Python weekdays (0 = Monday), runs written as ranges."""
    cron = sorted((d + 1) % 7 for d in days)
    runs: list[list[int]] = []
    for d in cron:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def crons_for(when: Callable[[dt.date], pd.Timestamp]) -> list[str]:
    """One cron per distinct local time ``when`` takes over the partitioned sessions."""
    cal, tz = get_calendar(), get_cfg("market.timezone")
    sessions = cal.sessions(get_cfg("market.partitions_start"), get_cfg("market.partitions_end"))
    times = {(t.hour, t.minute) for t in (when(d).tz_convert(tz) for d in sessions)}
    dow = _dow({d.weekday() for d in sessions})
    return [f"{m} {h} * * {dow}" for h, m in sorted(times)]


def due_session(scheduled: dt.datetime, when: Callable[[dt.date], pd.Timestamp], what: str) -> tuple[
        dt.date | None, str]:
    """(session, "") if ``scheduled`` is the time ``when`` gives for that local day's session, else
    (None, why not)."""
    local = pd.Timestamp(scheduled).tz_convert(get_cfg("market.timezone"))
    day = local.date()
    try:
        open_day = is_session(day)
    except Exception as exc:  # exchange_calendars: a date outside the configured calendar
        return None, f"{day} is outside the configured calendar ({type(exc).__name__}: {exc})"
    if not open_day:
        return None, f"{day} is not a {get_calendar().code} trading session (weekend or holiday): no {what}"
    due = when(day).tz_convert(local.tz)
    if local.floor("min") != due:
        return None, f"{what} for {day} runs at {due:%H:%M %Z} (the session's own hours), not {local:%H:%M %Z}"
    return day, ""


def current_session(after_close: bool) -> dt.date:
    """By the market clock: the latest session that has closed (``after_close``), or the session that is
    open or opens next."""
    cal, now = get_calendar(), market_now()
    if after_close:
        latest = cal.latest_closed_bar(now)
        if latest is None:
            raise ValueError(f"no session has closed by {now}")
        return cal.session_of(latest)
    day = now.tz_convert(get_cfg("market.timezone")).date()
    for session in cal.sessions(day, get_cfg("market.partitions_end")):  # today's, else the next
        if session_open_close(session)[1] > now:
            return session
    raise ValueError(f"no session opens between {day} and market.partitions_end")


def _session(value: str, after_close: bool) -> dt.date:
    if not value:
        return current_session(after_close)
    day = dt.date.fromisoformat(value)
    if not is_session(day):
        raise dg.Failure(description=f"{day} is not a {get_calendar().code} trading session")
    return day


# ---- lineage of kill-switch operations -----------------------------------------------------------------

def record_switch_events(store: LineageStore, run_id: str, job: str, account: str, result: CheckResult) -> int:
    """Append a kill-switch operation's events to ``kill_switch_log``; returns how many."""
    events = result.events_frame()
    if events.empty:
        return 0
    rows = pd.DataFrame({"run_id": run_id, "job": job, "account": account,
                         "ts": pd.to_datetime(events["ts"], utc=True), "check": events["check"].astype(str),
                         "value": pd.to_numeric(events["value"], errors="coerce").astype(float),
                         "limit": pd.to_numeric(events["limit"], errors="coerce").astype(float),
                         "verdict": events["verdict"].astype(str), "reason": events["reason"].astype(str),
                         "transition": events["transition"].fillna("").astype(str),
                         "subject": events["subject"].fillna("").astype(str)})
    with store.connect() as con:
        con.execute(_LOG_SCHEMA)
        con.register("_ks_events", rows)
        try:
            con.execute(f"INSERT INTO {LOG_TABLE} BY NAME SELECT * FROM _ks_events")
        finally:
            con.unregister("_ks_events")
    return len(rows)


# ---- kill switch reset ---------------------------------------------------------------------------------

class ResetConfig(dg.Config):
    """Why the switch is reset (required: a person decided), and optionally the equity to re-base the
    high-water mark to (so a drawdown trip does not fire again at once)."""

    reason: str
    equity: float | None = None
    account: str = "live"


@dg.op(description="Clears every kill-switch trip with the reason from run config; recorded in kill_switch_log.")
def reset_kill_switch(context: dg.OpExecutionContext, config: ResetConfig, kill_switch: KillSwitchResource,
                      lineage: LineageResource) -> None:
    if not config.reason.strip():
        raise dg.Failure(description="a kill-switch reset needs a reason (run config ops.reset_kill_switch.reason)")
    before = kill_switch.switch_for(config.account).status(dt.datetime.now(dt.UTC))
    result = kill_switch.switch_for(config.account).reset(config.reason, dt.datetime.now(dt.UTC), config.equity)
    n = record_switch_events(lineage.store(), context.run.run_id, "kill_switch_reset_job", config.account, result)
    context.log.info(f"kill switch ({config.account}): {before.trading_state} → {result.trading_state}; "
                     f"cleared {', '.join(before.state.trips) or 'nothing'}")
    context.add_output_metadata({"before": before.trading_state.value, "after": result.trading_state.value,
                                 "cleared": ", ".join(before.state.trips), "events": n})


@dg.job(description="Manual kill-switch reset (SPEC §6): clears every trip; the reason comes from run config.")
def kill_switch_reset_job() -> None:
    reset_kill_switch()


# ---- pre-open ------------------------------------------------------------------------------------------

class SessionConfig(dg.Config):
    """The session (ISO date); empty: by the market clock (pre-open: the next/open one; report: the last
    closed one)."""

    session: str = ""


class ReportConfig(SessionConfig):
    account: str = "live"


def model_problems(status: pd.DataFrame) -> list[str]:
    """Every wanted target needs at least one loaded model (a missing family alone is a graceful skip)."""
    problems = []
    for target, rows in status.groupby("target", sort=True):
        if not (rows["status"] == "ok").any():
            why = "; ".join(f"{f}: {r}" for f, r in zip(rows["family"], rows["reason"], strict=True))
            problems.append(f"no active model for target {target} ({why})")
    return problems


def previous_bar(session: dt.date) -> pd.Timestamp | None:
    """The last bar close before the session opens (the previous session's close)."""
    return get_calendar().latest_closed_bar(session_open_close(session)[0])


@dg.op(description="Before the open: re-base the kill switch for the session with the broker's equity (clears a "
                   "daily-loss trip), check the registry has an active model per wanted target and that market "
                   "data answers for the previous bar. Fails with every problem named.")
def pre_open(context: dg.OpExecutionContext, config: SessionConfig, broker: BrokerResource,
             kill_switch: KillSwitchResource, market: MarketDataResource, models: ModelRegistryResource,
             lineage: LineageResource) -> None:
    session = _session(config.session, after_close=False)
    problems: list[str] = []
    marks = None
    prev = previous_bar(session)
    if prev is None:
        problems.append(f"market data: no bar before {session} in the configured calendar")
    else:
        try:
            snapshot = market.window(bar_key(prev))[0].snapshot
            ok = snapshot[snapshot["status"] == "ok"]
            if ok.empty:
                problems.append(f"market data for the previous bar {bar_key(prev)}: no symbol has a usable bar "
                                f"({snapshot['status'].value_counts().to_dict()})")
            marks = dict(zip(ok["symbol"], ok["close"].astype(float), strict=True))
        except Exception as exc:  # any source failure is reported, with the others, not raised alone
            problems.append(f"market data for the previous bar {bar_key(prev)}: {type(exc).__name__}: {exc}")
    equity = np.nan
    try:
        adapter = broker.get_broker_for("live")
        account = adapter.account(marks=marks) if isinstance(adapter, PaperBroker) else adapter.account()
        equity = float(account.equity)
        result = kill_switch.switch_for("live").on_session_open(session, equity, market_now().to_pydatetime())
        record_switch_events(lineage.store(), context.run.run_id, "preopen_job", "live", result)
        context.log.info(f"kill switch re-based for {session}: equity {equity:,.2f}, state {result.trading_state}")
    except Exception as exc:
        problems.append(f"broker / kill switch session open: {type(exc).__name__}: {exc}")
    status = models.load().status
    problems += model_problems(status)
    context.add_output_metadata({"session": session.isoformat(), "equity": equity,
                                 "previous_bar": bar_key(prev) if prev is not None else "",
                                 "models_ok": int((status["status"] == "ok").sum()),
                                 "models_skipped": int((status["status"] != "ok").sum()),
                                 "problems": len(problems)})
    if problems:
        raise dg.Failure(description=f"pre-open checks failed for {session}:\n  - " + "\n  - ".join(problems),
                         metadata={"problems": "\n".join(problems)})


@dg.job(description="Before the open (SPEC §7): reset daily state, check models and market data.")
def preopen_job() -> None:
    pre_open()


# ---- post-close daily report ---------------------------------------------------------------------------

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
    orders = _query(store, """SELECT bar, count(*) AS orders, count(*) FILTER (WHERE status <> 'NOT_SENT') AS sent,
                              count(*) FILTER (WHERE verdict = 'DENY') AS denied
                              FROM executions WHERE bar IN (SELECT unnest(?)) GROUP BY bar""", [bars], "executions")
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
    out = pd.DataFrame({c: per_bar[c] for c in REPORT_COLUMNS if c in per_bar})
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


def _cell(column: str, value: object) -> str:
    if column == "daily_return":
        return f"{float(value) * 100:.4f} %"
    return _money(float(value)) if isinstance(value, float) else str(value)


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
            "traded_notional": float(rows["traded_notional"].sum()), "fills": int(rows["n_fills"].sum()),
            "orders": int(rows["orders"].sum()), "sent": int(rows["sent"].sum()),
            "denied": int(rows["denied"].sum()), "ks_trips": int(rows["ks_trips"].sum()),
            "ks_transitions": int(rows["ks_transitions"].sum())}


def render_markdown(session: dt.date, account: str, summary: dict, rows: pd.DataFrame,
                    events: pd.DataFrame) -> str:
    lines = [f"# Daily P&L report: {session.isoformat()} ({account} account)", ""]
    if not summary.get("bars"):
        return "\n".join(lines + [f"No bars recorded for session {session.isoformat()}.", ""])
    s = summary
    bps = s["realised_cost"] / s["traded_notional"] * 1e4 if s["traded_notional"] else np.nan
    est_bps = s["est_cost"] / s["traded_notional"] * 1e4 if s["traded_notional"] else np.nan
    lines += ["| measure | value |", "|---|---|",
              f"| bars | {s['bars']} ({rows['bar'].iloc[0]} … {rows['bar'].iloc[-1]}) |",
              f"| start-of-day equity | {_money(s['start_of_day_equity'])} |",
              f"| end portfolio value | {_money(s['end_value'])} |",
              f"| P&L | {_money(s['pnl'])} |",
              f"| daily return | {s['daily_return'] * 100:.4f} % |",
              f"| realised P&L | {_money(s['realised_pnl'])} |",
              f"| unrealised P&L (end) | {_money(s['unrealised_pnl'])} |",
              f"| fees | {_money(s['fees'])} |",
              f"| realised costs (fill vs mid + fees) | {_money(s['realised_cost'])} ({bps:.2f} bps) |",
              f"| estimated costs | {_money(s['est_cost'])} ({est_bps:.2f} bps) |",
              f"| traded notional | {_money(s['traded_notional'])} |",
              f"| orders / sent / denied / fills | {s['orders']} / {s['sent']} / {s['denied']} / {s['fills']} |",
              f"| kill-switch trips / transitions | {s['ks_trips']} / {s['ks_transitions']} |", "",
              "## Per bar", "", "| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in rows[MD_COLUMNS].to_dict("records"):
        lines.append("| " + " | ".join(_cell(c, r[c]) for c in MD_COLUMNS) + " |")
    lines += ["", "## Kill-switch events (trips, records, transitions, resets)", ""]
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


@dg.op(description="After the close: the session's daily P&L report (markdown + CSV) from the lineage pnl table.")
def daily_report(context: dg.OpExecutionContext, config: ReportConfig, lineage: LineageResource) -> None:
    session = _session(config.session, after_close=True)
    md, csv, summary = write_daily_report(lineage.store(), session, config.account,
                                          resolve_path("paths.reports") / "daily")
    if not summary["bars"]:
        context.log.warning(f"no bars recorded for {session} ({config.account}): the report says so")
    context.add_output_metadata({"markdown": dg.MetadataValue.path(str(md)), "csv": dg.MetadataValue.path(str(csv)),
                                 **{k: v for k, v in summary.items() if isinstance(v, int | float)}})


@dg.job(description="After the close (SPEC §7): the daily P&L report under paths.reports/daily.")
def daily_report_job() -> None:
    daily_report()


# ---- schedules -----------------------------------------------------------------------------------------

def _request(context: dg.ScheduleEvaluationContext, when: Callable[[dt.date], pd.Timestamp], what: str,
             op: str) -> dg.RunRequest | dg.SkipReason:
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    session, why = due_session(scheduled, when, what)
    if session is None:
        return dg.SkipReason(why)
    return dg.RunRequest(run_key=f"{what}:{session.isoformat()}", tags={SESSION_TAG: session.isoformat()},
                         run_config={"ops": {op: {"config": {"session": session.isoformat()}}}})


@dg.schedule(cron_schedule=crons_for(preopen_time), job=preopen_job, execution_timezone=get_cfg("market.timezone"),
             description="orchestration.preopen_minutes before each session's open, trading days only.")
def preopen_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return _request(context, preopen_time, "pre-open", "pre_open")


@dg.schedule(cron_schedule=crons_for(postclose_time), job=daily_report_job,
             execution_timezone=get_cfg("market.timezone"),
             description="orchestration.postclose_minutes after each session's close (half days included), "
                         "trading days only.")
def postclose_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return _request(context, postclose_time, "post-close", "daily_report")


JOBS = [kill_switch_reset_job, preopen_job, daily_report_job]
SCHEDULES = [preopen_schedule, postclose_schedule]

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
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.brokers.paper import PaperBroker
from resources.brokers.resource import BrokerResource
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.records import record_switch_events
from resources.lineage.resource import LineageResource
from resources.market.calendar import bar_key, get_calendar
from resources.market.clock import market_now
from resources.market.resource import MarketDataResource
from resources.model_registry import ModelRegistryResource

SESSION_TAG = "tradegraph/session"


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


@dg.job(description="Manual kill-switch reset: clears every trip; the reason comes from run config.")
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


@dg.job(description="Before the open: reset daily state, check models and market data.")
def preopen_job() -> None:
    pre_open()


# ---- post-close daily report ---------------------------------------------------------------------------

@dg.op(description="After the close: the session's daily P&L report (markdown + CSV) from the lineage pnl table.")
def daily_report(context: dg.OpExecutionContext, config: ReportConfig, lineage: LineageResource) -> None:
    from dagster_project.commands.daily_report import write_daily_report

    session = _session(config.session, after_close=True)
    md, csv, summary = write_daily_report(lineage.store(), session, config.account,
                                          resolve_path("paths.reports") / "daily")
    if not summary["bars"]:
        context.log.warning(f"no bars recorded for {session} ({config.account}): the report says so")
    context.add_output_metadata({"markdown": dg.MetadataValue.path(str(md)), "csv": dg.MetadataValue.path(str(csv)),
                                 **{k: v for k, v in summary.items() if isinstance(v, int | float)}})


@dg.job(description="After the close: the daily P&L report under paths.reports/daily.")
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

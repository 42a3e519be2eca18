"""The day's schedules and their jobs: pre-open, post-close daily report, manual kill-switch reset.

Jobs run in process from the real ``Definitions`` (resources bound as in production); schedules are
evaluated with ``build_schedule_context`` at chosen local instants around Thanksgiving 2026 (26 Nov
closed, 27 Nov a half day closing 13:00 New York).
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest

from assets.predictions.models import wanted
from CONFIG.config_loader import get_cfg, resolve_path
from dagster_project.definitions import defs
from dagster_project.schedules import postclose_schedule, preopen_schedule
from resources.brokers.paper import PaperBroker
from resources.brokers.protocol import Fill, Side
from resources.kill_switch.logic import KillSwitch, TripReason
from resources.lineage.records import LOG_TABLE
from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from resources.market.resource import MarketDataResource
from resources.market.sources import DataError
from tests.graph_helpers import run_bar, session_keys

NY = ZoneInfo("America/New_York")


def tick(schedule: dg.ScheduleDefinition, y: int, m: int, d: int, hh: int, mm: int, tz=NY):
    return schedule.evaluate_tick(dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(y, m, d, hh, mm, tzinfo=tz)))


def run_job(name: str, config: dict, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(name).execute_in_process(run_config=config, raise_on_error=raise_on_error)


def session_config(op: str, session: str) -> dict:
    return {"ops": {op: {"config": {"session": session}}}}


def test_schedules_skip_the_holiday_and_fire_at_the_sessions_own_local_time():
    assert preopen_schedule.execution_timezone == postclose_schedule.execution_timezone == "America/New_York"
    assert get_cfg("orchestration.preopen_minutes") == 15 and get_cfg("orchestration.postclose_minutes") == 10
    assert preopen_schedule.cron_schedule == ["15 9 * * 1-5"]
    assert postclose_schedule.cron_schedule == ["10 13 * * 1-5", "10 16 * * 1-5"]   # half days, full days

    holiday = tick(preopen_schedule, 2026, 11, 26, 9, 15)
    assert not holiday.run_requests and "2026-11-26 is not a XNYS trading session" in holiday.skip_message
    assert not tick(postclose_schedule, 2026, 11, 26, 16, 10).run_requests

    pre = tick(preopen_schedule, 2026, 11, 27, 9, 15).run_requests
    assert [r.run_key for r in pre] == ["pre-open:2026-11-27"]
    assert pre[0].run_config == session_config("pre_open", "2026-11-27")
    post = tick(postclose_schedule, 2026, 11, 27, 13, 10).run_requests         # 13:00 close + 10 min
    assert [r.run_key for r in post] == ["post-close:2026-11-27"]
    assert post[0].run_config == session_config("daily_report", "2026-11-27")
    assert tick(postclose_schedule, 2026, 11, 27, 18, 10, dt.UTC).run_requests == post   # the same instant in UTC
    late = tick(postclose_schedule, 2026, 11, 27, 16, 10)                        # the regular-close tick
    assert not late.run_requests and "runs at 13:10" in late.skip_message

    assert [r.run_key for r in tick(postclose_schedule, 2026, 11, 25, 16, 10).run_requests] == [
        "post-close:2026-11-25"]
    assert not tick(postclose_schedule, 2026, 11, 25, 13, 10).run_requests
    assert not tick(preopen_schedule, 2026, 11, 28, 9, 15).run_requests         # a Saturday


def _daily_loss_and_manual_trips(switch: KillSwitch) -> None:
    t = dt.datetime(2025, 6, 2, 19, 0, tzinfo=dt.UTC)
    switch.on_session_open(dt.date(2025, 6, 2), 1_000_000.0, t)
    switch.pre_trade_check([], positions={}, prices={}, equity=950_000.0, now=t, bar_ts=t,
                           session_date=dt.date(2025, 6, 2))
    switch.trip("operator: checking a fill", t)
    assert set(switch.status(t).state.trips) == {TripReason.DAILY_LOSS, TripReason.MANUAL}


def test_preopen_clears_only_the_daily_loss_and_the_reset_job_clears_a_manual_trip(trained):
    switch = KillSwitch()
    _daily_loss_and_manual_trips(switch)
    assert run_job("preopen_job", session_config("pre_open", "2025-06-03")).success
    state = switch.status(dt.datetime.now(dt.UTC)).state
    assert set(state.trips) == {TripReason.MANUAL}
    assert state.session_date == dt.date(2025, 6, 3)
    assert state.start_of_day_equity == PaperBroker().account().equity == get_cfg("broker.initial_cash")

    with pytest.raises(dg.DagsterInvalidConfigError):
        run_job("kill_switch_reset_job", {})                                     # a reset needs a reason
    assert run_job("kill_switch_reset_job",
                   {"ops": {"reset_kill_switch": {"config": {"reason": "fill checked with the broker"}}}}).success
    assert not switch.status(dt.datetime.now(dt.UTC)).state.trips
    log = LineageStore().read_sql(f'SELECT job, "check", reason, transition FROM {LOG_TABLE} ORDER BY ts')
    assert log["job"].tolist().count("preopen_job") >= 1
    reset = log[log["check"] == "reset"]
    assert reset["job"].tolist() == ["kill_switch_reset_job"]
    assert reset["reason"].iloc[0].startswith("fill checked with the broker (cleared: MANUAL)")
    assert "HALTED->ACTIVE" in log["transition"].tolist()


def test_preopen_fails_clearly_on_an_empty_registry_and_broken_market_data(monkeypatch):
    def down(self, bar):
        raise DataError("vendor returned HTTP 503")

    monkeypatch.setattr(MarketDataResource, "window", down)
    result = run_job("preopen_job", session_config("pre_open", "2025-06-03"), raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("pre_open").user_failure_data.description
    assert message.startswith("pre-open checks failed for 2025-06-03")
    assert "market data for the previous bar 2025-06-02T20:00Z: DataError: vendor returned HTTP 503" in message
    for target in {t for t, _ in wanted()}:
        assert f"no active model for target {target} (" in message
    assert "missing: no active version in the registry" in message
    # the daily state was still re-based: the session open does not wait for the models
    assert KillSwitch().status(dt.datetime.now(dt.UTC)).state.session_date == dt.date(2025, 6, 3)


def test_daily_report_has_the_sessions_numbers(trained, live_clock):
    keys = session_keys("2025-06-03", 4)
    live_clock(parse_bar_key(keys[0]) - pd.Timedelta(minutes=20))
    assert run_job("preopen_job", session_config("pre_open", "2025-06-03")).success
    for i, key in enumerate(keys):
        if i == 3:   # a fill the engine never recorded: bar 4 halts on the reconciliation mismatch
            PaperBroker().book_fill(Fill("outside-1", "outside", "S001", Side.BUY, 10.0, 100.0, 0.0,
                                         parse_bar_key(keys[2]).to_pydatetime()))
        live_clock(parse_bar_key(key))
        assert run_bar(key).success

    requests = tick(postclose_schedule, 2025, 6, 3, 16, 10).run_requests
    assert run_job("daily_report_job", requests[0].run_config).success

    out = resolve_path("paths.reports") / "daily"
    csv = pd.read_csv(out / "2025-06-03.csv")
    md = (out / "2025-06-03.md").read_text()
    store = LineageStore()
    pnl = store.read_sql("SELECT * FROM pnl WHERE account = 'live' ORDER BY bar")
    assert csv["bar"].tolist() == keys == pnl["bar"].tolist()
    for col in ("portfolio_value", "cash", "fees", "realised_cost", "est_cost", "daily_return"):
        assert csv[col].to_numpy() == pytest.approx(pnl[col].to_numpy(), rel=1e-9, abs=1e-9), col
    orders = store.read_sql("SELECT bar, count(*) n FROM executions GROUP BY bar")
    assert dict(zip(csv["bar"], csv["orders"], strict=True)) == {k: int(dict(zip(orders["bar"], orders["n"],
                                                                                   strict=True)).get(k, 0))
                                                                 for k in keys}
    fees, ret = pnl["fees"].sum(), pnl["daily_return"].iloc[-1]
    assert fees > 0
    cells = {m.group(1): m.group(2) for m in re.finditer(r"^\| (.+?) +\| (.+?) +\|$", md, re.M)}
    assert cells["fees"] == f"{fees:,.2f}" and cells["daily return"] == f"{ret * 100:.4f} %"
    assert cells["end portfolio value"] == f"{pnl['portfolio_value'].iloc[-1]:,.2f}"
    halted = csv.iloc[3]
    assert halted["ks_trips"] == 1 and halted["ks_transitions"] == 1
    assert halted["sent"] == 0 and halted["denied"] == halted["orders"]
    assert csv.iloc[:3][["ks_trips", "ks_transitions"]].to_numpy().sum() == 0
    assert "transition: ACTIVE->HALTED" in md and "reconciliation: TRIP" in md
    assert "session_open: INFO" in md                                 # the pre-open's re-base, from the log


def test_report_of_a_session_without_bars_says_so_and_a_holiday_is_refused():
    assert run_job("daily_report_job", session_config("daily_report", "2025-06-04")).success
    md = (resolve_path("paths.reports") / "daily" / "2025-06-04.md").read_text()
    assert "No bars recorded for session 2025-06-04." in md
    result = run_job("daily_report_job", session_config("daily_report", "2026-11-26"), raise_on_error=False)
    assert not result.success
    assert "2026-11-26 is not a XNYS trading session" in \
        result.failure_data_for_node("daily_report").user_failure_data.description

"""Kill switch: every limit trips in the same bar with the right state and reason; persistence;
fail closed on a corrupt state file; session-open reset; CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import subprocess
import sys

import pytest

from CONFIG.config_loader import PROJECT_ROOT
from dagster_project.commands import kill_switch as cli
from resources.brokers.paper import PaperBroker
from resources.brokers.protocol import OrderRequest, OrderStatus, Side
from resources.kill_switch.logic import (
    CheckResult,
    DenyReason,
    KillSwitch,
    KillSwitchState,
    TradingState,
    TripReason,
    load_state,
    on_session_open,
    pre_trade_check,
    record_broker_outcomes,
    reset,
    state_from_dict,
    state_to_dict,
    trip,
)
from resources.kill_switch.resource import KillSwitchResource
from tests.execution.conftest import SESSION, T0, make_quotes, next_bar

EQ = 1_000_000.0
PRICES = {"AAA": 100.0, "BBB": 50.0}


def order(cid: str, side: str, qty: float, symbol: str = "AAA") -> OrderRequest:
    return OrderRequest(cid, symbol, Side(side), qty, "bar")


def check(state, orders, limits, *, positions=None, prices=PRICES, equity=EQ, now=T0, bar_ts=T0,
          session=SESSION, recon=None) -> CheckResult:
    return pre_trade_check(state, orders, positions=positions or {}, prices=prices, equity=equity, now=now,
                           bar_ts=bar_ts, session_date=session, limits=limits, reconciliation_mismatch=recon)


def verdicts(result: CheckResult) -> list[tuple[str, str, str]]:
    return list(result.verdicts[["client_order_id", "verdict", "reason"]].itertuples(index=False, name=None))


def tripped(result: CheckResult) -> dict[str, str]:
    return {e.check: e.verdict for e in result.events if e.verdict in ("TRIP", "RECORD")}


def test_limits_come_from_config(limits):
    assert (limits.daily_loss_pct, limits.drawdown_pct, limits.gross_exposure_max, limits.max_order_notional,
            limits.max_orders_per_bar, limits.stale_bars, limits.broker_error_limit) == (
        0.02, 0.10, 1.0, 250_000.0, 200, 2, 3)


def test_all_clear_allows_and_records_every_check(opened, limits):
    res = check(opened, [order("a", "BUY", 100), order("b", "SELL", 10, "BBB")], limits)
    assert res.trading_state is TradingState.ACTIVE and not res.cancel_open_orders
    assert verdicts(res) == [("a", "ALLOW", ""), ("b", "ALLOW", "")]
    checks = [e.check for e in res.events]
    for name in ("stale_data", "daily_loss", "drawdown", "gross_exposure", "order_rate", "broker_errors"):
        assert checks.count(name) == 1
    assert checks.count("order") == 2
    row = res.events_frame().set_index("check").loc["daily_loss"]
    assert (row["value"], row["limit"], row["verdict"]) == (0.0, 0.02, "PASS")


def test_daily_loss_halts_same_bar_and_clears_at_next_session(opened, limits):
    # loss = 1 − 979,000 / 1,000,000 = 2.1 % > 2 %
    res = check(opened, [order("a", "BUY", 10)], limits, equity=979_000.0)
    assert res.trading_state is TradingState.HALTED and set(res.state.trips) == {TripReason.DAILY_LOSS}
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)]
    assert res.cancel_open_orders
    assert [e.transition for e in res.events if e.transition] == ["ACTIVE->HALTED"]
    # still halted later that day, even if equity recovers
    assert check(res.state, [], limits, equity=EQ, now=T0 + dt.timedelta(minutes=5),
                 bar_ts=T0 + dt.timedelta(minutes=5)).trading_state is TradingState.HALTED
    # a pre-open launched again the same day (by hand, from the UI) clears nothing and re-bases nothing
    again = on_session_open(res.state, SESSION, 979_000.0, T0 + dt.timedelta(minutes=10), limits=limits)
    assert again.trading_state is TradingState.HALTED and set(again.state.trips) == {TripReason.DAILY_LOSS}
    assert again.state.start_of_day_equity == res.state.start_of_day_equity == EQ
    nxt = on_session_open(res.state, SESSION + dt.timedelta(days=1), 979_000.0, T0, limits=limits)
    assert nxt.trading_state is TradingState.ACTIVE and nxt.state.start_of_day_equity == 979_000.0
    # exactly 2 % is not over the limit
    assert check(opened, [], limits, equity=980_000.0).trading_state is TradingState.ACTIVE


def test_drawdown_halts_and_needs_manual_reset(limits):
    s = on_session_open(KillSwitchState(), SESSION, 1_200_000.0, T0, limits=limits).state
    s = on_session_open(s, SESSION + dt.timedelta(days=1), 1_050_000.0, T0, limits=limits).state
    assert s.high_water_mark == 1_200_000.0
    # drawdown = 1 − 1,070,000 / 1,200,000 = 10.8 % > 10 %; daily P&L is positive
    res = check(s, [order("a", "SELL", 1)], limits, equity=1_070_000.0, session=SESSION + dt.timedelta(days=1))
    assert tripped(res) == {"drawdown": "TRIP"} and res.trading_state is TradingState.HALTED
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)]
    later = on_session_open(res.state, SESSION + dt.timedelta(days=2), 1_070_000.0, T0, limits=limits)
    assert later.trading_state is TradingState.HALTED            # a new session does not clear it
    cleared = reset(later.state, "reviewed", T0, limits=limits, equity=1_070_000.0)
    assert cleared.trading_state is TradingState.ACTIVE and cleared.state.high_water_mark == 1_070_000.0


def test_gross_exposure_goes_reducing_only_reducing_orders_pass(opened, limits):
    pos = {"AAA": 12_000.0, "BBB": -1_000.0}   # gross = 1.2M + 50k = 1.25M over 1M equity = 1.25 > 1.0
    orders = [order("add", "BUY", 10), order("cut", "SELL", 100), order("flip", "SELL", 13_000),
              order("new", "BUY", 10, "BBB"), order("cover", "BUY", 1_000, "BBB")]
    res = check(opened, orders, limits, positions=pos)
    assert tripped(res) == {"gross_exposure": "TRIP"} and res.trading_state is TradingState.REDUCING
    assert res.state.trips[TripReason.GROSS_EXPOSURE].value == pytest.approx(1.25)
    assert verdicts(res) == [("add", "DENY", "REDUCING"), ("cut", "ALLOW", ""), ("flip", "DENY", "REDUCING"),
                             ("new", "ALLOW", ""), ("cover", "DENY", "REDUCING")]
    # "new" buys 10 BBB against a short of 1,000: it reduces; then "cover" (cumulative 1,010) would flip
    assert not res.cancel_open_orders


def test_max_order_notional_denies_only_that_order(opened, limits):
    res = check(opened, [order("fat", "BUY", 3_000), order("ok", "BUY", 100)], limits)  # 300k > 250k
    assert verdicts(res) == [("fat", "DENY", DenyReason.MAX_ORDER_NOTIONAL), ("ok", "ALLOW", "")]
    assert res.trading_state is TradingState.ACTIVE and res.state.trips == {}


def test_order_rate_halts(opened, limits):
    orders = [order(f"o{i}", "BUY", 1) for i in range(201)]
    res = check(opened, orders, limits)
    assert tripped(res) == {"order_rate": "TRIP"} and res.trading_state is TradingState.HALTED
    assert set(res.verdicts["reason"]) == {DenyReason.HALTED}


def test_stale_market_data_halts(opened, limits):
    ok = check(opened, [order("a", "BUY", 1)], limits, now=T0 + dt.timedelta(minutes=10))  # exactly 2 bars
    assert ok.trading_state is TradingState.ACTIVE
    res = check(opened, [order("a", "BUY", 1)], limits, now=T0 + dt.timedelta(minutes=11))  # 2.2 bars
    assert tripped(res) == {"stale_data": "TRIP"} and res.trading_state is TradingState.HALTED
    assert res.state.trips[TripReason.STALE_DATA].value == pytest.approx(2.2)


def test_consecutive_broker_errors_halt(opened, limits):
    res = record_broker_outcomes(opened, [False, False, True, False], T0, limits=limits)
    assert res.trading_state is TradingState.ACTIVE and res.state.consecutive_broker_errors == 1
    res = record_broker_outcomes(res.state, [False, False, True], T0, limits=limits)  # 1+2 = 3 reached
    assert res.trading_state is TradingState.HALTED and TripReason.BROKER_ERRORS in res.state.trips
    assert res.cancel_open_orders
    assert verdicts(check(res.state, [order("a", "BUY", 1)], limits)) == [("a", "DENY", "HALTED")]


@pytest.mark.parametrize(("action", "state"), [("halt", TradingState.HALTED),
                                               ("reducing", TradingState.REDUCING),
                                               ("record", TradingState.ACTIVE)])
def test_reconciliation_mismatch_action(opened, limits, action, state):
    lim = dataclasses.replace(limits, on_reconciliation_mismatch=action)
    res = check(opened, [order("a", "BUY", 1)], lim, recon=True)
    assert res.trading_state is state
    assert tripped(res) == {"reconciliation": "RECORD" if action == "record" else "TRIP"}
    assert check(opened, [], lim, recon=False).trading_state is TradingState.ACTIVE


def test_manual_trip_and_reset(opened, limits):
    res = trip(opened, "fat finger on the desk", T0, limits=limits)
    assert res.trading_state is TradingState.HALTED and res.state.trips[TripReason.MANUAL].detail
    reducing = trip(opened, "wind down", T0, limits=limits, target=TradingState.REDUCING)
    assert reducing.trading_state is TradingState.REDUCING
    with pytest.raises(ValueError):
        trip(opened, " ", T0, limits=limits)
    back = reset(res.state, "ok now", T0, limits=limits)
    assert back.trading_state is TradingState.ACTIVE
    assert [e.transition for e in back.events if e.transition] == ["HALTED->ACTIVE"]


def test_nan_equity_and_missing_price_fail_closed(opened, limits):
    res = check(opened, [order("a", "BUY", 1)], limits, equity=math.nan)
    assert res.trading_state is TradingState.HALTED
    assert {TripReason.DAILY_LOSS, TripReason.DRAWDOWN} <= set(res.state.trips)
    res = check(opened, [order("a", "BUY", 1, "ZZZ"), order("b", "BUY", math.nan)], limits)
    assert verdicts(res) == [("a", "DENY", "MISSING_PRICE"), ("b", "DENY", "INVALID_ORDER")]


def test_implicit_session_open_rebases_daily_loss(opened, limits):
    day2 = SESSION + dt.timedelta(days=1)
    res = check(opened, [], limits, equity=970_000.0, session=day2)
    assert res.trading_state is TradingState.ACTIVE and res.state.start_of_day_equity == 970_000.0
    assert any(e.check == "session_open" and "implicit" in e.reason for e in res.events)


# ---- persistence, fail closed, resource, CLI -------------------------------------------------------

def test_state_round_trips(opened, limits):
    s = trip(opened, "why", T0, limits=limits).state
    assert state_from_dict(json.loads(json.dumps(state_to_dict(s), default=str))) == s


def test_state_survives_a_new_process(configure, tmp_path):
    KillSwitch().trip("test trip", T0)
    assert KillSwitch().status(T0).trading_state is TradingState.HALTED          # a new object
    env = {**os.environ, "TRADEGRAPH__PATHS__KILL_SWITCH_STATE": str(tmp_path / "kill_switch.json")}
    out = subprocess.run([sys.executable, "-m", "dagster_project.commands.kill_switch", "status"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("kill switch: HALTED") and "test trip" in out.stdout


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "state": "ACTIVE"}',
                                     '{"version": 1, "state": "ACTIVE", "trips": {"MANUAL": {"state": "HALTED", '
                                     '"ts": "2025-06-02T14:00:00Z", "value": null, "limit": null, "detail": "x"}},'
                                     ' "session_date": null, "start_of_day_equity": null, "high_water_mark": null,'
                                     ' "consecutive_broker_errors": 0, "flatten_pending": false, '
                                     '"updated_at": null}'])
def test_corrupt_state_file_fails_closed(configure, tmp_path, content, capsys):
    path = tmp_path / "kill_switch.json"
    path.write_text(content)
    status = KillSwitch().status(T0)
    assert status.trading_state is TradingState.HALTED
    assert set(status.state.trips) == {TripReason.STATE_CORRUPT}
    assert "FAILING CLOSED" in status.events[0].reason and str(path) in status.events[0].reason
    res = KillSwitch().pre_trade_check([order("a", "BUY", 1)], positions={}, prices=PRICES, equity=EQ, now=T0,
                                       bar_ts=T0, session_date=SESSION)
    assert verdicts(res) == [("a", "DENY", "HALTED")]
    assert (tmp_path / "kill_switch.json.corrupt").read_text() == content      # evidence kept
    assert load_state(path, T0)[0].state is TradingState.HALTED                 # persisted, still halted
    assert cli.main(["reset", "--reason", "inspected the file"]) == 0
    assert "kill switch: ACTIVE" in capsys.readouterr().out
    assert KillSwitch().status(T0).trading_state is TradingState.ACTIVE


def test_cli_trip_status_reset(configure, capsys):
    assert cli.main(["trip", "--reason", "desk says stop", "--state", "REDUCING"]) == 0
    assert capsys.readouterr().out.startswith("kill switch: REDUCING")
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "MANUAL" in out and "desk says stop" in out
    assert cli.main(["reset", "--reason", "resolved"]) == 0
    assert capsys.readouterr().out.startswith("kill switch: ACTIVE")
    assert cli.main(["trip"]) == 2                              # a reason is required: one line, exit 2
    assert "Missing option '--reason'" in capsys.readouterr().err


def test_cli_account_and_state_file_before_or_after_the_subcommand(configure, tmp_path, capsys):
    """The README's `kill-switch init --account replay` and `kill-switch --account replay init` are the same."""
    after, before = tmp_path / "after.json", tmp_path / "before.json"
    assert cli.main(["init", "--account", "replay", "--state-file", str(after)]) == 0
    assert capsys.readouterr().out.startswith(f"kill switch: ACTIVE  ({after})")
    assert cli.main(["--account", "replay", "--state-file", str(before), "status"]) == 0
    out = capsys.readouterr().out       # the replay account was armed (its witness says so): a missing file fails closed
    assert out.startswith(f"kill switch: HALTED  ({before})") and "STATE_MISSING" in out
    assert cli.main(["--state-file", str(before), "status", "--state-file", str(after)]) == 0   # the later wins
    assert capsys.readouterr().out.startswith(f"kill switch: ACTIVE  ({after})")
    assert cli.main(["init", "--account", "paper"]) == 2


def test_halt_cancels_open_orders_and_flattens_once(configure, clock):
    configure(broker={"partial_remainder": "carry"}, kill_switch={"flatten_on_halt": True})
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    broker.submit(OrderRequest("long", "BBB", Side.BUY, 500, "b0"))
    broker.submit(OrderRequest("work", "AAA", Side.BUY, 250, "b0"))
    next_bar(broker, clock)                                            # 100 filled, 150 left working
    ks = KillSwitchResource()
    ks.on_session_open(SESSION, EQ, T0)
    ks.trip("stop everything", T0)
    clock.set(T0 + dt.timedelta(minutes=10))
    kw = dict(positions=broker.positions(), prices=PRICES, equity=EQ, now=clock(), bar_ts=clock(),
              session_date=SESSION)
    res = ks.pre_trade_check([OrderRequest("new", "AAA", Side.BUY, 1, "b1")], **kw)
    assert verdicts(res) == [("new", "DENY", "HALTED")]
    assert sorted(res.flatten_orders["symbol"]) == ["AAA", "BBB"] and res.flatten_orders["reduce_only"].all()
    answers = ks.enforce(res, broker)
    assert broker.order_status("work").status is OrderStatus.CANCELLED
    assert [a.status for a in answers[1:]] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    next_bar(broker, clock)                                            # the flatten orders fill at the next open
    assert broker.positions() == {}
    again = ks.pre_trade_check([], **{**kw, "positions": {"AAA": 1.0}})
    assert again.flatten_orders.empty                                  # flatten orders are sent once


@pytest.mark.parametrize("share, halted", [(0.0, True), (0.49, True), (0.5, False), (1.0, False),
                                           (float("nan"), True)])
def test_a_stalled_feed_trips_stale_data(opened, limits, share, halted):
    """Issue 10: with every file cut after 14:45 the 15:00 bar ran with every symbol missing and no STALE_DATA
    fired (the bar itself was on time). The share of the universe with a row is the evidence."""
    assert limits.min_fresh_share == 0.5
    res = pre_trade_check(opened, [order("a", "BUY", 10)], positions={}, prices=PRICES, equity=EQ, now=T0,
                          bar_ts=T0, session_date=SESSION, limits=limits, fresh_share=share)
    assert (res.trading_state is TradingState.HALTED) is halted
    assert (set(res.state.trips) == {TripReason.STALE_DATA}) is halted
    event = next(e for e in res.events if e.check == "fresh_rows")
    assert event.verdict == ("TRIP" if halted else "PASS") and event.limit == 0.5
    assert "of the universe has a row" in event.reason
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)] if halted else [("a", "ALLOW", "")]


def test_the_feed_check_is_skipped_without_evidence(opened, limits):
    res = check(opened, [], limits)
    assert "fresh_rows" not in [e.check for e in res.events] and res.trading_state is TradingState.ACTIVE


def test_the_kill_switch_commands_start_without_torch_or_dagster(tmp_path):
    """An operator halting trading must not wait for torch and Dagster to import (≈ 3 s of a 4 s start-up):
    ``tradegraph kill-switch init|trip|status|reset`` imports neither (``init`` asks the broker through
    ``resources.brokers.venues``, not its Dagster resource); ``train`` loads torch only when it is named."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from dagster_project.commands.cli import main; rc = main(sys.argv[1:]); "
            "print('loaded:', sorted(m for m in ('torch', 'dagster', 'lightgbm') if m in sys.modules)); sys.exit(rc)")
    env = {**os.environ, "TRADEGRAPH_HOME": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]

    def run(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=root)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run("kill-switch", "init", "--reason", "first start")   # asks the witnesses (lineage, the broker)
    assert "kill switch: ACTIVE" in first and first.rstrip().endswith("loaded: []"), first
    for argv in (("trip", "--reason", "desk says stop"), ("status",), ("reset", "--reason", "resolved")):
        assert run("kill-switch", *argv).rstrip().endswith("loaded: []"), argv
    assert "'torch'" in run("train", "--help").splitlines()[-1]

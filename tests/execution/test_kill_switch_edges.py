"""The kill switch at the exact edges of its limits, the gross exposure after the bar's orders, and failing
closed when its state file is missing (never armed, or armed and deleted).

Each edge test sits on the limit and one step past it, so flipping a comparison (≤ ↔ <, > ↔ ≥) fails it.
"""

from __future__ import annotations

import dataclasses

import pytest

from dagster_project.commands import kill_switch as cli
from resources.brokers.paper import PaperBroker
from resources.kill_switch.logic import (
    DenyReason,
    KillSwitch,
    KillSwitchError,
    TradingState,
    TripReason,
    pre_trade_check,
)
from resources.kill_switch.witness import armed_witness
from resources.lineage.records import LOG_TABLE
from resources.lineage.store import LineageStore
from tests.execution.conftest import SESSION, T0, make_quotes, next_bar
from tests.execution.test_kill_switch import EQ, order


def check(state, orders, limits, *, positions=None, prices=None, equity=EQ, pending=None, recon=None,
          mismatched=()):
    return pre_trade_check(state, orders, positions=positions or {}, prices=prices or {"AAA": 100.0},
                           equity=equity, now=T0, bar_ts=T0, session_date=SESSION, limits=limits,
                           reconciliation_mismatch=recon, pending=pending, mismatched=mismatched)


def verdicts(result) -> list[tuple[str, str, str]]:
    return list(result.verdicts[["client_order_id", "verdict", "reason"]].itertuples(index=False, name=None))


# ---- gross exposure after the bar's orders --------------------------------------------------------------

def test_fifteen_200k_orders_on_a_flat_book_stop_at_the_gross_limit(opened, limits):
    """Issue 11 §7: 15 × $200 k on a flat $1 M book used to pass (gross after the bar 3.0 vs a limit of 1.0).
    The first five take gross exactly to 1.0 (≤ passes); the other ten are denied."""
    symbols = [f"S{i:02d}" for i in range(15)]
    prices = dict.fromkeys(symbols, 100.0)
    orders = [order(f"o{i}", "BUY", 2_000, s) for i, s in enumerate(symbols)]
    res = check(opened, orders, limits, prices=prices)
    assert verdicts(res) == [(f"o{i}", "ALLOW", "") for i in range(5)] + [
        (f"o{i}", "DENY", DenyReason.GROSS_EXPOSURE) for i in range(5, 15)]
    event = next(e for e in res.events if e.check == "gross_after_orders")
    assert (event.value, event.limit, event.verdict) == (1.0, 1.0, "RECORD")
    assert res.trading_state is TradingState.ACTIVE                     # orders denied, no state change


def test_gross_after_orders_edge_one_share_over_is_denied(opened, limits):
    held = {"BBB": 16_000.0}                                  # 16,000 × 50 = 800 k held
    prices = {"AAA": 100.0, "BBB": 50.0}
    at = check(opened, [order("a", "BUY", 2_000)], limits, positions=held, prices=prices)   # 800 k + 200 k = 1.0
    assert verdicts(at) == [("a", "ALLOW", "")]
    over = check(opened, [order("a", "BUY", 2_001)], limits, positions=held, prices=prices)
    assert verdicts(over) == [("a", "DENY", DenyReason.GROSS_EXPOSURE)]


def test_reducing_orders_always_pass_and_free_room(opened, limits):
    held = {"AAA": 9_000.0}                                   # 900 k of AAA
    prices = {"AAA": 100.0, "BBB": 50.0}
    orders = [order("add", "BUY", 4_000, "BBB"), order("cut", "SELL", 2_000)]   # +200 k, −200 k → 900 k
    assert verdicts(check(opened, orders, limits, positions=held, prices=prices)) == [
        ("add", "ALLOW", ""), ("cut", "ALLOW", "")]
    alone = check(opened, [order("add", "BUY", 4_000, "BBB")], limits, positions=held, prices=prices)
    assert verdicts(alone) == [("add", "DENY", DenyReason.GROSS_EXPOSURE)]      # 1.1 M without the cut


def test_working_orders_count_in_the_gross_after_the_bar(opened, limits):
    """A BUY 8,000 still working counts: another BUY 2,001 would take gross over the limit."""
    res = check(opened, [order("more", "BUY", 2_001)], limits, pending={"AAA": 8_000.0})
    assert verdicts(res) == [("more", "DENY", DenyReason.GROSS_EXPOSURE)]
    assert verdicts(check(opened, [order("more", "BUY", 2_000)], limits, pending={"AAA": 8_000.0})) == [
        ("more", "ALLOW", "")]


# ---- the limits at their edges ------------------------------------------------------------------------

def test_book_gross_exactly_at_the_limit_does_not_trip(opened, limits):
    at = check(opened, [], limits, positions={"AAA": 10_000.0})               # 1,000,000 / 1,000,000 = 1.0
    assert at.trading_state is TradingState.ACTIVE
    over = check(opened, [], limits, positions={"AAA": 10_000.01})
    assert over.trading_state is TradingState.REDUCING and TripReason.GROSS_EXPOSURE in over.state.trips


def test_order_rate_exactly_at_the_limit_passes(opened, limits):
    prices = {f"S{i:03d}": 1.0 for i in range(201)}
    at = check(opened, [order(f"o{i}", "BUY", 1, f"S{i:03d}") for i in range(200)], limits, prices=prices)
    assert at.trading_state is TradingState.ACTIVE and (at.verdicts["verdict"] == "ALLOW").all()
    over = check(opened, [order(f"o{i}", "BUY", 1, f"S{i:03d}") for i in range(201)], limits, prices=prices)
    assert over.trading_state is TradingState.HALTED and TripReason.ORDER_RATE in over.state.trips


def test_max_order_notional_exactly_at_the_limit_passes(opened, limits):
    res = check(opened, [order("at", "BUY", 2_500), order("over", "BUY", 2_500.01, "BBB")], limits,
                prices={"AAA": 100.0, "BBB": 100.0})
    assert verdicts(res) == [("at", "ALLOW", ""), ("over", "DENY", DenyReason.MAX_ORDER_NOTIONAL)]


def test_reconciliation_trip_counts_and_names_every_mismatched_symbol(opened, limits):
    res = check(opened, [], limits, recon=3, mismatched=("S001", "S002", "S003"))
    event = next(e for e in res.events if e.check == "reconciliation")
    assert event.value == 3.0 and "3 symbol(s) mismatched (S001, S002, S003)" in event.reason
    assert res.state.trips[TripReason.RECONCILIATION_MISMATCH].value == 3.0
    clean = dataclasses.replace(limits, on_reconciliation_mismatch="halt")
    assert check(opened, [], clean, recon=0).trading_state is TradingState.ACTIVE


# ---- failing closed ---------------------------------------------------------------------------------

def test_a_never_armed_switch_denies_everything_and_is_not_armed_by_a_check(configure, tmp_path):
    path = tmp_path / "fresh.json"
    switch = KillSwitch(path)
    res = switch.pre_trade_check([order("a", "BUY", 1)], positions={}, prices={"AAA": 100.0}, equity=EQ, now=T0,
                                 bar_ts=T0, session_date=SESSION)
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)]
    assert set(res.state.trips) == {TripReason.NOT_ARMED} and not path.exists()   # still not armed
    assert not switch.is_armed()
    with pytest.raises(KillSwitchError, match="never armed"):
        switch.reset("try to skip init", T0)
    armed = switch.init(T0)
    assert armed.trading_state is TradingState.ACTIVE and path.exists()
    assert [e.transition for e in armed.events] == ["NOT_ARMED->ACTIVE"]
    again = switch.init(T0)                                  # already armed: unchanged
    assert again.events[-1].verdict == "SKIP" and again.trading_state is TradingState.ACTIVE


def test_a_deleted_state_file_with_a_witness_is_halted_state_missing(configure, tmp_path, clock):
    path = tmp_path / "kill_switch.json"
    broker = PaperBroker(quotes=make_quotes(), clock=clock)
    broker.submit(order("o1", "BUY", 10))
    next_bar(broker, clock)                                  # the account holds a position: a witness
    switch = KillSwitch(path, witness=armed_witness("live"))
    path.unlink()
    status = switch.status(T0)
    assert set(status.state.trips) == {TripReason.STATE_MISSING}
    assert "broker account holds 1 position(s)" in status.state.trips[TripReason.STATE_MISSING].detail
    res = switch.pre_trade_check([order("a", "SELL", 1)], positions={"AAA": 10.0}, prices={"AAA": 100.0},
                                 equity=EQ, now=T0, bar_ts=T0, session_date=SESSION)
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)] and path.exists()    # HALTED and persisted
    path.unlink()
    with pytest.raises(KillSwitchError, match="does not re-arm"):
        switch.init(T0)
    assert not path.exists()
    cleared = switch.reset("a person checked the account", T0)
    assert cleared.trading_state is TradingState.ACTIVE and path.exists()


def test_the_lineage_log_is_a_witness_and_the_cli_writes_it(configure, tmp_path, capsys):
    path = tmp_path / "kill_switch.json"
    path.unlink()
    assert cli.main(["init"]) == 0
    assert "NOT_ARMED->ACTIVE" in capsys.readouterr().out
    log = LineageStore().read_sql(f'SELECT account, job, "check" FROM {LOG_TABLE}')
    assert log.to_dict("records") == [{"account": "live", "job": "cli:kill-switch init", "check": "init"}]
    path.unlink()                                            # no position, no order: only the log remembers
    assert cli.main(["status"]) == 0
    assert "STATE_MISSING" in capsys.readouterr().out
    assert cli.main(["init"]) == 2                           # refused: one line, exit 2
    assert "does not re-arm" in capsys.readouterr().err
    assert cli.main(["--account", "replay", "init"]) == 0     # the replay account's own switch
    assert "NOT_ARMED->ACTIVE" in capsys.readouterr().out and (tmp_path / "kill_switch.replay.json").exists()
    assert LineageStore().read_sql(f"SELECT account FROM {LOG_TABLE}")["account"].tolist() == ["live", "replay"]


def test_replay_refuses_to_start_with_a_never_armed_switch(tg_home, capsys):
    from dagster_project.commands import cli as tradegraph
    from resources.kill_switch.resource import state_path_for

    state_path_for("replay").unlink()
    assert tradegraph.main(["replay", "--start", "2025-06-02", "--end", "2025-06-02", "--no-record"]) == 2
    err = capsys.readouterr().err
    assert "never armed" in err and "tradegraph kill-switch init --account replay" in err
    assert len(err.strip().splitlines()) == 1

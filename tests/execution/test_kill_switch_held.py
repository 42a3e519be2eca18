"""The replay's kill switch held in memory: the file switch's answers, bit for bit, and its file only on save.

A script of operations (session open, checks that allow, deny and trip, a NaN equity at a session's open that
the state file turns into null, broker errors, a manual trip, a reset, the next session) runs on a file switch and on a held
one: every result must be identical (``repr``), the held one must not touch its file before ``save``, and
after ``save`` the two state files must hold the same bytes. Loading fails closed as the file switch does.
"""

from __future__ import annotations

import datetime as dt
import math

from resources.kill_switch.logic import DenyReason, KillSwitch, TradingState, TripReason, load_state
from resources.kill_switch.memory import HeldKillSwitch
from tests.execution.conftest import SESSION, T0
from tests.execution.test_kill_switch import EQ, PRICES, order, verdicts

T = [T0 + dt.timedelta(minutes=5 * i) for i in range(8)]


def script(switch: KillSwitch) -> list:
    def check(orders, i, equity=EQ, positions=None, session=SESSION, **kw):
        return switch.pre_trade_check(orders, positions=positions or {}, prices=PRICES, equity=equity, now=T[i],
                                      bar_ts=T[i], session_date=session, **kw)

    out = [switch.on_session_open(SESSION, EQ, T[0]),
           check([order("a", "BUY", 100), order("b", "SELL", 10, "BBB")], 0),
           check([order("c", "BUY", 3000)], 1),                              # over max_order_notional: denied
           switch.record_broker_outcomes([True, False, False], T[1]),
           check([order("d", "BUY", 1)], 2, equity=math.nan),                # NaN equity: fails closed, trips
           switch.record_broker_outcomes([False], T[2]),                     # the third error: BROKER_ERRORS
           switch.status(T[2]),
           switch.reset("a person looked", T[3], equity=990_000.0),
           check([order("e", "BUY", 10)], 3, equity=990_000.0, reconciliation_mismatch=1, mismatched=["AAA"]),
           switch.trip("desk says stop", T[4], TradingState.REDUCING),
           check([order("f", "SELL", 5)], 4, positions={"AAA": 10.0}, equity=990_000.0),
           switch.reset("resume", T[5]),
           check([order("g", "BUY", 1)], 6, equity=math.nan, session=SESSION + dt.timedelta(days=1)),
           check([order("h", "BUY", 1)], 7, equity=990_000.0, session=SESSION + dt.timedelta(days=1))]
    return out


def test_a_held_switch_answers_as_the_file_switch_and_writes_the_same_file_on_save(configure, tmp_path):
    file_path, held_path = tmp_path / "file.json", tmp_path / "held.json"
    KillSwitch(file_path).init(T0)
    KillSwitch(held_path).init(T0)
    armed = held_path.read_bytes()
    on_file, held = KillSwitch(file_path), HeldKillSwitch(held_path)
    expected, got = script(on_file), script(held)
    assert [repr(r) for r in got] == [repr(r) for r in expected]
    assert {e.verdict for r in expected for e in r.events} >= {"TRIP", "PASS", "DENY", "ALLOW"}  # the script bites
    assert held_path.read_bytes() == armed                                    # nothing written before save
    held.save()
    assert held_path.read_bytes() == file_path.read_bytes()
    held.save()                                                              # nothing changed since: no write
    assert held_path.read_bytes() == file_path.read_bytes()


def test_an_operators_trip_while_held_is_kept_at_save(configure, tmp_path):
    path = tmp_path / "ks.json"
    KillSwitch(path).init(T0)
    held = HeldKillSwitch(path)
    held.on_session_open(SESSION, EQ, T0)
    KillSwitch(path).trip("stop the replay account", T[1])                   # the CLI, meanwhile
    held.record_broker_outcomes([True], T[2])
    held.save()
    state, _, how = load_state(path, T[3])
    assert how == "ok" and set(state.trips) == {TripReason.MANUAL} and state.session_date == SESSION


def test_a_missing_state_file_with_a_witness_is_halted_and_written_on_save(configure, tmp_path):
    path = tmp_path / "ks.json"
    held = HeldKillSwitch(path, witness=lambda: "1 position(s)")
    res = held.pre_trade_check([order("a", "BUY", 1)], positions={}, prices=PRICES, equity=EQ, now=T0, bar_ts=T0,
                               session_date=SESSION)
    assert verdicts(res) == [("a", "DENY", DenyReason.HALTED)] and not path.exists()
    assert res.events[0].check == "state_file" and held.is_armed()
    held.save()
    assert set(load_state(path, T0)[0].trips) == {TripReason.STATE_MISSING}


def test_a_corrupt_state_file_is_kept_aside_and_halts(configure, tmp_path):
    path = tmp_path / "ks.json"
    path.write_text("{not json")
    held = HeldKillSwitch(path)
    res = held.record_broker_outcomes([True], T0)
    assert res.trading_state is TradingState.HALTED and set(res.state.trips) == {TripReason.STATE_CORRUPT}
    assert (tmp_path / "ks.json.corrupt").read_text() == "{not json"
    held.save()
    assert set(load_state(path, T0)[0].trips) == {TripReason.STATE_CORRUPT}


def test_a_never_armed_held_switch_denies_and_stays_unarmed(configure, tmp_path):
    path = tmp_path / "ks.json"
    held = HeldKillSwitch(path)
    for i in range(2):                                                      # asked again each time, as on file
        res = held.pre_trade_check([order("a", "BUY", 1)], positions={}, prices=PRICES, equity=EQ, now=T[i],
                                   bar_ts=T[i], session_date=SESSION)
        assert set(res.state.trips) == {TripReason.NOT_ARMED} and res.events[0].check == "state_file"
    held.save()
    assert not path.exists() and not held.is_armed()
    assert held.init(T0).trading_state is TradingState.ACTIVE and path.exists()   # init arms it, on file
    assert held.record_broker_outcomes([True], T[1]).trading_state is TradingState.ACTIVE
    assert held.init(T[2]).events[-1].verdict == "SKIP"                      # held: already armed

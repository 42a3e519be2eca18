import dagster as dg
import pandas as pd
import pytest

from dagster_project.sensor_logic import decide
from resources.market.calendar import get_calendar


def T(s):
    return pd.Timestamp(s, tz="UTC")


def test_one_run_per_new_bar_and_never_twice():
    cal = get_calendar()
    d = decide(T("2026-11-24 15:01"), None, cal)
    assert (d.bar, d.skipped) == ("2026-11-24T15:00Z", ())
    again = decide(T("2026-11-24 15:03"), d.bar, cal)
    assert again.bar is None and "already requested" in again.reason


def test_missed_bars_are_skipped_not_traded_late():
    d = decide(T("2026-11-24 15:16"), "2026-11-24T15:00Z", get_calendar())
    assert d.bar == "2026-11-24T15:15Z"
    assert d.skipped == ("2026-11-24T15:05Z", "2026-11-24T15:10Z")


def test_outside_market_hours_nothing_is_requested():
    cal = get_calendar()
    for now in ["2026-11-24 22:30", "2026-11-26 16:00", "2026-11-24 14:00", "2026-11-27 18:30"]:
        d = decide(T(now), None, cal)
        assert d.bar is None and "closed" in d.reason, now
    assert decide(T("2026-11-27 18:04"), None, cal).bar == "2026-11-27T18:00Z"  # half day's last bar


def test_sensor_evaluated_twice_for_the_same_bar_requests_one_run(monkeypatch, tg_home):
    from dagster_project import sensors
    from dagster_project.definitions import defs

    monkeypatch.setattr(sensors, "market_now", lambda: T("2026-11-24 15:01"))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, definitions=defs)
        first = sensors.bar_sensor.evaluate_tick(ctx)
        assert [r.run_key for r in first.run_requests] == ["2026-11-24T15:00Z"]
        assert first.run_requests[0].partition_key == "2026-11-24T15:00Z"
        ctx2 = dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)
        second = sensors.bar_sensor.evaluate_tick(ctx2)
        assert second.run_requests == [] and "already requested" in second.skip_message


@pytest.mark.parametrize(("now", "cursor", "bar"), [
    ("2026-11-24 21:00:05", "2026-11-24T20:55Z", "2026-11-24T21:00Z"),   # 16:00:05 New York: the closing bar
    ("2026-11-24 21:09:00", "2026-11-24T20:55Z", "2026-11-24T21:00Z"),   # 16:09, not yet requested
    ("2026-11-27 18:09:30", "2026-11-27T17:55Z", "2026-11-27T18:00Z"),   # a half day: 13:09:30
    ("2026-11-27 18:00:05", None, "2026-11-27T18:00Z"),
])
def test_after_the_close_only_the_closing_bar_is_requested_observe_only(now, cursor, bar):
    d = decide(T(now), cursor, get_calendar())
    assert (d.bar, d.observe_only, d.skipped) == (bar, True, ())
    again = decide(T(now), bar, get_calendar())                         # the same tick after the request
    assert again.bar is None and "already requested (the closing bar: market closed)" in again.reason


@pytest.mark.parametrize("now", ["2026-11-24 21:10:00", "2026-11-24 23:00:00", "2026-11-27 18:10:00",
                                 "2026-11-27 21:00:00", "2026-11-28 15:00:00"])
def test_nothing_is_requested_once_the_closing_bar_is_stale(now):
    for cursor in (None, "2026-11-24T20:55Z", "2026-11-27T18:00Z"):
        d = decide(T(now), cursor, get_calendar())
        assert d.bar is None and "closed" in d.reason


def test_a_regular_bar_is_not_observe_only():
    d = decide(T("2026-11-24 20:55:03"), "2026-11-24T20:50Z", get_calendar())
    assert (d.bar, d.observe_only) == ("2026-11-24T20:55Z", False)


def test_the_sensor_tags_the_closing_bar_observe_only(monkeypatch, tg_home):
    from dagster_project import sensors
    from dagster_project.definitions import defs
    from dagster_project.jobs import OBSERVE_ONLY_TAG

    monkeypatch.setattr(sensors, "market_now", lambda: T("2026-11-27 18:09:30"))
    with dg.instance_for_test() as instance:
        tick = sensors.bar_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                                        cursor="2026-11-27T17:55Z"))
        (request,) = tick.run_requests
        assert request.run_key == "2026-11-27T18:00Z" and request.tags[OBSERVE_ONLY_TAG] == "true"

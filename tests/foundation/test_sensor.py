import dagster as dg
import pandas as pd

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

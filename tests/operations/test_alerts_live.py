"""A refused live bar and a halted bar reach the alerting path (issue 14 item 1, issue 15): a hand launch in
live mode is a ``refused_bar`` alert sent by the run itself (its run failure is not alerted twice), and a bar
whose orders the kill switch denies is a ``halted_bar`` alert even when the switch was halted earlier (no
transition at that bar to alert)."""

from __future__ import annotations

import pytest

from CONFIG.config_loader import reset_config


@pytest.mark.slow
def test_a_hand_launch_and_a_halted_bar_are_alerted(trained, live_clock, sink, monkeypatch):
    import dagster as dg

    from dagster_project.monitoring import run_failure_alerts
    from resources.kill_switch.resource import KillSwitchResource
    from resources.market.calendar import parse_bar_key
    from resources.monitoring import alerts
    from tests.graph_helpers import run_bar, session_keys

    monkeypatch.setenv("TRADEGRAPH__ALERTS__URLS", f'["{sink.url()}"]')
    reset_config()
    keys = session_keys("2025-06-03", 5)[1:]
    for key in keys[:2]:
        live_clock(parse_bar_key(key))
        assert run_bar(key).success
    live_clock(parse_bar_key(keys[2]))
    with dg.instance_for_test() as instance:
        hand = run_bar(keys[2], instance=instance, signed=False, raise_on_error=False)
        assert not hand.success
        run_failure_alerts(dg.build_run_status_sensor_context(         # the daemon's view of the failed run
            sensor_name="run_failure_alerts", dagster_instance=instance, dagster_event=hand.get_run_failure_event(),
            dagster_run=instance.get_run_by_id(hand.run_id)).for_run_failure())
    KillSwitchResource().trip("operator: stop", parse_bar_key(keys[2]).to_pydatetime())
    live_clock(parse_bar_key(keys[3]))
    assert run_bar(keys[3]).success                                   # halted: observed, nothing sent
    assert alerts.SENDER.flush(10)
    titles = [m["title"] for m in sink.wait_for(2)]
    assert titles[0] == f"[tradegraph live] refused_bar: bar {keys[2]} refused: live run not launched by the sensor"
    assert titles[1].startswith(f"[tradegraph live] halted_bar: bar {keys[3]} halted: ")
    assert "launched by hand" in sink.received[0]["message"] and len(titles) == 2

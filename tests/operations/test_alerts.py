"""Alerts through apprise to a local HTTP endpoint: delivered, off by default, bounded, counted, never raised."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from resources.monitoring import alerts, bar_events, metrics
from tests.operations.conftest import samples


def _configure(monkeypatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(f"TRADEGRAPH__{key.upper().replace('.', '__')}", value)
    reset_config()


def _deliveries(kind: str, result: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.exporter_registry()).decode()
    return samples(text).get(f'tradegraph_alert_deliveries_total{{kind="{kind}",result="{result}"}}', 0.0)


HALT = alerts.Alert("kill_switch", "ACTIVE->HALTED", "kill switch ACTIVE->HALTED: daily loss", "failure", "live",
                    "2025-06-03T14:00Z")


def test_an_alert_reaches_a_json_webhook_with_its_title_body_and_severity(sink, monkeypatch):
    _configure(monkeypatch, **{"alerts.urls": f'["{sink.url()}"]'})
    assert alerts.send([HALT]).result(timeout=10) == ["sent"]
    (got,) = sink.wait_for(1)
    assert got["title"] == "[tradegraph live] kill_switch: ACTIVE->HALTED"
    assert got["message"] == "kill switch ACTIVE->HALTED: daily loss\nbar: 2025-06-03T14:00Z"
    assert got["type"] == "failure"
    assert _deliveries("kill_switch", "sent") == 1


def test_urls_from_an_apprise_config_file_are_used_and_not_recorded(sink, monkeypatch, tmp_path):
    secret = tmp_path / "alerts.txt"
    secret.write_text(sink.url("secret") + "\n")
    _configure(monkeypatch, **{"alerts.config_file": str(secret)})
    from CONFIG.config_loader import effective_config

    assert sink.url("secret") not in str(effective_config())  # the configuration (and lineage) only has the path
    assert alerts.send([HALT]).result(timeout=10) == ["sent"]
    assert len(sink.wait_for(1)) == 1


def test_alerts_are_off_by_default(sink):
    assert not alerts.configured()
    assert alerts.send([HALT]) is None
    time.sleep(0.2)
    assert sink.received == []


def test_a_slow_endpoint_never_makes_the_caller_wait_and_is_counted_as_a_timeout(sink, monkeypatch):
    sink.delay = 3.0
    _configure(monkeypatch, **{"alerts.urls": f'["{sink.url()}"]', "alerts.timeout_seconds": "0.5"})
    t0 = time.monotonic()
    future = alerts.send([HALT])
    assert time.monotonic() - t0 < 0.1           # queued, not delivered, by the caller
    assert future.result(timeout=10) == ["timeout"]
    assert time.monotonic() - t0 < 2.5           # the delivery itself gave up at its bound
    assert _deliveries("kill_switch", "timeout") == 1


def test_a_failing_endpoint_is_logged_and_counted_never_raised(sink, monkeypatch, caplog):
    sink.status = 500
    _configure(monkeypatch, **{"alerts.urls": f'["{sink.url()}"]'})
    assert alerts.send([HALT]).result(timeout=10) == ["failed"]
    assert _deliveries("kill_switch", "failed") == 1
    assert "not delivered: failed" in caplog.text


def test_an_unreachable_destination_is_a_failure_not_an_exception(monkeypatch):
    from tests.operations.conftest import free_port

    _configure(monkeypatch, **{"alerts.urls": f'["json://127.0.0.1:{free_port()}/x"]'})
    assert alerts.send([HALT]).result(timeout=10) == ["failed"]


# ---- what a bar's outputs raise (pure) ----------------------------------------------------------------

def test_kill_switch_transitions_become_one_alert_each_in_event_order():
    events = pd.DataFrame({"check": ["daily_loss", "order", "transition", "transition"],
                           "reason": ["", "", "daily loss 2.5% > 2%", "operator"],
                           "transition": [None, "", "ACTIVE->REDUCING", "REDUCING->HALTED"]})
    got = bar_events.kill_switch_alerts(events, "live", "B")
    assert [(a.title, a.severity, a.body) for a in got] == [
        ("ACTIVE->REDUCING", "warning", "kill switch ACTIVE->REDUCING: daily loss 2.5% > 2%"),
        ("REDUCING->HALTED", "failure", "kill switch REDUCING->HALTED: operator")]


def test_a_reconciliation_alert_lists_the_largest_differences_first():
    account = pd.DataFrame({"n_mismatched": [2]})
    positions = pd.DataFrame({"symbol": ["S001", "S002", "S003"], "qty": [10.0, 5.0, 0.0],
                              "expected_qty": [0.0, 5.0, 3.0], "difference": [10.0, 0.0, -3.0]})
    (alert,) = bar_events.reconciliation_alert(account, positions, "live", "B")
    assert alert.title == "2 mismatched symbol(s)"
    assert alert.body == ("2 symbol(s) differ between the broker and the recorded fills:\n"
                          "S001: recorded 0, broker 10 (+10)\nS003: recorded 3, broker 0 (-3)")
    assert bar_events.reconciliation_alert(pd.DataFrame({"n_mismatched": [0]}), positions, "live", "B") == []


def test_only_live_bars_alert():
    refusal = {"executions_refusals": pd.DataFrame({"orders": [4], "reason": ["refused: not the live bar"]})}
    (alert,) = bar_events.step_alerts("executions", refusal, "live", "live", "B")
    assert (alert.kind, alert.title, alert.body) == ("refused_bar", "bar B refused (4 order(s) not sent)",
                                                    "refused: not the live bar")
    assert bar_events.step_alerts("executions", refusal, "replay", "replay", "B") == []
    assert bar_events.step_alerts("executions", refusal, "audit", "live", "B") == []


def test_an_alert_of_an_unknown_kind_is_a_bug_said_at_once():
    with pytest.raises(ValueError, match="alert kind 'nope'"):
        alerts.Alert("nope", "t", "b")


# ---- the sensors ---------------------------------------------------------------------------------------

def test_a_failed_run_is_alerted_and_counted(sink, monkeypatch):
    import dagster as dg

    from dagster_project.definitions import defs
    from dagster_project.monitoring import run_failure_alerts

    _configure(monkeypatch, **{"alerts.urls": f'["{sink.url()}"]'})
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("kill_switch_reset_job").execute_in_process(
        run_config={"ops": {"reset_kill_switch": {"config": {"reason": " "}}}}, instance=instance,
        raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
    run_failure_alerts(context)
    assert alerts.SENDER.flush(10)
    (got,) = sink.wait_for(1)
    assert got["title"] == f"[tradegraph live] run_failure: kill_switch_reset_job run {result.run_id[:8]} failed"
    assert f"run id: {result.run_id}" in got["message"] and got["type"] == "failure"
    from prometheus_client import generate_latest

    text = generate_latest(metrics.exporter_registry()).decode()
    assert samples(text)['tradegraph_run_failures_total{job="kill_switch_reset_job"}'] == 1


def test_a_trip_and_a_reset_from_the_cli_are_alerted_once_each_by_the_watcher(sink, monkeypatch):
    import dagster as dg

    from dagster_project.commands import cli
    from dagster_project.monitoring import kill_switch_watch

    _configure(monkeypatch, **{"alerts.urls": f'["{sink.url()}"]'})

    def tick() -> None:
        kill_switch_watch(dg.build_sensor_context())
        assert alerts.SENDER.flush(10)

    tick()                                                         # first look, ACTIVE: nothing to say
    assert cli.main(["kill-switch", "trip", "--reason", "operator: bad fills"]) == 0
    tick()
    tick()                                                         # unchanged: not again
    assert cli.main(["kill-switch", "reset", "--reason", "checked"]) == 0
    tick()
    got = sink.wait_for(2)
    assert [m["title"] for m in got] == ["[tradegraph live] kill_switch: ACTIVE->HALTED",
                                         "[tradegraph live] kill_switch: HALTED->ACTIVE"]
    assert "MANUAL: operator: bad fills" in got[0]["message"] and got[0]["type"] == "failure"

"""Truthful runs (issue 14 item 1, issue 15): the runs list tells traded, nothing to trade and refused apart;
a refused live bar is a failed check and a failed run, never a green one; checks that guard orders block
``executions``.

The sensor is ticked at market times (``build_sensor_context``) and its run requests are executed in process
with the request's tags, as the daemon would launch them.
"""

from __future__ import annotations

import dagster as dg

from CONFIG.config_loader import resolve_path
from resources.launch_proof import OUTCOME_TAG
from resources.market.calendar import parse_bar_key
from tests.execution.test_execution_assets import KEYS, broker_book, sql
from tests.execution.test_live_launch import check_evaluations
from tests.graph_helpers import run_bar


def launch(request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """What the daemon does with a sensor's run request (in process here)."""
    from dagster_project.definitions import defs

    return defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=request.partition_key, tags=request.tags, instance=instance, raise_on_error=False)


def test_the_sensor_over_bars_with_one_refused_shows_it_failed_not_green(trained, live_clock):
    """Bars 0–4 through the sensor; bar 3's run starts only after bar 4 has closed (a loaded machine), so it
    is refused as not the live bar: its run fails, its checks fail, its tag says refused; the others pass."""
    from dagster_project import sensors
    from dagster_project.definitions import defs

    runs: dict[str, tuple[dg.ExecuteInProcessResult, dict]] = {}
    cursor = None
    with dg.instance_for_test() as instance:
        for i, key in enumerate(KEYS[:5]):
            live_clock(parse_bar_key(key))
            tick = sensors.bar_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                                            cursor=cursor))
            cursor = tick.cursor
            if i == 3:                                     # the run starts after the next bar closed
                live_clock(parse_bar_key(KEYS[4]))
            (request,) = tick.run_requests
            result = launch(request, instance)
            runs[key] = (result, dict(instance.get_run_by_id(result.run_id).tags))
    outcomes = {k: tags[OUTCOME_TAG] for k, (_, tags) in runs.items()}
    assert outcomes[KEYS[3]] == "refused"
    assert {outcomes[k] for k in KEYS[:3]} <= {"traded", "nothing_to_trade"} and "traded" in outcomes.values()
    refused, _ = runs[KEYS[3]]
    assert not refused.success                                               # not a green run
    (reached,) = check_evaluations(refused, "reached_the_broker")
    assert not reached.passed and reached.severity == dg.AssetCheckSeverity.ERROR
    assert "not the live bar" in reached.metadata["refusal"].value
    (outcome,) = check_evaluations(refused, "bar_outcome")
    assert not outcome.passed and outcome.metadata["bar"].value == KEYS[3]
    for key in (*KEYS[:3], KEYS[4]):
        result, _ = runs[key]
        assert result.success, key
        assert all(e.passed for e in check_evaluations(result, "reached_the_broker")), key
    status = sql("SELECT status FROM runs WHERE run_id = ?", [refused.run_id])["status"].iloc[0]
    assert status.startswith("refused: ") and "not the live bar" in status
    assert sql("SELECT count(*) AS n FROM pnl WHERE bar = ?", [KEYS[3]])["n"].iloc[0] == 1  # still marked


def test_a_forced_cap_breach_stops_executions(trained, live_clock, monkeypatch):
    """``orders_within_caps`` is blocking: a breach at a bar with orders fails ``sized_orders`` after it is
    recorded, so ``executions`` never runs and nothing reaches the broker."""
    import assets.sized_orders.asset as sized_asset

    for key in KEYS[:2]:
        live_clock(parse_bar_key(key))
        assert run_bar(key).success
    monkeypatch.setattr(sized_asset, "cap_breaches", lambda *args: 1)
    live_clock(parse_bar_key(KEYS[2]))
    paper = resolve_path("paths.paper_broker_db")
    before = sorted(r[0] for r in broker_book(paper).get("paper_orders", []))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_bar(KEYS[2], instance=instance, raise_on_error=False)
        assert not result.success and instance.get_run_by_id(result.run_id).tags[OUTCOME_TAG] == "error"
    (check,) = check_evaluations(result, "orders_within_caps")
    assert not check.passed and check.blocking
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "sized_orders" in steps and "executions" not in steps and "pnl" not in steps
    assert sql("SELECT count(*) AS n FROM sized_orders WHERE bar = ? AND has_order", [KEYS[2]])["n"].iloc[0] > 0
    assert sorted(r[0] for r in broker_book(paper).get("paper_orders", [])) == before

"""Who may place an order (issue 15 items 1–2): only signed launches reach a broker in live mode, resources
are the deployment's, and a HALTED switch stays HALTED whatever a launch says.

Each test drives the real ``trading_job`` in process at the live bar (the market clock just after its close),
the way a UI or GraphQL launch would arrive (tags and run config chosen by the launcher), and checks the
paper broker file, the kill switch's state file and lineage.
"""

from __future__ import annotations

import os
import stat

import dagster as dg
import pytest

from CONFIG.config_loader import reset_config, resolve_path
from resources.kill_switch.logic import TradingState
from resources.kill_switch.resource import KillSwitchResource
from resources.launch_proof import (
    NONCE_TAG,
    OUTCOME_TAG,
    PROOF_TAG,
    LaunchSecretError,
    launch_secret,
    signed_tags,
)
from resources.market.calendar import parse_bar_key
from tests.execution.test_execution_assets import KEYS, broker_book, run_live, sql, state_bytes
from tests.graph_helpers import run_bar

BAR = KEYS[2]  # the first bar the small models trade


def run_tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return dict(instance.get_run_by_id(run_id).tags)


def check_evaluations(result: dg.ExecuteInProcessResult, name: str) -> list:
    """The run's evaluations of the asset check ``name`` (``AssetCheckEvaluation``: passed, severity, metadata)."""
    return [e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == name]


def orders_at_broker() -> list[str]:
    """The client ids of every order the paper venue ever received (settling fills changes rows, not ids)."""
    return sorted(r[0] for r in broker_book(resolve_path("paths.paper_broker_db")).get("paper_orders", []))


def test_a_hand_launch_in_live_mode_places_nothing_and_says_why(trained, live_clock):
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(BAR))
    before, switch = orders_at_broker(), state_bytes()
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_bar(BAR, instance=instance, signed=False, raise_on_error=False)
        assert not result.success                                              # a red run, not a green one
        assert run_tags(instance, result.run_id)[OUTCOME_TAG] == "refused"
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert [e.step_key for e in failure] == ["bars"]                        # refused at the first step
    assert orders_at_broker() == before and state_bytes() == switch              # no order; the switch not asked
    status = sql("SELECT status FROM runs WHERE run_id = ?", [result.run_id])["status"].iloc[0]
    assert status.startswith("refused: launched by hand") and "allow_manual_live_runs" in status
    refusal = sql("SELECT reason FROM executions_refusals WHERE run_id = ?", [result.run_id])["reason"].tolist()
    assert refusal == [status]
    assert sql("SELECT count(*) AS n FROM sized_orders WHERE bar = ?", [BAR])["n"].iloc[0] == 0  # nothing decided


@pytest.mark.parametrize("how", ["forged", "other_bar", "copied"])
def test_a_proof_a_launcher_can_see_or_make_is_refused(trained, live_clock, how):
    """A made-up proof, a proof of another bar, and a proof copied from the sensor's run (UI re-execution
    copies its tags) are all refused before any broker call."""
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(BAR))
    if how == "copied":
        first = run_bar(BAR)                                   # the sensor's run trades the bar …
        tags = {NONCE_TAG: first.dagster_run.tags[NONCE_TAG], PROOF_TAG: first.dagster_run.tags[PROOF_TAG]}
    elif how == "other_bar":
        tags = signed_tags(KEYS[1])
    else:
        tags = {NONCE_TAG: "a" * 32, PROOF_TAG: "0" * 64}
    before = orders_at_broker()
    result = run_bar(BAR, signed=False, raise_on_error=False, **tags)            # … a copy of it is refused
    assert not result.success
    assert orders_at_broker() == before
    status = sql("SELECT status FROM runs WHERE run_id = ?", [result.run_id])["status"].iloc[0]
    says = {"forged": "does not match", "other_bar": "does not match", "copied": "already used by run"}[how]
    assert status.startswith("refused: ") and says in status


def test_manual_live_runs_trade_only_when_the_configuration_allows_them(trained, live_clock, monkeypatch):
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(BAR))
    monkeypatch.setenv("TRADEGRAPH__ENGINE__ALLOW_MANUAL_LIVE_RUNS", "true")
    reset_config()
    before = len(orders_at_broker())
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_bar(BAR, instance=instance, signed=False)
        assert result.success and run_tags(instance, result.run_id)[OUTCOME_TAG] == "traded"
    assert len(orders_at_broker()) > before


PROTECTED = {
    "kill_switch": {"state_path": "/tmp/fresh_switch.json"},
    "broker": {"db_path": "/tmp/other_paper.duckdb"},
    "lineage": {"db_path": "/tmp/other_lineage.duckdb"},
    "lineage_io": {"db_path": "/tmp/other_lineage.duckdb"},
    "market": {"source": "files"},
}


@pytest.mark.parametrize("resource", sorted(PROTECTED))
def test_a_launch_that_sets_a_protected_resource_field_is_rejected_before_it_runs(tg_home, resource):
    from dagster_project.definitions import defs

    tags = signed_tags(KEYS[2])
    before = sorted(p.name for p in tg_home.rglob("*"))
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"resources:{resource}"):
        defs.resolve_job_def("trading_job").execute_in_process(
            partition_key=KEYS[2], tags=tags,
            run_config={"resources": {resource: {"config": PROTECTED[resource]}}})
    assert sorted(p.name for p in tg_home.rglob("*")) == before           # nothing ran, nothing was written


def test_a_halted_switch_stays_halted_whatever_the_launch_says(trained, live_clock):
    """Issue 15 §2: with the switch HALTED, a launch pointing the switch at a fresh file is rejected by
    Dagster's config validation; a signed live run, a hand launch and a replay-mode launch place no live
    order and leave the switch HALTED."""
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(BAR))
    KillSwitchResource().trip("operator: stop", parse_bar_key(BAR).to_pydatetime())
    before = orders_at_broker()
    from dagster_project.definitions import defs

    with pytest.raises(dg.DagsterInvalidConfigError):
        defs.resolve_job_def("trading_job").execute_in_process(
            partition_key=BAR, tags=signed_tags(BAR),
            run_config={"resources": {"kill_switch": {"config": {"state_path": str(resolve_path("paths.var_dir")
                                                                                   / "fresh.json")}}}})
    with dg.DagsterInstance.ephemeral() as instance:
        hand = run_bar(BAR, instance=instance, signed=False, raise_on_error=False)
        signed = run_bar(BAR, instance=instance, raise_on_error=False)
        assert not hand.success and run_tags(instance, hand.run_id)[OUTCOME_TAG] == "refused"
        assert run_tags(instance, signed.run_id)[OUTCOME_TAG] == "halted"
        check = check_evaluations(signed, "reached_the_broker")[0]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["outcome"].value == "halted"
    assert orders_at_broker() == before
    assert KillSwitchResource().status(parse_bar_key(BAR).to_pydatetime()).trading_state is TradingState.HALTED
    denied = sql("SELECT verdict FROM executions WHERE run_id = ?", [signed.run_id])["verdict"].unique().tolist()
    assert denied in ([], ["DENY"])


def test_the_launch_secret_file_is_private_and_refused_when_others_can_read_it(tg_home, monkeypatch):
    monkeypatch.delenv("TRADEGRAPH_LAUNCH_SECRET", raising=False)
    key = launch_secret()
    path = resolve_path("paths.launch_secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert launch_secret() == key                                          # made once, then read
    os.chmod(path, 0o644)
    with pytest.raises(LaunchSecretError, match="chmod 600"):
        launch_secret()

"""The record of trading is append-only (issue 15 §3) and a run's status is what happened (SPEC §7)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from assets.bars.asset import bars
from dagster_project.definitions import defs
from resources.launch_proof import signed_tags
from resources.lineage.io_manager import own_rows, write_table
from resources.lineage.run_status import fail_dead_runs, record_process, this_process
from resources.lineage.store import LineageLocked, LineageStore

BAR = "2025-06-03T14:00Z"


def fills(*ids: str, run: str) -> pd.DataFrame:
    return pd.DataFrame({"fill_id": list(ids), "quantity": [1.0] * len(ids), "account": "live", "run_id": run})


def test_a_rerun_appends_and_never_replaces_or_repeats_a_fill(tg_home):
    store = LineageStore()
    with store.connect() as con:
        write_table(store, con, "positions_fills", {BAR: fills("f1", run="r1")})
        write_table(store, con, "executions", {BAR: pd.DataFrame({"client_order_id": ["o1"], "status": ["ACCEPTED"],
                                                                  "run_id": "r1"})})
        # the rerun: its own view of the order, and fills of which f1 is known already (in the other table)
        write_table(store, con, "executions", {BAR: pd.DataFrame({"client_order_id": ["o1"], "status": ["FILLED"],
                                                                  "run_id": "r2"})})
        write_table(store, con, "executions_fills", {BAR: fills("f1", "f2", "f2", run="r2")})
        write_table(store, con, "executions_fills", {BAR: fills("f2", "f3", run="r3")})
    execs = store.read_partition("executions", BAR)
    assert execs[["client_order_id", "status", "run_id"]].values.tolist() == [["o1", "ACCEPTED", "r1"],
                                                                             ["o1", "FILLED", "r2"]]
    assert store.read_partition("executions_fills", BAR)["fill_id"].tolist() == ["f2", "f3"]
    assert store.read_sql("SELECT _row FROM executions ORDER BY _row")["_row"].tolist() == [0, 1]


def test_a_run_appends_only_its_own_rows():
    kept = pd.DataFrame({"client_order_id": ["o1", "o2"], "run_id": ["r1", "r2"]})
    assert own_rows("executions", kept, "r2")["client_order_id"].tolist() == ["o2"]
    assert own_rows("executions", kept.drop(columns="run_id"), "r3")["run_id"].tolist() == ["r3", "r3"]


def test_a_running_row_whose_process_is_gone_is_recorded_as_failed(tg_home):
    store = LineageStore()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, pid, _ = this_process()
    with store.connect() as con:
        for run_id, run_pid in (("killed", dead.pid), ("alive", pid)):
            store.upsert_run(con, run_id=run_id, bar=BAR, mode="live", status="running",
                             started_at=dt.datetime.now(dt.UTC))
            con.execute("INSERT INTO runs_process VALUES (?, ?, ?, ?, ?)",
                        [run_id, host, run_pid, this_process()[2] if run_pid == pid else "", dt.datetime.now(dt.UTC)])
        record_process(store, con, "alive")                     # executing in this process: alive
        store.upsert_run(con, run_id="elsewhere", bar=BAR, mode="live", status="running")
        dead_runs = fail_dead_runs(store, con, "me", lambda run_id: run_id == "elsewhere")
    assert sorted(dead_runs) == ["elsewhere", "killed"]
    status = store.read_sql("SELECT run_id, status FROM runs ORDER BY run_id").set_index("run_id")["status"]
    assert status["alive"] == "running"
    assert status["killed"].startswith(f"failed: killed (its process {dead.pid} on {host} is gone; found by run me)")
    assert status["elsewhere"].startswith("failed: killed (the orchestrator reports it finished")


def test_a_failed_first_step_still_records_the_runs_mode(tg_home, monkeypatch):
    """Issue 11 §10: a run that loses the lineage lock in its first step left a runs row with no mode."""
    import assets.bars.asset as bars_asset

    def locked(*args, **kwargs):
        raise LineageLocked("lineage database is locked by another process")

    monkeypatch.setattr(bars_asset, "start_run", locked)
    result = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key="2026-11-24T15:00Z", tags={"tradegraph/mode": "live", **signed_tags("2026-11-24T15:00Z")}, raise_on_error=False)
    assert not result.success
    row = LineageStore().read_sql("SELECT * FROM runs WHERE run_id = ?", [result.run_id]).iloc[0]
    assert (row["mode"], row["status"]) == ("live", "failed: bars")
    assert len(row["config_hash"]) == 64 and row["code_version"]


@pytest.mark.parametrize("fail_at", [None, "features"])
def test_a_run_is_running_until_its_last_step_then_success(tg_home, monkeypatch, fail_at):
    seen = []
    import assets.features.asset as features_asset
    from assets.features.asset import features

    original = features_asset.features_for_window

    def spy(window):
        seen.append(LineageStore().read_sql("SELECT status FROM runs")["status"].tolist())
        if fail_at == "features":
            raise RuntimeError("boom")
        return original(window)

    monkeypatch.setattr(features_asset, "features_for_window", spy)
    job = dg.define_asset_job("two_steps", selection=["bars", "features"],
                              hooks=set(defs.resolve_job_def("trading_job").hook_defs))
    two = dg.Definitions(assets=[bars, features], jobs=[job], resources=defs.resources,
                         executor=dg.in_process_executor)
    result = two.resolve_job_def("two_steps").execute_in_process(partition_key="2026-11-24T15:00Z",
                                                                 raise_on_error=False)
    assert seen == [["running"]]                    # after the first step's success hook: still running
    final = LineageStore().read_sql("SELECT status FROM runs WHERE run_id = ?", [result.run_id])["status"].iloc[0]
    assert final == ("success" if fail_at is None else "failed: features")


def test_a_later_step_never_writes_running_over_a_recorded_failure(tg_home):
    """Found by an independent check: a failed ``positions`` step (e.g. the broker's account endpoint down)
    wrote ``failed: positions``, then ``predictions`` (which does not depend on it) added its model versions
    with ``running`` and the run stayed ``running`` forever."""
    from assets.asset_helpers import record_run

    store = LineageStore()
    record_run(store, "r1", "2026-11-24T15:00Z", "live", "running", start=True)
    record_run(store, "r1", "2026-11-24T15:00Z", "live", "failed: positions")
    record_run(store, "r1", "2026-11-24T15:00Z", "live", "running", model_versions="lgbm:v1")
    row = store.read_sql("SELECT status, model_versions, ended_at FROM runs WHERE run_id = 'r1'").iloc[0]
    assert (row["status"], row["model_versions"]) == ("failed: positions", "lgbm:v1")
    assert row["ended_at"] is not None and str(row["ended_at"]) != "NaT"


def test_the_audit_uses_the_configuration_of_the_run_that_recorded_the_decisions(tg_home):
    """Found by an independent check: after a rerun refused for another configuration (it records no
    decision), the audit took the refused run's configuration and reported 50 false differences."""
    from resources.lineage.records import recorded_run

    store, bar = LineageStore(), "2026-11-24T15:00Z"
    t0 = pd.Timestamp("2026-11-24T15:00:05Z")
    with store.connect() as con:
        for run_id, h, cfg, at in (("traded", "a" * 64, {"sizing": {"max_weight": 0.05}}, t0),
                                   ("refused", "b" * 64, {"sizing": {"max_weight": 0.04}}, t0 + pd.Timedelta("1min"))):
            store.record_config(con, h, cfg)
            store.upsert_run(con, run_id=run_id, bar=bar, mode="live", config_hash=h, model_versions=run_id,
                             started_at=at.to_pydatetime(), status="success" if run_id == "traded" else "refused: config")
        store.record_materializations(con, pd.DataFrame({
            "run_id": ["traded"], "asset": ["sized_orders"], "tbl": ["sized_orders"], "bar": [bar], "row_count": [3],
            "content_hash": ["x"], "upstream_hashes": ["{}"], "recorded_at": [t0]}))
    cfg, h, models = recorded_run(store, bar)
    assert (cfg, h, models) == ({"sizing": {"max_weight": 0.05}}, "a" * 64, "traded")

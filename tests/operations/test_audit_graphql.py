"""Audit in the UI (issue 14): ``audit_job`` launched through ``DagsterGraphQLClient`` against a webserver the
test starts (``make ui``'s launcher) gives its verdict in its asset checks: per audited asset identical or
differing rows per table, and a markdown summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import dagster as dg
import pytest

from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys
from tests.operations.conftest import free_port
from tests.operations.test_deployment import ROOT, _submit_when_loaded, _wait_for_status

CHECKS_QUERY = """
query AuditChecks($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events { __typename ... on AssetCheckEvaluationEvent {
        evaluation { checkName success assetKey { path } description
          metadataEntries { label __typename
            ... on MarkdownMetadataEntry { mdStr }
            ... on TextMetadataEntry { text }
            ... on IntMetadataEntry { intValue } } } } }
    }
  }
}"""

AUDITED = {"features", "predictions", "model_skill", "blended_alpha", "arbitrated_scores", "gated_signals",
           "sized_orders"}


@pytest.mark.slow
def test_audit_job_through_graphql_gives_its_verdict_in_checks(trained, live_clock, tg_home, tmp_path):
    import requests
    from dagster_graphql import DagsterGraphQLClient

    keys = session_keys("2025-06-03", 4)[1:]
    for key in keys:                                       # three live bars recorded by the engine
        live_clock(parse_bar_key(key))
        assert run_bar(key).success
    bar = keys[-1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEGRAPH__")}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), TRADEGRAPH_HOME=str(tg_home),
               TRADEGRAPH__PATHS__REGISTRY=str(trained), TRADEGRAPH__ORCHESTRATION__SENSOR_AUTOSTART="false")
    log_path = tmp_path / "dagster_dev.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.ui", "--wall-clock", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            audit = _submit_when_loaded(client, "audit_job", {"dagster/partition": bar}, proc, log_path)
            assert _wait_for_status(client, audit) == dg.DagsterRunStatus.SUCCESS, log_path.read_text()[-3000:]
            answer = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30,
                                   json={"query": CHECKS_QUERY, "variables": {"runId": audit}}).json()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    events = answer["data"]["logsForRun"]["events"]
    verdicts = {e["evaluation"]["assetKey"]["path"][-1]: e["evaluation"] for e in events
                if e["__typename"] == "AssetCheckEvaluationEvent"
                and e["evaluation"]["checkName"] == "audit_identical"}
    assert set(verdicts) == AUDITED
    assert all(v["success"] for v in verdicts.values()), {a: v["description"] for a, v in verdicts.items()}
    meta = {m["label"]: m for m in verdicts["sized_orders"]["metadataEntries"]}
    assert meta["sized_orders/verdict"]["text"] == "identical" and meta["sized_orders/differing_rows"]["intValue"] == 0
    assert meta["sized_orders/recorded_rows"]["intValue"] > 0
    summary = meta["summary"]["mdStr"]
    assert summary.startswith(f"### Audit of bar {bar}: identical") and "| sized_orders " in summary

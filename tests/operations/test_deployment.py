"""Past one machine: the Dagster instance on a real PostgreSQL server, and jobs launched through GraphQL.

The server is started by the test (``tests/operations/postgres_server.py``). What is not tested here: the
docker-compose file and a Docker or Kubernetes run launcher (no container engine on these machines).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from CONFIG.config_loader import ConfigError, reset_config
from dagster_project.instance import write_instance_yaml
from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys
from tests.operations.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _postgres_profile(monkeypatch, url: str) -> None:
    monkeypatch.setenv("TRADEGRAPH__INSTANCE__STORAGE", "postgres")
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    reset_config()


def test_the_instance_file_names_the_url_variable_never_the_url(monkeypatch, tmp_path):
    _postgres_profile(monkeypatch, "postgresql://u:s3cret@db:5432/dagster")
    text = write_instance_yaml(tmp_path).read_text()
    assert yaml.safe_load(text)["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert "s3cret" not in text
    monkeypatch.delenv("DAGSTER_PG_URL")
    with pytest.raises(ConfigError, match=r"instance.storage is postgres but \$DAGSTER_PG_URL is not set"):
        write_instance_yaml(tmp_path)
    monkeypatch.setenv("TRADEGRAPH__INSTANCE__STORAGE", "sqlite")
    reset_config()
    assert "storage" not in yaml.safe_load(write_instance_yaml(tmp_path).read_text())


@pytest.mark.slow
def test_a_trading_run_is_stored_on_the_postgres_server_and_read_back(postgres, trained, live_clock, monkeypatch,
                                                                      tmp_path):
    _postgres_profile(monkeypatch, postgres.dagster_url)
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    key = session_keys("2025-06-03", 1)[0]
    live_clock(parse_bar_key(key))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        run_id = run_bar(key, instance=instance).run_id
    with dg.DagsterInstance.from_config(str(home)) as instance:          # a new reader, e.g. another machine
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == key
        mats = instance.fetch_materializations(dg.AssetKey("executions"), limit=10).records
        assert [m.partition_key for m in mats] == [key]
    with psycopg2.connect(postgres.url) as con, con.cursor() as cur:   # on the server, not in a local file
        cur.execute("SELECT status FROM runs WHERE run_id = %s", [run_id])
        assert cur.fetchall() == [("SUCCESS",)]
    assert not list(home.rglob("*.db"))


CHECKS_QUERY = """
query RunChecks($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events { __typename ... on AssetCheckEvaluationEvent {
        evaluation { checkName success partition assetKey { path } } } }
    }
  }
}"""


def _wait_for_status(client, run_id: str, timeout: float = 180.0):
    from dagster_graphql import DagsterGraphQLClientError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = client.get_run_status(run_id)
        except DagsterGraphQLClientError:  # not visible yet
            status = None
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s (last status {status})")


def _submit_when_loaded(client, job: str, tags: dict, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> str:
    """Submit once the webserver answers and the code location has loaded (it takes a few seconds)."""
    from dagster_graphql import DagsterGraphQLClientError

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return client.submit_job_execution(job, tags=tags)
        except (DagsterGraphQLClientError, OSError, Exception) as exc:  # connection refused, location loading
            if time.monotonic() > deadline:
                raise AssertionError(f"could not submit {job}: {exc}\n{log.read_text()[-3000:]}") from exc
            time.sleep(1)


@pytest.mark.slow
def test_jobs_launched_through_graphql_on_a_postgres_instance(postgres, trained, tg_home, monkeypatch, tmp_path):
    """`make ui`'s launcher on the Postgres profile (webserver + daemon, queued runs): launch trading_job and
    audit_job with ``DagsterGraphQLClient``, read their status and the asset checks back over GraphQL."""
    import requests
    from dagster_graphql import DagsterGraphQLClient

    port = free_port()
    home = tmp_path / "dagster_home"
    env = dict(os.environ, DAGSTER_HOME=str(home), TRADEGRAPH_HOME=str(tg_home), TRADEGRAPH__PATHS__REGISTRY=str(trained),
               TRADEGRAPH__INSTANCE__STORAGE="postgres", DAGSTER_PG_URL=postgres.dagster_url)
    log_path = tmp_path / "dagster_dev.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.ui", "--wall-clock", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    bar = session_keys("2025-06-03", 3)[-1]
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        trade = _submit_when_loaded(client, "trading_job", {"dagster/partition": bar, "tradegraph/mode": "replay"},
                                    proc, log_path)
        assert _wait_for_status(client, trade) == dg.DagsterRunStatus.SUCCESS, log_path.read_text()[-3000:]
        audit = client.submit_job_execution("audit_job", tags={"dagster/partition": bar})
        assert _wait_for_status(client, audit) == dg.DagsterRunStatus.SUCCESS, log_path.read_text()[-3000:]
        answer = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30,
                               json={"query": CHECKS_QUERY, "variables": {"runId": trade}}).json()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    events = answer["data"]["logsForRun"]["events"]
    checks = {(e["evaluation"]["assetKey"]["path"][-1], e["evaluation"]["checkName"]): e["evaluation"]
              for e in events if e["__typename"] == "AssetCheckEvaluationEvent"}
    assert ("blended_alpha", "weights_on_simplex") in checks and len(checks) >= 4
    assert all(c["success"] for c in checks.values()), checks
    with psycopg2.connect(postgres.url) as con, con.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs WHERE run_id IN (%s, %s) ORDER BY run_id", [trade, audit])
        assert sorted(cur.fetchall()) == sorted([(trade, "SUCCESS"), (audit, "SUCCESS")])


def test_the_compose_file_publishes_on_loopback_only_and_names_files_that_exist():
    """Static checks of docker-compose.yaml (no container engine here); with docker-compose on the PATH, its
    own offline parser resolves the file too."""
    import shutil

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon", "metrics"}
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["host"] in services and f"-p {grpc['port']}" in " ".join(services["code"]["command"])
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            assert all((ROOT / src).exists() for src in line.split()[1:-1]), line
    if shutil.which("docker-compose"):
        done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
                              env=dict(os.environ, POSTGRES_PASSWORD="x"), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

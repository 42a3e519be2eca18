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

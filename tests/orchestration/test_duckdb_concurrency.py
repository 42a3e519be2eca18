"""The code location, the CLI and a run open the lineage file around each other: no deadlock, no lost write."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

from CONFIG.config_loader import reset_config
from resources.lineage.store import LineageStore

ROOT = Path(__file__).resolve().parents[2]


def test_loading_definitions_and_ticking_the_sensor_never_open_the_file(tg_home, monkeypatch):
    import dagster as dg

    from dagster_project import sensors
    from dagster_project.definitions import defs

    monkeypatch.setattr(sensors, "market_now", lambda: pd.Timestamp("2026-11-24 15:01", tz="UTC"))
    with dg.instance_for_test() as instance:
        sensors.bar_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert not LineageStore().path.exists()


def test_cli_reads_while_a_run_writes(trained, tg_home):
    script = textwrap.dedent("""
        import dagster as dg
        from resources.lineage.io_manager import MODE_TAG
        from dagster_project.definitions import defs
        from tests.graph_helpers import session_keys
        job = defs.resolve_job_def("trading_job")
        with dg.DagsterInstance.ephemeral() as inst:
            for key in session_keys("2025-06-03", 5):
                job.execute_in_process(partition_key=key, instance=inst, tags={MODE_TAG: "replay"},
                                       run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
        print("writer done", flush=True)
    """)
    env = dict(os.environ, TRADEGRAPH_HOME=str(tg_home), TRADEGRAPH__PATHS__REGISTRY=str(trained))
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    reset_config()
    store = LineageStore(retry_seconds=30)
    reads = 0
    while writer.poll() is None:
        if store.path.exists():
            store.read_sql("SELECT count(*) FROM materializations")  # a CLI-style read-only open, bounded wait
            reads += 1
        time.sleep(0.2)
    out = writer.stdout.read()
    assert writer.returncode == 0 and "writer done" in out, out[-2000:]
    assert reads > 3
    bars = store.read_sql("SELECT DISTINCT bar FROM pnl ORDER BY bar")["bar"].tolist()
    assert len(bars) == 5  # nothing lost while readers came and went
    per_bar = store.read_sql("SELECT bar, count(*) AS n FROM sized_orders GROUP BY bar")
    assert (per_bar["n"] == 50).all()

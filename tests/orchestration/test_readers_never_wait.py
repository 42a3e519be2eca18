"""Readers never wait for a run (issue 14 item 4), and two runs launched outside the queue both complete.

A run holds no connection between its writes: each step's output is one short read-write transaction, so a
read-only open waits at most one transaction. The runs here are made slow on purpose (the ``predictions``
step sleeps ``SLOW_S`` between its history read and its write): a reader must answer within ``BOUND_S``
while they run. When a run held the file for its whole length, every read during the sleep waited ≥ SLOW_S.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from CONFIG.config_loader import reset_config
from resources.lineage.store import LineageStore
from tests.graph_helpers import session_keys

ROOT = Path(__file__).resolve().parents[2]
SLOW_S = 3.0
BOUND_S = 1.5

RUNNER = textwrap.dedent("""
    import sys, time
    import dagster as dg
    import assets.predictions.asset as predictions_asset
    from dagster_project.definitions import defs
    from resources.lineage.io_manager import MODE_TAG

    real = predictions_asset.compute_predictions

    def slow(*args, **kwargs):
        out = real(*args, **kwargs)
        print("slow step", flush=True)
        time.sleep(float(sys.argv[1]))
        return out

    predictions_asset.compute_predictions = slow
    job = defs.resolve_job_def("trading_job")
    with dg.DagsterInstance.ephemeral() as inst:
        for key in sys.argv[2:]:
            result = job.execute_in_process(partition_key=key, instance=inst, tags={MODE_TAG: "replay"},
                                            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
            assert result.success
    print("writer done", flush=True)
""")


def _start(trained, tg_home, keys: list[str]) -> subprocess.Popen:
    env = dict(os.environ, TRADEGRAPH_HOME=str(tg_home), TRADEGRAPH__PATHS__REGISTRY=str(trained))
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(SLOW_S), *keys], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_reader_answers_within_a_bound_while_a_run_writes(trained, tg_home):
    keys = session_keys("2025-06-03", 2)
    writer = _start(trained, tg_home, keys)
    reset_config()
    store = LineageStore(retry_seconds=BOUND_S)  # a reader that gives up (LineageLocked) after BOUND_S
    waits = []
    while writer.poll() is None:
        if store.path.exists():
            t = time.perf_counter()
            store.read_sql("SELECT count(*) FROM materializations")
            waits.append(time.perf_counter() - t)
        time.sleep(0.1)
    out = writer.stdout.read()
    assert writer.returncode == 0 and "writer done" in out, out[-3000:]
    assert len(waits) > 2 * SLOW_S / 0.2, "the reader should have read many times during the slow steps"
    assert max(waits) < BOUND_S, max(waits)
    assert store.read_sql("SELECT count(DISTINCT bar) AS n FROM pnl")["n"].item() == len(keys)


def test_two_runs_outside_the_queue_both_complete(trained, tg_home):
    first, second = session_keys("2025-06-03", 2), session_keys("2025-06-04", 2)
    runs = [_start(trained, tg_home, first), _start(trained, tg_home, second)]
    outs = [r.communicate(timeout=600)[0] for r in runs]
    for run, out in zip(runs, outs, strict=True):
        assert run.returncode == 0 and "writer done" in out, out[-3000:]
    reset_config()
    store = LineageStore()
    bars = store.read_sql("SELECT DISTINCT bar FROM pnl ORDER BY bar")["bar"].tolist()
    assert bars == sorted(first + second)
    statuses = store.read_sql("SELECT DISTINCT status FROM runs WHERE mode <> 'audit'")["status"].tolist()
    assert statuses == ["success"], statuses

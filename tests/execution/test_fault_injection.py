"""kill -9 at random points of a live bar, 20 times (issue 11, "Done when").

Each trial runs a live bar in a process that SIGKILLs itself at a seeded random *event* (the entry or the
return of any call that writes: lineage writes, paper-broker transactions, the kill-switch state, runs rows;
see ``tests/execution/fault_worker.py``), then — one trial in three each — nothing, a retry of the bar while
it is still the live bar, or a late rerun once the clock has moved on; then the next bar runs normally.
After that next bar: no order was placed twice, every fill the broker booked is in lineage exactly once,
the expected book equals the broker's (no mismatch recorded), the P&L book equals the broker's account, and
the killed run is not left ``running`` (it is ``failed …``, or ``success`` if it had finished every step).

Small universe (10 symbols, the test registry's), one fork server so a trial does not pay Python's imports.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid

import duckdb
import pandas as pd
import pytest

from CONFIG.config_loader import PROJECT_ROOT, reset_config, resolve_path
from resources.brokers.paper import PaperBroker
from resources.market.calendar import parse_bar_key
from tests.execution.test_execution_assets import BUSY, assert_pnl_matches_broker, lineage_fills, sql
from tests.graph_helpers import session_keys

TRIALS = 20
SEED = 20251124


class Zygote:
    def __init__(self, env: dict[str, str], tmp) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.execution.fault_worker"], cwd=PROJECT_ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, bar: str, kill_at: int = 0) -> tuple[str, dict]:
        run_id = str(uuid.uuid4())
        log = self.tmp / f"{run_id}.log"
        command = {"bar": bar, "run_id": run_id, "kill_at": kill_at, "report": str(self.tmp / f"{run_id}.json"),
                   "log": str(log)}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if answer["exit"] == 0:
            log.unlink(missing_ok=True)
        else:
            answer["log"] = log.read_text()[-6000:]
        return run_id, answer

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def broker_orders() -> pd.DataFrame:
    with duckdb.connect(str(resolve_path("paths.paper_broker_db")), read_only=True) as con:
        return con.execute("SELECT client_order_id, bar_key, symbol FROM paper_orders").df()


def check_after(bar: str, killed: str) -> None:
    orders = broker_orders()
    engine = orders[~orders["client_order_id"].str.startswith("KS-")]
    assert not engine.duplicated(["bar_key", "symbol"]).any(), "an order was placed twice"
    broker_fills = sorted(f.fill_id for f in PaperBroker().fills_since())
    recorded = lineage_fills("live")
    assert recorded["fill_id"].is_unique and sorted(recorded["fill_id"]) == broker_fills, "fills lost to lineage"
    acct = sql("SELECT mismatch, n_mismatched FROM positions_account WHERE bar = ?", [bar]).iloc[0]
    assert not acct["mismatch"], f"{acct['n_mismatched']} symbol(s) differ from the broker"
    assert_pnl_matches_broker("live", bar)
    status = sql("SELECT status FROM runs WHERE run_id = ?", [killed])["status"].tolist()
    if status:
        assert status[0].startswith("failed") or (status[0] == "success" and len(sql(
            "SELECT 1 FROM materializations WHERE run_id = ? AND asset = 'pnl'", [killed]))), status
    assert not len(sql("SELECT 1 FROM runs WHERE status = 'running'"))


@pytest.mark.slow
def test_twenty_kill_9_trials_lose_nothing_and_place_nothing_twice(trained, live_clock, tmp_path, monkeypatch):
    for key, value in {**BUSY, "SIMULATOR__N_SYMBOLS": "10"}.items():
        monkeypatch.setenv(f"TRADEGRAPH__{key}", value)
    reset_config()
    live_clock(parse_bar_key(session_keys("2025-06-03", 1)[0]))       # writes the clock file the children read
    zygote = Zygote(dict(os.environ), tmp_path)
    keys = session_keys("2025-06-03")
    rng = random.Random(SEED)
    outcomes = []
    try:
        events = 0
        for key in keys[:2]:                                            # warm-up: the events of a whole bar
            live_clock(parse_bar_key(key))
            _, answer = zygote.run(key)
            assert answer["exit"] == 0, answer
            events = max(events, answer["events"])
        for trial in range(TRIALS):
            bar, nxt = keys[2 + 2 * trial], keys[3 + 2 * trial]
            live_clock(parse_bar_key(bar))
            kill_at = rng.randint(1, events)
            killed, answer = zygote.run(bar, kill_at)
            rerun = ("none", "retry", "late")[trial % 3]
            outcomes.append((bar, kill_at, answer["signal"], rerun))
            if rerun == "retry":
                retried = zygote.run(bar)[1]
                assert retried["exit"] == 0, (trial, kill_at, retried)
            live_clock(parse_bar_key(nxt))
            if rerun == "late":
                late = zygote.run(bar)[1]
                assert late["exit"] == 2, (trial, kill_at, late)       # refused (a failed run, by design)
            _, answer = zygote.run(nxt)
            assert answer["exit"] == 0, (trial, answer)
            check_after(nxt, killed)
    finally:
        zygote.close()
    killed_runs = [o for o in outcomes if o[2] == 9]
    assert len(killed_runs) >= TRIALS * 3 // 4, outcomes                # the kill points were inside the runs

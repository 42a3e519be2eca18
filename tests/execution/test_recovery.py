"""Crash between submit and recording, reconciliation, and one paper book seen by several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from assets.positions.logic import expected_positions, fills_frame, merge_fills, reconcile
from CONFIG.config_loader import PROJECT_ROOT
from resources.brokers.paper import PaperBroker
from resources.brokers.protocol import OrderRequest, OrderStatus, RejectReason, Side
from tests.execution.conftest import make_quotes, next_bar

REQ = OrderRequest("bar1-AAA-buy", "AAA", Side.BUY, 100, "2025-06-02T14:00:00Z")


def test_killed_between_submit_and_recording_books_exactly_once(broker, clock):
    recorded = fills_frame([])                 # the engine's own record of fills (lineage)
    assert broker.submit(REQ).status is OrderStatus.ACCEPTED
    next_bar(broker, clock)                    # the venue fills it at the next bar's open ...
    del broker                                 # ... and the process dies before recording the fill

    fresh = PaperBroker(quotes=make_quotes(), clock=clock)   # a new process, same file
    recon = reconcile(expected_positions(recorded), fresh.positions())
    assert recon.mismatch and recon.table.to_dict("records") == [
        {"symbol": "AAA", "expected": 0.0, "broker": 100.0, "difference": 100.0, "mismatch": True}]

    cursor = int(recorded["seq"].max()) if len(recorded) else 0
    recorded = merge_fills(recorded, fills_frame(fresh.fills_since(cursor)))
    assert len(recorded) == 1
    assert not reconcile(expected_positions(recorded), fresh.positions()).mismatch

    # the same fill reported again (a retry, an overlapping cursor) is booked once
    again = merge_fills(recorded, fills_frame(fresh.fills_since(0)))
    pd.testing.assert_frame_equal(again, recorded)
    # the rerun bar produces the same client_order_id: rejected as a duplicate, never placed twice
    assert fresh.submit(REQ).reason_code is RejectReason.DUPLICATE_CLIENT_ORDER_ID
    assert fresh.positions() == {"AAA": 100.0}


SCRIPT = textwrap.dedent("""
    import datetime as dt, json, sys
    from resources.brokers.paper import BarClock, PaperBroker
    from resources.brokers.protocol import OrderRequest, Side
    from tests.execution.conftest import T0, make_quotes
    cid, side, qty, minutes = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    broker = PaperBroker(quotes=make_quotes(), clock=BarClock(T0 + dt.timedelta(minutes=minutes)))
    broker.settle()                            # the bar's settlement fills the previous process's order
    seen = broker.positions()
    res = broker.submit(OrderRequest(cid, "AAA", Side(side), qty, f"bar{minutes}"))
    broker.clock = BarClock(T0 + dt.timedelta(minutes=minutes + 5))
    broker.settle()                            # and the next bar's fills this one
    acct = broker.account()
    print(json.dumps({"seen": seen, "status": res.status, "cash": acct.cash, "positions": acct.positions,
                      "fills": len(broker.fills_since())}))
""")


def _run(env, *args):
    out = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_processes_in_turn_see_one_paper_book(configure, tmp_path):
    db = tmp_path / "shared.duckdb"
    env = {**os.environ, "TRADEGRAPH__PATHS__PAPER_BROKER_DB": str(db),
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    first = _run(env, "p1-buy", "BUY", 100, 0)
    second = _run(env, "p2-sell", "SELL", 40, 10)
    assert first["seen"] == {} and first["positions"] == {"AAA": 100.0}
    assert second["seen"] == {"AAA": 100.0} and second["positions"] == {"AAA": 60.0} and second["fills"] == 2
    # and a third reader (this process) agrees with the last writer
    here = PaperBroker(db)
    assert here.positions() == {"AAA": 60.0}
    assert here.account().cash == pytest.approx(second["cash"], abs=0)
    # the first process's id is still taken for everyone
    assert _run(env, "p1-buy", "BUY", 100, 20)["status"] == "REJECTED"

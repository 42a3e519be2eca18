"""The execution layer through the real graph: who may reach a broker, crash retries, reconciliation,
the kill switch and P&L continuity, with real (small) trained models and the persistent paper broker.

Why through the graph and not the stage functions: the guarantees (audit sends nothing, a past bar never
trades, a retry never doubles an order, P&L carries across runs) come from how the assets, the IO manager
and the persistent stores work together; each run here is a fresh job execution that reloads its book.
Bars of 2025-06-03 from its second bar on (KEYS[2], 09:50 New York, is a bar on which the small models trade).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import get_cfg, reset_config, resolve_path
from dagster_project.definitions import defs
from resources.brokers.paper import PaperBroker
from resources.brokers.protocol import Fill, Side
from resources.kill_switch.logic import TradingState, TripReason
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys

AUDIT_REASON = "audit: no broker call is possible"
KEYS = session_keys("2025-06-03", 7)[1:]


def run_live(keys: list[str], live_clock) -> None:
    """Each bar as the live bar: the market clock just after its close."""
    for key in keys:
        live_clock(parse_bar_key(key))
        assert run_bar(key).success


def broker_book(path: Path) -> dict[str, list]:
    """Every table of a paper broker file (empty when the file was never created)."""
    if not path.exists():
        return {}
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("paper_account", "paper_orders", "paper_positions", "paper_fills")}


def sql(query: str, params: list | None = None) -> pd.DataFrame:
    return LineageStore().read_sql(query, params)


def state_bytes() -> bytes | None:
    path = resolve_path("paths.kill_switch_state")
    return path.read_bytes() if path.exists() else None


def assert_pnl_matches_broker(account: str, bar: str) -> None:
    """The engine's P&L book after ``bar`` equals the broker's account marked at the bar's closes."""
    row = sql("SELECT * FROM pnl WHERE account = ? AND bar = ?", [account, bar]).iloc[0]
    book = sql("SELECT symbol, quantity FROM pnl_book WHERE account = ? AND bar = ?", [account, bar])
    closes = sql("SELECT symbol, close FROM bars WHERE bar = ? AND status = 'ok'", [bar])
    db = resolve_path("paths.replay_broker_db" if account == "replay" else "paths.paper_broker_db")
    acct = PaperBroker(db).account(marks=dict(zip(closes["symbol"], closes["close"], strict=True)))
    assert dict(zip(book["symbol"], book["quantity"], strict=True)) == acct.positions
    assert row["cash"] == pytest.approx(acct.cash, abs=1e-6)
    assert abs(row["portfolio_value"] - acct.equity) <= 1e-6


def test_audit_and_a_refused_past_bar_send_nothing_lose_nothing_and_pnl_carries_on(trained, live_clock):
    run_live(KEYS[:3], live_clock)
    traded = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    fills = sql("SELECT * FROM executions_fills WHERE bar = ?", [KEYS[2]])
    assert len(traded) and (traded["status"] == "FILLED").any() and len(fills)
    paper = resolve_path("paths.paper_broker_db")
    book, switch = broker_book(paper), state_bytes()

    assert run_bar(KEYS[2], mode="audit").success
    audit = sql("SELECT * FROM audit__executions WHERE bar = ?", [KEYS[2]])
    assert audit["client_order_id"].tolist() == traded["client_order_id"].tolist()
    assert (audit["status"] == "NOT_SENT").all() and (audit["verdict"] == "NOT_SENT").all()
    assert (audit["verdict_reason"] == AUDIT_REASON).all()
    assert broker_book(paper) == book and state_bytes() == switch

    # the live bar is now later: rematerializing the traded bar in live mode is refused, and the record
    # of what it traded (its book, orders and fills) stays as it was
    live_clock(parse_bar_key(KEYS[3]))
    assert run_bar(KEYS[2]).success
    assert broker_book(paper) == book and state_bytes() == switch
    pd.testing.assert_frame_equal(sql("SELECT * FROM executions_fills WHERE bar = ?", [KEYS[2]]), fills)
    pd.testing.assert_frame_equal(sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]]), traded)
    refusal = sql("SELECT * FROM executions_refusals WHERE bar = ?", [KEYS[2]])
    assert len(refusal) == 1 and refusal["reason"].iloc[0].startswith(f"refused: {KEYS[2]} is not the live bar")

    # the next live bars see their expected book agree with the broker's, and P&L carries across every
    # run (each a new book load), the audit and the refused rerun included
    run_live(KEYS[3:], live_clock)
    assert not sql("SELECT mismatch FROM positions_account")["mismatch"].any()
    assert KillSwitchResource().status(parse_bar_key(KEYS[-1])).trading_state is TradingState.ACTIVE
    assert_pnl_continues("live", KEYS)


def assert_pnl_continues(account: str, keys: list[str]) -> None:
    """Bar over bar the P&L book adds up, and after the last bar it equals the broker's account."""
    pnl = sql("SELECT * FROM pnl WHERE account = ? ORDER BY bar", [account])
    assert pnl["bar"].tolist() == keys and pnl["n_fills"].sum() >= 3
    for prev, cur in zip(pnl.itertuples(), pnl.iloc[1:].itertuples(), strict=False):
        assert cur.pnl == pytest.approx(cur.portfolio_value - prev.portfolio_value, abs=1e-6)
        assert cur.fees_cum == pytest.approx(prev.fees_cum + cur.fees, abs=1e-9)
        assert cur.realised_pnl_cum == pytest.approx(prev.realised_pnl_cum + cur.realised_pnl, abs=1e-9)
    last = pnl.iloc[-1]
    initial = get_cfg("broker.initial_cash")
    assert last["portfolio_value"] == pytest.approx(
        initial + last["realised_pnl_cum"] - last["fees_cum"] + last["unrealised_pnl"], abs=1e-6)
    assert np.allclose(pnl["daily_return"], pnl["portfolio_value"] / initial - 1.0, atol=1e-12)
    fees = sql("SELECT sum(fee) f FROM executions_fills WHERE account = ?", [account])["f"].iloc[0]
    assert last["fees_cum"] == pytest.approx(fees, abs=1e-9)
    assert (sql("SELECT count(*) n FROM pnl_book WHERE account = ? AND bar = ?", [account, keys[-1]])["n"].iloc[0]
            > 0)                                            # positions are held at the end: marks matter
    assert_pnl_matches_broker(account, keys[-1])


def test_live_run_of_a_past_bar_sends_nothing_and_leaves_the_kill_switch_alone(trained, live_clock):
    run_live(KEYS[:2], live_clock)
    paper = resolve_path("paths.paper_broker_db")
    book, switch = broker_book(paper), state_bytes()
    live_clock(parse_bar_key(KEYS[3]))                     # the clock is past the bar we run
    result = run_bar(KEYS[2])
    assert result.success
    execs = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert len(execs) and (execs["status"] == "NOT_SENT").all()
    assert execs["verdict_reason"].str.startswith(f"refused: {KEYS[2]} is not the live bar").all()
    assert sql("SELECT count(*) n FROM executions_killswitch WHERE bar = ?", [KEYS[2]])["n"].iloc[0] == 0
    assert sql("SELECT reason FROM executions_refusals WHERE bar = ?", [KEYS[2]])["reason"].iloc[0] == \
        execs["verdict_reason"].iloc[0]
    assert broker_book(paper) == book and state_bytes() == switch
    meta = result.asset_materializations_for_node("executions")[0].metadata
    assert meta["refusal"].value.startswith("refused:") and meta["sent"].value == 0


def test_replay_trades_only_the_replay_account(trained):
    for key in KEYS[:3]:
        assert run_bar(key, mode="replay").success
    assert not resolve_path("paths.paper_broker_db").exists()
    replay = broker_book(resolve_path("paths.replay_broker_db"))
    fills = sql("SELECT * FROM executions_fills ORDER BY seq")
    assert len(fills) and (fills["account"] == "replay").all()
    assert sorted(r[0] for r in replay["paper_fills"]) == sorted(fills["fill_id"])
    sent = sql("SELECT client_order_id FROM executions WHERE status <> 'NOT_SENT'")["client_order_id"]
    assert sorted(r[0] for r in replay["paper_orders"]) == sorted(sent)
    assert set(sql("SELECT DISTINCT account FROM pnl")["account"]) == {"replay"}
    assert_pnl_matches_broker("replay", KEYS[2])


def test_retry_after_a_crash_in_executions_books_each_fill_once(trained, live_clock, monkeypatch):
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(KEYS[2]))
    paper = resolve_path("paths.paper_broker_db")
    before = broker_book(paper)
    original = PaperBroker.submit_many

    def submit_then_crash(self, requests):
        original(self, requests)
        raise RuntimeError("process killed after the broker took the order")

    monkeypatch.setattr(PaperBroker, "submit_many", submit_then_crash)
    crashed = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=KEYS[2], tags={MODE_TAG: "live"}, raise_on_error=False)
    assert not crashed.success
    monkeypatch.setattr(PaperBroker, "submit_many", original)
    after_crash = broker_book(paper)
    taken = len(after_crash["paper_orders"]) - len(before["paper_orders"])
    assert taken >= 1 and len(after_crash["paper_fills"]) - len(before["paper_fills"]) == taken
    assert sql("SELECT status FROM runs WHERE run_id = ?", [crashed.run_id])["status"].tolist() == [
        "failed: executions"]
    assert sql("SELECT count(*) AS n FROM executions_fills WHERE bar = ?", [KEYS[2]])["n"].iloc[0] == 0

    assert run_bar(KEYS[2]).success                    # the retry: same bar, still the live bar
    retried = broker_book(paper)
    # the order the broker took before the crash is looked up, never resubmitted; the bar's other orders
    # (not sent before the crash) are sent once now
    assert set(after_crash["paper_orders"]) <= set(retried["paper_orders"])
    assert set(after_crash["paper_fills"]) <= set(retried["paper_fills"])
    ids = [r[0] for r in retried["paper_orders"]]
    assert len(ids) == len(set(ids))
    execs = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert (execs["status"] == "FILLED").all() and (execs["verdict"] == "ALLOW").all()
    assert len(retried["paper_orders"]) - len(before["paper_orders"]) == len(execs) >= taken
    fills = sql("SELECT fill_id FROM executions_fills")
    assert sorted(fills["fill_id"]) == sorted(r[0] for r in retried["paper_fills"])  # each fill once
    acct = sql("SELECT * FROM positions_account WHERE bar = ?", [KEYS[2]]).iloc[0]
    assert not acct["mismatch"]
    assert KillSwitchResource().status(parse_bar_key(KEYS[2])).trading_state is TradingState.ACTIVE
    assert_pnl_matches_broker("live", KEYS[2])


@pytest.mark.parametrize("action, state", [("halt", TradingState.HALTED), ("record", TradingState.ACTIVE)])
def test_an_unrecorded_broker_fill_is_a_reconciliation_mismatch(trained, live_clock, monkeypatch, action, state):
    monkeypatch.setenv("TRADEGRAPH__KILL_SWITCH__ON_RECONCILIATION_MISMATCH", action)
    reset_config()
    ts = parse_bar_key(KEYS[0]).to_pydatetime()
    assert PaperBroker().book_fill(Fill("outside-1", "outside-order", "S001", Side.BUY, 10.0, 100.0, 0.0, ts))
    run_live(KEYS[:1], live_clock)
    acct = sql("SELECT * FROM positions_account WHERE bar = ?", [KEYS[0]]).iloc[0]
    assert acct["mismatch"] and acct["n_mismatched"] == 1
    row = sql("SELECT * FROM positions WHERE bar = ? AND symbol = 'S001'", [KEYS[0]]).iloc[0]
    assert (row["qty"], row["expected_qty"], row["difference"]) == (10.0, 0.0, 10.0)
    events = sql("SELECT * FROM executions_killswitch WHERE bar = ? AND \"check\" = 'reconciliation'", [KEYS[0]])
    assert events["verdict"].tolist() == ["TRIP" if action == "halt" else "RECORD"]
    status = KillSwitchResource().status(parse_bar_key(KEYS[0]))
    assert status.trading_state is state
    assert (TripReason.RECONCILIATION_MISMATCH in status.state.trips) == (action == "halt")


def test_a_halted_kill_switch_denies_every_order_of_the_next_bar(trained, live_clock):
    run_live(KEYS[:2], live_clock)
    KillSwitchResource().trip("operator: bad fills suspected", parse_bar_key(KEYS[1]).to_pydatetime())
    paper = resolve_path("paths.paper_broker_db")
    book = broker_book(paper)
    run_live(KEYS[2:3], live_clock)
    execs = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert len(execs) and (execs["verdict"] == "DENY").all() and (execs["verdict_reason"] == "HALTED").all()
    assert (execs["status"] == "NOT_SENT").all()
    assert broker_book(paper)["paper_orders"] == book["paper_orders"]
    events = sql("SELECT * FROM executions_killswitch WHERE bar = ?", [KEYS[2]])
    denied = events[events["check"] == "order"]
    assert sorted(denied["subject"]) == sorted(execs["client_order_id"]) and (denied["verdict"] == "DENY").all()
    assert {"stale_data", "daily_loss", "drawdown", "gross_exposure"} <= set(events["check"])
    assert KillSwitchResource().status(parse_bar_key(KEYS[2])).trading_state is TradingState.HALTED

"""The execution layer through the real graph: who may reach a broker, crash retries and recovery from the
broker's truth, reconciliation, the kill switch, append-only records and P&L continuity, with real (small)
trained models and the persistent paper broker.

Why through the graph and not the stage functions: the guarantees (audit sends nothing, a past bar never
trades, a retry never doubles an order, fills are never lost to lineage, P&L carries across runs) come from
how the assets, the IO manager and the persistent stores work together; each run here is a fresh job
execution that reloads its book. Bars of 2025-06-03 from its second bar on: the first orders appear at KEYS[2] (the sizer
needs a little history); they fill at the fourth bar's open.
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
from resources.launch_proof import signed_tags
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys

AUDIT_REASON = "audit: no broker call is possible"
KEYS = session_keys("2025-06-03", 8)[1:]  # from the second bar: KEYS[2] (09:50) is the first bar the small models trade


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


def lineage_fills(account: str = "live") -> pd.DataFrame:
    """Every fill lineage recorded for the account (both tables)."""
    have = set(LineageStore().tables())
    frames = [sql(f"SELECT fill_id, symbol, side, quantity, bar, '{t}' AS tbl FROM {t} WHERE account = ?",
                  [account]) for t in ("positions_fills", "executions_fills") if t in have]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["fill_id"])


def assert_lineage_equals_broker(account: str = "live") -> None:
    """Every broker fill is in lineage exactly once, and no fill is recorded that the broker lacks."""
    db = resolve_path("paths.replay_broker_db" if account == "replay" else "paths.paper_broker_db")
    broker_ids = sorted(f.fill_id for f in PaperBroker(db).fills_since())
    recorded = lineage_fills(account)
    assert recorded["fill_id"].is_unique
    assert sorted(recorded["fill_id"]) == broker_ids


def assert_pnl_matches_broker(account: str, bar: str) -> None:
    """The engine's P&L book after ``bar`` equals the broker's account marked at the bar's closes."""
    row = sql("SELECT * FROM pnl WHERE account = ? AND bar = ?", [account, bar]).iloc[0]
    book = sql("SELECT symbol, quantity FROM pnl_book WHERE account = ? AND bar = ?", [account, bar]) \
        if "pnl_book" in LineageStore().tables() else pd.DataFrame(columns=["symbol", "quantity"])
    closes = sql("SELECT symbol, close FROM bars WHERE bar = ? AND status = 'ok'", [bar])
    db = resolve_path("paths.replay_broker_db" if account == "replay" else "paths.paper_broker_db")
    acct = PaperBroker(db).account(marks=dict(zip(closes["symbol"], closes["close"], strict=True)))
    assert dict(zip(book["symbol"], book["quantity"], strict=True)) == acct.positions
    assert row["cash"] == pytest.approx(acct.cash, abs=1e-6)
    assert abs(row["portfolio_value"] - acct.equity) <= 1e-6


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
    fees = sum(sql(f"SELECT coalesce(sum(fee), 0) f FROM {t} WHERE account = ?", [account])["f"].iloc[0]
               for t in ("positions_fills", "executions_fills") if t in LineageStore().tables())
    assert last["fees_cum"] == pytest.approx(fees, abs=1e-9)
    assert (sql("SELECT count(*) n FROM pnl_book WHERE account = ? AND bar = ?", [account, keys[-1]])["n"].iloc[0]
            > 0)                                            # positions are held at the end: marks matter
    assert_pnl_matches_broker(account, keys[-1])


BUSY = {"SIZING__NO_TRADE_BAND": "0.0", "ARBITRATION__RESERVE_BASE_BPS": "0.0",
        "ARBITRATION__RESERVE_SPREAD_MULT": "0.0"}


@pytest.fixture
def busy(monkeypatch):
    """More orders per bar (no band, no reserve): the small test models make one or two otherwise."""
    for key, value in BUSY.items():
        monkeypatch.setenv(f"TRADEGRAPH__{key}", value)
    reset_config()


def test_orders_fill_at_the_next_bars_open_with_decision_price_and_slippage_recorded(trained, live_clock):
    run_live(KEYS[:4], live_clock)
    sent = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert len(sent) and (sent["status"] == "ACCEPTED").all()                 # nothing fills at the decision
    sized = sql("SELECT client_order_id, price FROM sized_orders WHERE bar = ? AND has_order", [KEYS[2]])
    assert dict(zip(sent["client_order_id"], sent["decision_price"], strict=True)) == dict(
        zip(sized["client_order_id"], sized["price"], strict=True))          # the decision price: the close
    fills = sql("SELECT * FROM positions_fills WHERE bar = ?", [KEYS[3]])
    assert sorted(set(fills["client_order_id"])) == sorted(sent["client_order_id"])
    assert (fills["source"] == "settled").all()
    bar3 = sql("SELECT symbol, open, bid, ask FROM bars WHERE bar = ?", [KEYS[3]]).set_index("symbol")
    opens = bar3.loc[fills["symbol"], "open"].to_numpy()
    assert np.array_equal(fills["mid"].to_numpy(), opens)                      # the reference: the fill bar's open
    sign = np.where(fills["side"] == "BUY", 1.0, -1.0)
    half = ((bar3["ask"] - bar3["bid"]) / 2).loc[fills["symbol"]].to_numpy()
    assert (sign * (fills["price"].to_numpy() - opens) > half - 1e-12).all()   # open + half spread + impact
    dp = fills["client_order_id"].map(dict(zip(sent["client_order_id"], sent["decision_price"], strict=True)))
    assert np.allclose(fills["slippage_bps"], sign * (fills["price"] - dp) / dp * 1e4, rtol=0, atol=1e-9)
    pnl = sql("SELECT * FROM pnl WHERE bar = ?", [KEYS[3]]).iloc[0]
    assert pnl["n_fills"] == len(fills)
    decided = float((dp * fills["quantity"]).sum())
    assert pnl["slippage_bps"] == pytest.approx(
        float((sign * (fills["price"] - dp) * fills["quantity"]).sum()) / decided * 1e4, rel=1e-12)
    assert_pnl_matches_broker("live", KEYS[3])


def test_audit_and_a_refused_past_bar_send_nothing_lose_nothing_and_pnl_carries_on(trained, live_clock):
    run_live(KEYS[:4], live_clock)
    traded = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert len(traded) and (traded["status"] == "ACCEPTED").all()
    fills = sql("SELECT * FROM positions_fills WHERE bar = ?", [KEYS[3]])
    assert len(fills)
    paper = resolve_path("paths.paper_broker_db")
    book, switch = broker_book(paper), state_bytes()

    assert run_bar(KEYS[2], mode="audit").success
    audit = sql("SELECT * FROM audit__executions WHERE bar = ?", [KEYS[2]])
    assert audit["client_order_id"].tolist() == traded["client_order_id"].tolist()
    assert (audit["status"] == "NOT_SENT").all() and (audit["verdict"] == "NOT_SENT").all()
    assert (audit["verdict_reason"] == AUDIT_REASON).all()
    assert broker_book(paper) == book and state_bytes() == switch

    # the live bar is now later: rematerializing the traded bar in live mode is refused; it records what the
    # broker says of its orders (FILLED by now) next to the first run's rows, which stay as they were
    live_clock(parse_bar_key(KEYS[4]))
    rerun = run_bar(KEYS[2], raise_on_error=False)
    assert not rerun.success                                                   # a refused bar is a failed run
    assert broker_book(paper) == book and state_bytes() == switch
    rows = sql("SELECT * FROM executions WHERE bar = ? ORDER BY _row", [KEYS[2]])
    first, second = rows[rows["run_id"] == traded["run_id"].iloc[0]], rows[rows["run_id"] == rerun.run_id]
    pd.testing.assert_frame_equal(first.reset_index(drop=True), traded)
    assert second["client_order_id"].tolist() == traded["client_order_id"].tolist()
    assert (second["status"] == "FILLED").all() and (second["verdict"] == "NOT_SENT").all()
    pd.testing.assert_frame_equal(sql("SELECT * FROM positions_fills WHERE bar = ?", [KEYS[3]]), fills)
    refusal = sql("SELECT * FROM executions_refusals WHERE bar = ?", [KEYS[2]])
    assert len(refusal) == 1 and refusal["reason"].iloc[0].startswith(f"refused: {KEYS[2]} is not the live bar")
    status = sql("SELECT status FROM runs WHERE run_id = ?", [rerun.run_id])["status"].iloc[0]
    assert status.startswith("refused: ")                                      # not a green success
    check = rerun.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in check if c.check_name == "reached_the_broker"] == [
        ("reached_the_broker", False)]

    # the next live bars see their expected book agree with the broker's, and P&L carries across every
    # run (each a new book load), the audit and the refused rerun included
    run_live(KEYS[4:], live_clock)
    assert not sql("SELECT mismatch FROM positions_account")["mismatch"].any()
    assert KillSwitchResource().status(parse_bar_key(KEYS[-1])).trading_state is TradingState.ACTIVE
    assert_lineage_equals_broker()
    assert_pnl_continues("live", KEYS)


def test_replay_trades_only_the_replay_account(trained):
    for key in KEYS[:4]:
        assert run_bar(key, mode="replay").success
    assert not resolve_path("paths.paper_broker_db").exists()
    replay = broker_book(resolve_path("paths.replay_broker_db"))
    fills = lineage_fills("replay")
    assert len(fills) and set(sql("SELECT DISTINCT account FROM positions_fills")["account"]) == {"replay"}
    assert sorted(r[0] for r in replay["paper_fills"]) == sorted(fills["fill_id"])
    sent = sql("SELECT client_order_id FROM executions WHERE status <> 'NOT_SENT'")["client_order_id"]
    assert sorted(r[0] for r in replay["paper_orders"]) == sorted(sent)
    assert set(sql("SELECT DISTINCT account FROM pnl")["account"]) == {"replay"}
    assert_pnl_matches_broker("replay", KEYS[3])


def crash_after_submits(monkeypatch, n_reached: int):
    """Let ``n_reached`` orders reach the broker, then die (as a killed process would) at the next submit."""
    original = PaperBroker.submit_many
    sent = []

    def submit_then_crash(self, requests):
        take = list(requests)[: max(0, n_reached - len(sent))]
        out = original(self, take) if take else []
        sent.extend(take)
        if len(sent) >= n_reached:
            raise RuntimeError(f"process killed after {len(sent)} order(s) reached the broker")
        return out

    monkeypatch.setattr(PaperBroker, "submit_many", submit_then_crash)
    return original


def test_retry_after_a_crash_in_executions_sends_each_order_once(trained, live_clock, monkeypatch):
    run_live(KEYS[:2], live_clock)
    live_clock(parse_bar_key(KEYS[2]))
    paper = resolve_path("paths.paper_broker_db")
    before = {r[0] for r in broker_book(paper).get("paper_orders", [])}     # earlier bars' orders, if any
    original = crash_after_submits(monkeypatch, 1)
    crashed = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=KEYS[2], tags={MODE_TAG: "live", **signed_tags(KEYS[2])}, raise_on_error=False)
    assert not crashed.success
    monkeypatch.setattr(PaperBroker, "submit_many", original)
    after_crash = broker_book(paper)
    new = [r for r in after_crash["paper_orders"] if r[0] not in before]
    assert len(new) == 1                                                        # one order reached the broker
    assert not [f for f in after_crash["paper_fills"] if f[1] == new[0][0]]     # and did not fill at its decision
    assert sql("SELECT status FROM runs WHERE run_id = ?", [crashed.run_id])["status"].tolist() == [
        "failed: executions"]

    assert run_bar(KEYS[2]).success                    # the retry: same bar, still the live bar
    execs = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[2]])
    assert (execs["status"] == "ACCEPTED").all() and (execs["verdict"] == "ALLOW").all()
    placed = [r for r in broker_book(paper)["paper_orders"] if r[0] not in before]
    assert len(placed) == len(execs)                                            # each order placed once
    assert new[0] in broker_book(paper)["paper_orders"]                         # the crashed run's, unchanged
    run_live(KEYS[3:4], live_clock)
    acct = sql("SELECT * FROM positions_account WHERE bar = ?", [KEYS[3]]).iloc[0]
    assert not acct["mismatch"] and acct["fills_taken_in"] == len(execs)
    assert KillSwitchResource().status(parse_bar_key(KEYS[3])).trading_state is TradingState.ACTIVE
    assert_lineage_equals_broker()
    assert_pnl_matches_broker("live", KEYS[3])


@pytest.mark.parametrize("rerun_late", [False, True])
def test_a_killed_run_loses_no_fill_and_trips_nothing(trained, busy, live_clock, monkeypatch, rerun_late):
    """Issue 11 §4: kill the run after 3 of its orders reached the broker. Not rerun (the sensor's path): the
    next bar takes the 3 fills in as recovered, the books agree, nothing trips, the killed run is failed.
    Rerun late: the refusal records the 3 orders as the broker has them, the rest NOT_SENT."""
    run_live(KEYS[:3], live_clock)
    live_clock(parse_bar_key(KEYS[3]))
    original = crash_after_submits(monkeypatch, 3)
    killed = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=KEYS[3], tags={MODE_TAG: "live", **signed_tags(KEYS[3])}, raise_on_error=False)
    monkeypatch.setattr(PaperBroker, "submit_many", original)
    intents = sql("SELECT client_order_id FROM sized_orders WHERE bar = ? AND has_order ORDER BY symbol",
                  [KEYS[3]])["client_order_id"].tolist()
    reached = sorted(r[0] for r in broker_book(resolve_path("paths.paper_broker_db"))["paper_orders"]
                     if r[0] in intents)
    assert len(intents) > 3 and len(reached) == 3
    assert sql("SELECT count(*) n FROM executions WHERE bar = ?", [KEYS[3]])["n"].iloc[0] == 0
    if rerun_late:
        live_clock(parse_bar_key(KEYS[4]))
        late = run_bar(KEYS[3], raise_on_error=False)
        assert not late.success                                                 # refused: not the live bar
        execs = sql("SELECT client_order_id, status FROM executions WHERE run_id = ?", [late.run_id])
        assert execs["client_order_id"].tolist() == intents
        assert execs["status"].tolist() == ["ACCEPTED" if c in reached else "NOT_SENT" for c in intents]
    run_live(KEYS[4:6], live_clock)
    taken = sql("SELECT * FROM positions_fills WHERE bar = ? AND client_order_id IN (SELECT unnest(?))",
                [KEYS[4], intents])
    assert sorted(taken["client_order_id"]) == reached
    # lineage knew them only as intents, unless the late rerun recorded what the broker said of them
    assert (taken["source"] == ("settled" if rerun_late else "recovered")).all()
    assert taken["decision_price"].notna().all()
    orders = sql("SELECT * FROM positions_orders WHERE bar = ?", [KEYS[4]])
    recovered = orders[orders["client_order_id"].isin(reached)]
    assert (recovered["status"] == "FILLED").all() and recovered["changed"].all()
    assert not sql("SELECT mismatch FROM positions_account WHERE bar > ?", [KEYS[3]])["mismatch"].any()
    assert KillSwitchResource().status(parse_bar_key(KEYS[5])).trading_state is TradingState.ACTIVE
    status = sql("SELECT status FROM runs WHERE run_id = ?", [killed.run_id])["status"].iloc[0]
    assert status.startswith("failed")
    assert_lineage_equals_broker()
    assert_pnl_matches_broker("live", KEYS[5])


def test_a_rerun_under_another_configuration_is_refused_and_loses_nothing(trained, live_clock, monkeypatch):
    """Issue 15 §3: after the sensor's run of a bar, a rerun of that live bar with another sizing config is
    refused before the kill switch is asked: nothing sent, no record replaced, visibly not a success."""
    run_live(KEYS[:3], live_clock)
    paper = resolve_path("paths.paper_broker_db")
    book, switch = broker_book(paper), state_bytes()
    before = {t: sql(f"SELECT * FROM {t} WHERE bar = ?", [KEYS[2]]) for t in ("executions", "sized_orders")}
    monkeypatch.setenv("TRADEGRAPH__SIZING__MAX_WEIGHT", "0.04")
    reset_config()
    rerun = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=KEYS[2], tags={MODE_TAG: "live", **signed_tags(KEYS[2])}, raise_on_error=False)
    assert not rerun.success
    assert broker_book(paper) == book and state_bytes() == switch
    for table, frame in before.items():
        pd.testing.assert_frame_equal(sql(f"SELECT * FROM {table} WHERE bar = ?", [KEYS[2]]), frame, obj=table)
    status = sql("SELECT mode, status FROM runs WHERE run_id = ?", [rerun.run_id]).iloc[0]
    assert status["mode"] == "live" and status["status"].startswith("refused: configuration")
    refusal = sql("SELECT * FROM executions_refusals WHERE bar = ?", [KEYS[2]])
    assert refusal["reason"].str.startswith("refused: configuration").tolist() == [True]
    monkeypatch.delenv("TRADEGRAPH__SIZING__MAX_WEIGHT")
    reset_config()
    run_live(KEYS[3:4], live_clock)
    assert not sql("SELECT mismatch FROM positions_account WHERE bar = ?", [KEYS[3]])["mismatch"].iloc[0]


@pytest.mark.parametrize("action, state", [("halt", TradingState.HALTED), ("record", TradingState.ACTIVE)])
def test_an_unrecorded_broker_fill_is_a_reconciliation_mismatch(trained, live_clock, monkeypatch, action, state):
    monkeypatch.setenv("TRADEGRAPH__KILL_SWITCH__ON_RECONCILIATION_MISMATCH", action)
    reset_config()
    ts = parse_bar_key(KEYS[0]).to_pydatetime()
    for i, sym in enumerate(("S001", "S002", "S003")):
        assert PaperBroker().book_fill(Fill(f"outside-{i}", "outside-order", sym, Side.BUY, 10.0, 100.0, 0.0, ts))
    run_live(KEYS[:1], live_clock)
    acct = sql("SELECT * FROM positions_account WHERE bar = ?", [KEYS[0]]).iloc[0]
    assert acct["mismatch"] and acct["n_mismatched"] == 3 and acct["foreign_fills"] == 3
    row = sql("SELECT * FROM positions WHERE bar = ? AND symbol = 'S001'", [KEYS[0]]).iloc[0]
    assert (row["qty"], row["expected_qty"], row["difference"]) == (10.0, 0.0, 10.0)
    assert len(sql("SELECT * FROM positions_foreign_fills WHERE bar = ?", [KEYS[0]])) == 3
    events = sql("SELECT * FROM executions_killswitch WHERE bar = ? AND \"check\" = 'reconciliation'", [KEYS[0]])
    assert events["verdict"].tolist() == ["TRIP" if action == "halt" else "RECORD"]
    assert events["value"].tolist() == [3.0]
    assert "3 symbol(s) mismatched (S001, S002, S003)" in events["reason"].iloc[0]   # not "1 mismatch(es)"
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
    assert [r[0] for r in broker_book(paper)["paper_orders"]] == [r[0] for r in book["paper_orders"]]
    events = sql("SELECT * FROM executions_killswitch WHERE bar = ?", [KEYS[2]])
    denied = events[events["check"] == "order"]
    assert sorted(denied["subject"]) == sorted(execs["client_order_id"]) and (denied["verdict"] == "DENY").all()
    assert {"stale_data", "daily_loss", "drawdown", "gross_exposure"} <= set(events["check"])
    assert KillSwitchResource().status(parse_bar_key(KEYS[2])).trading_state is TradingState.HALTED


@pytest.mark.parametrize("lost", ["state_file", "var_dir_but_the_account"])
def test_a_deleted_kill_switch_state_fails_closed(trained, busy, live_clock, lost):
    """Issue 11 §6: trip, delete the state file (or the whole var/ except the broker account), run a bar:
    HALTED / STATE_MISSING, nothing sent, recorded; never re-armed by the deletion; a reset re-arms it."""
    run_live(KEYS[:4], live_clock)
    KillSwitchResource().trip("operator", parse_bar_key(KEYS[3]).to_pydatetime())
    resolve_path("paths.kill_switch_state").unlink()
    if lost == "var_dir_but_the_account":
        resolve_path("paths.lineage_db").unlink()            # the account (paper DB) still holds positions
    paper = resolve_path("paths.paper_broker_db")
    orders = [r[0] for r in broker_book(paper)["paper_orders"]]
    run_live(KEYS[4:5], live_clock)
    if "executions" in LineageStore().tables():
        execs = sql("SELECT * FROM executions WHERE bar = ?", [KEYS[4]])
        assert (execs["status"] == "NOT_SENT").all() and (execs["verdict_reason"] == "HALTED").all()
    assert [r[0] for r in broker_book(paper)["paper_orders"]] == orders
    events = sql("SELECT * FROM executions_killswitch WHERE bar = ? AND \"check\" = 'state_file'", [KEYS[4]])
    assert events["reason"].str.contains("is missing but the switch was armed").all() and len(events) == 1
    status = KillSwitchResource().status(parse_bar_key(KEYS[4]))
    # (with the lineage file lost too, the engine's own fills are unknown to it: a mismatch trips as well)
    assert TripReason.STATE_MISSING in status.state.trips and resolve_path("paths.kill_switch_state").exists()
    with pytest.raises(Exception, match="does not re-arm"):
        resolve_path("paths.kill_switch_state").unlink()
        KillSwitchResource().init(parse_bar_key(KEYS[4]).to_pydatetime())
    KillSwitchResource().reset("state restored by hand", parse_bar_key(KEYS[4]).to_pydatetime())
    assert KillSwitchResource().status(parse_bar_key(KEYS[4])).trading_state is TradingState.ACTIVE


def test_pnl_starts_from_the_broker_when_lineage_is_lost(trained, busy, live_clock):
    """Issue 11 §8: the lineage file is lost while the broker holds positions: P&L continues from the
    broker's cash, positions and cost basis (recorded as such), not from the initial cash."""
    run_live(KEYS[:4], live_clock)
    resolve_path("paths.lineage_db").unlink()
    broker = PaperBroker().account()
    assert broker.positions and broker.cash != get_cfg("broker.initial_cash")
    run_live(KEYS[4:5], live_clock)
    assert PaperBroker().account().positions                  # still held at the bar's end: marks matter
    row = sql("SELECT * FROM pnl WHERE bar = ?", [KEYS[4]]).iloc[0]
    assert row["book_source"] == "broker" and row["cash"] == pytest.approx(PaperBroker().account().cash, abs=1e-6)
    book = sql("SELECT symbol, quantity, avg_cost FROM pnl_book WHERE bar = ?", [KEYS[4]]).set_index("symbol")
    acct = PaperBroker().account()
    assert book["quantity"].to_dict() == acct.positions
    assert book["avg_cost"].to_dict() == pytest.approx(acct.cost_basis)
    assert_pnl_matches_broker("live", KEYS[4])



def test_carried_remainders_are_worked_and_netted_never_piled_up(trained, busy, live_clock, monkeypatch):
    """Issue 11 §3: with ``partial_remainder: carry`` and a thin market, remainders stay working from bar to
    bar; sizing orders only the difference between the target and book + working orders."""
    monkeypatch.setenv("TRADEGRAPH__BROKER__PARTIAL_REMAINDER", "carry")
    monkeypatch.setenv("TRADEGRAPH__BROKER__PARTICIPATION_CAP", "0.0003")
    reset_config()
    run_live(KEYS[:6], live_clock)
    orders = sql("SELECT * FROM positions_orders")
    assert (orders["status"] == "PARTIALLY_FILLED").any() and (orders["prev_status"] == "PARTIALLY_FILLED").any()
    for bar in KEYS[1:6]:
        working = orders[(orders["bar"] == bar) & orders["status"].isin(["ACCEPTED", "PARTIALLY_FILLED"])]
        pending = (np.where(working["side"] == "BUY", 1.0, -1.0) * working["remaining"]).groupby(
            working["symbol"].to_numpy()).sum()
        sized = sql("SELECT * FROM sized_orders WHERE bar = ?", [bar]).set_index("symbol")
        np.testing.assert_array_equal(sized["pending_qty"].to_numpy(), pending.reindex(sized.index).fillna(0.0))
        held = sql("SELECT symbol, qty FROM positions WHERE bar = ?", [bar]).set_index("symbol")["qty"]
        net = held.reindex(sized.index).fillna(0.0) + sized["pending_qty"]
        pv = sql("SELECT portfolio_value FROM positions_account WHERE bar = ?", [bar])["portfolio_value"].iloc[0]
        plain = sized[sized["has_order"] & (sized["caps"] == "") & (sized["status"] == "order")]
        after = (net.reindex(plain.index) + plain["shares"]) * plain["price"] / pv
        # what is ordered brings book + working orders to the target (whole shares), never on top of them
        assert (np.abs(after - plain["w_target"]) <= plain["price"] / pv + 1e-12).all(), bar
    assert_lineage_equals_broker()

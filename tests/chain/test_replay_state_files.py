"""The replay's paper account and kill switch live in memory and reach their files with lineage.

Saved at each lineage flush (before it) and at the close; a bar that raises writes nothing more. So after a
crash the account, the switch and lineage agree (every fill the account holds is in lineage, the switch's last
write is the last flushed bar's), and the next replay goes on with no reconciliation mismatch.
"""

from __future__ import annotations

import pandas as pd
import pytest

from CONFIG.config_loader import reset_config, resolve_path
from dagster_project.commands import replay as replay_module
from dagster_project.commands.replay import ReplayEngine
from resources.brokers.paper import PaperBroker
from resources.kill_switch.logic import load_state
from resources.kill_switch.resource import state_path_for
from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from tests.conftest import arm_switches
from tests.graph_helpers import session_keys

KEYS = session_keys("2025-06-03")[-3:] + session_keys("2025-06-04", 3)


def lineage_fill_ids(keys: list[str]) -> set[str]:
    store = LineageStore()
    return {f for t in ("positions_fills", "executions_fills") for k in keys
            for f in store.read_partition(t, k, missing_ok=True).get("fill_id", pd.Series(dtype=object))}


@pytest.mark.slow
def test_a_bar_that_raises_leaves_account_switch_and_lineage_at_the_last_flush(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADEGRAPH__REPLAY__FLUSH_BARS", "2")
    reset_config()
    arm_switches()
    crash_at = KEYS[4]                      # flushed: KEYS[:4]; the crash comes after bar 5's orders were sent
    real_pnl = replay_module.compute_pnl

    def pnl_or_crash(*args):
        if engine.clock() == parse_bar_key(crash_at).to_pydatetime():
            raise RuntimeError("a bug in the P&L stage")
        return real_pnl(*args)

    monkeypatch.setattr(replay_module, "compute_pnl", pnl_or_crash)
    engine = ReplayEngine(prediction_cache=False)
    with pytest.raises(RuntimeError, match="a bug"):
        engine.run(KEYS)
    monkeypatch.setattr(replay_module, "compute_pnl", real_pnl)

    account = PaperBroker(resolve_path("paths.replay_broker_db"))
    assert account.fills_since() and {f.fill_id for f in account.fills_since()} == lineage_fill_ids(KEYS[:4])
    assert not [o for o in account.open_orders() if o.bar_key == crash_at]       # bar 5's orders never saved
    runs = LineageStore().read_sql("SELECT bar, status FROM runs ORDER BY bar")
    assert runs["bar"].tolist() == KEYS[:5]      # the bars recorded, then the bar where it stopped, then none
    assert set(runs["status"][:4]) == {"success"}
    assert runs["status"][4].startswith("failed: replay stopped at this bar (RuntimeError: a bug in the P&L stage)")
    state, _, how = load_state(state_path_for("replay"), parse_bar_key(KEYS[-1]).to_pydatetime())
    assert how == "ok" and state.updated_at == parse_bar_key(KEYS[3]).to_pydatetime()

    again = ReplayEngine(prediction_cache=False).run(KEYS, resume=True)   # the same period, resumed: it goes on
    assert again.bars == KEYS[4:]                                         # from the first bar not recorded
    store = LineageStore()
    for key in KEYS[4:]:
        acct = store.read_partition("positions_account", key)
        assert int(acct["n_mismatched"].iloc[0]) == 0, key
        assert set(store.read_partition("positions_fills", key, missing_ok=True).get("source", [])) <= {"settled"}
    closed = PaperBroker(resolve_path("paths.replay_broker_db"))
    assert {f.fill_id for f in closed.fills_since()} == lineage_fill_ids(KEYS)   # saved at the close


def test_a_period_the_replay_account_already_settled_is_refused_before_anything_moves(trained, tmp_path, monkeypatch):
    """Replaying bars into an account that traded through them would settle nothing before its last bar, fill
    the new orders late and meet the earlier replay's orders under the same ids: refused, nothing written."""
    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "home"))
    reset_config()
    arm_switches()
    ReplayEngine(prediction_cache=False).run(KEYS[:3])
    before = {f.fill_id for f in PaperBroker(resolve_path("paths.replay_broker_db")).fills_since()}
    runs = LineageStore().read_sql("SELECT count(*) AS n FROM runs")["n"][0]
    with pytest.raises(replay_module.AccountAhead, match="already traded through"):
        ReplayEngine(prediction_cache=False).run(KEYS[2:4])          # its first bar was settled
    assert {f.fill_id for f in PaperBroker(resolve_path("paths.replay_broker_db")).fills_since()} == before
    assert LineageStore().read_sql("SELECT count(*) AS n FROM runs")["n"][0] == runs
    assert ReplayEngine(prediction_cache=False).run(KEYS[:3], resume=True).bars == []   # nothing left to resume
    assert ReplayEngine(prediction_cache=False).run(KEYS[3:]).bars == KEYS[3:]   # the next bars go on


def test_a_ctrl_c_inside_a_flushs_lineage_write_keeps_the_account_at_the_last_flush(trained, tmp_path, monkeypatch):
    """Ctrl-C while a flush writes its lineage (the staging transaction rolls back): the account was not saved
    with those bars either (lineage commits first), so both stay at the last flush and the next replay finds
    lineage, account and switch at the same bar. (When the account was saved first, it was one flush ahead.)"""
    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADEGRAPH__REPLAY__FLUSH_BARS", "2")
    reset_config()
    arm_switches()
    real = replay_module.record_batch
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:   # the second flush (bars 3–4), inside its staging transaction
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_module, "record_batch", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        ReplayEngine(prediction_cache=False).run(KEYS)
    monkeypatch.setattr(replay_module, "record_batch", real)
    runs = LineageStore().read_sql("SELECT bar, status FROM runs ORDER BY bar")
    assert runs["bar"].tolist() == KEYS[:3]      # the bars recorded, then the bar where it stopped, then none
    assert set(runs["status"][:2]) == {"success"}
    assert runs["status"][2].startswith("failed: replay stopped at this bar (interrupted)")
    account = PaperBroker(resolve_path("paths.replay_broker_db"))
    assert {f.fill_id for f in account.fills_since()} == lineage_fill_ids(KEYS[:2])
    account.close()
    ReplayEngine(prediction_cache=False).run(KEYS, resume=True)
    store = LineageStore()
    for key in KEYS[2:]:
        acct = store.read_partition("positions_account", key)
        assert int(acct["n_mismatched"].iloc[0]) == 0 and int(acct["foreign_fills"].iloc[0]) == 0, key


def test_the_replay_command_says_when_its_kill_switch_is_not_active(trained, tmp_path, monkeypatch, capsys):
    import datetime as dt

    from dagster_project.commands.cli import main
    from resources.kill_switch.resource import switch_for

    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "home"))
    reset_config()
    arm_switches()
    switch_for("replay").trip("operator test", dt.datetime.now(dt.UTC))
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--start", "2025-06-04", "--end", "2025-06-04", "--no-prediction-cache"])
    assert exit_.value.code == 1
    assert "kill switch is HALTED" in capsys.readouterr().err


def test_a_second_replay_in_the_same_home_stops_before_loading_models(tmp_path, monkeypatch):
    """Another process holds the replay account (a replay running in this home): the engine refuses at once
    with AccountInUse — one line for the CLI — before any model is loaded, and leaves the account alone."""
    import subprocess
    import sys
    import textwrap

    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "home"))
    reset_config()
    path = resolve_path("paths.replay_broker_db")
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from resources.brokers.paper import PaperBroker
        broker = PaperBroker.in_memory({str(path)!r})
        print("holding", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"

        def no_models(*args, **kwargs):
            raise AssertionError("models loaded before the account was claimed")

        monkeypatch.setattr(replay_module, "load_models", no_models)
        with pytest.raises(replay_module.AccountInUse, match="in use by another process"):
            ReplayEngine(prediction_cache=False)
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0

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
    assert LineageStore().read_sql("SELECT DISTINCT bar FROM runs ORDER BY bar")["bar"].tolist() == KEYS[:4]
    state, _, how = load_state(state_path_for("replay"), parse_bar_key(KEYS[-1]).to_pydatetime())
    assert how == "ok" and state.updated_at == parse_bar_key(KEYS[3]).to_pydatetime()

    again = ReplayEngine(prediction_cache=False).run(KEYS[4:])                 # the next replay goes on
    assert again.bars == KEYS[4:]
    store = LineageStore()
    for key in KEYS[4:]:
        acct = store.read_partition("positions_account", key)
        assert int(acct["n_mismatched"].iloc[0]) == 0, key
        assert set(store.read_partition("positions_fills", key, missing_ok=True).get("source", [])) <= {"settled"}
    closed = PaperBroker(resolve_path("paths.replay_broker_db"))
    assert {f.fill_id for f in closed.fills_since()} == lineage_fill_ids(KEYS)   # saved at the close

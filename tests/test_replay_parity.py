"""Replay and the Dagster path are one code path: same bars, models, config → identical orders and fills."""

import dagster as dg
import pandas as pd

from CONFIG.config_loader import reset_config
from dagster_project.commands.replay import ORDER, UPSTREAM, ReplayEngine
from resources.lineage.store import LineageStore
from tests.graph_helpers import run_bar, session_keys

COMPARED = ["sized_orders", "executions", "executions_fills", "pnl", "predictions", "blended_alpha_weights"]


def _tables(keys):
    store = LineageStore()
    out = {}
    for t in COMPARED:
        out[t] = pd.concat([store.read_partition(t, k, missing_ok=True).assign(bar=k) for k in keys],
                           ignore_index=True)
    return out


def test_replay_equals_dagster_replay_mode(trained, tmp_path, monkeypatch):
    keys = session_keys("2025-06-03", 6)
    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "replay"))
    reset_config()
    result = ReplayEngine().run(keys)
    assert result.bars == keys and result.orders > 0 and result.fills > 0
    replayed = _tables(keys)

    monkeypatch.setenv("TRADEGRAPH_HOME", str(tmp_path / "dagster"))
    reset_config()
    with dg.instance_for_test() as instance:
        for key in keys:
            assert run_bar(key, mode="replay", instance=instance).success
    graphed = _tables(keys)
    assert len(replayed["sized_orders"]) == 6 * 50
    for table in COMPARED:
        pd.testing.assert_frame_equal(replayed[table], graphed[table], check_exact=True, obj=table)
    assert replayed["executions"]["status"].isin(["FILLED", "PARTIALLY_FILLED", "CANCELLED", "REJECTED"]).all()


def test_replay_upstream_map_matches_the_dagster_graph():
    from dagster_project.definitions import defs

    graph = defs.resolve_asset_graph()
    for asset in ORDER:
        parents = sorted(k.path[-1] for k in graph.get(dg.AssetKey(asset)).parent_keys)
        assert parents == sorted(UPSTREAM[asset]), asset

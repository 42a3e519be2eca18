"""The whole graph for a few live bars with real (small) trained models: every asset recorded."""

import dagster as dg

from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys


def test_three_live_bars_record_every_asset(trained, live_clock):
    keys = session_keys("2025-06-03", 3)
    with dg.instance_for_test() as instance:
        for key in keys:
            live_clock(parse_bar_key(key))
            assert run_bar(key, instance=instance).success
    store = LineageStore()
    assets = store.read_sql("SELECT DISTINCT asset FROM materializations WHERE bar = ?", [keys[-1]])["asset"]
    assert sorted(assets) == sorted(["bars", "features", "predictions", "model_skill", "blended_alpha",
                                     "positions", "arbitrated_scores", "gated_signals", "sized_orders",
                                     "executions", "pnl"])
    runs = store.read_sql("SELECT status FROM runs WHERE bar = ?", [keys[-1]])
    assert runs["status"].tolist() == ["success"]
    pnl = store.read_sql("SELECT portfolio_value FROM pnl ORDER BY bar")
    assert len(pnl) == 3 and (pnl["portfolio_value"] > 0).all()

"""A second replay that changes only sizing (or gating/arbitration) finds every model call in the prediction
cache: no inference, and every table identical to a replay without the cache (issue 12)."""

from __future__ import annotations

import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from dagster_project.commands.replay import SUMMARY_TABLES, ReplayEngine
from resources.lineage.store import LineageStore
from tests.conftest import arm_switches
from tests.graph_helpers import session_keys

KEYS = session_keys("2025-06-03")[-3:] + session_keys("2025-06-04", 3)
TABLES = ["predictions", "predictions_barrier", "sized_orders", "executions", "positions_fills", "pnl"]


def _replay(home, monkeypatch, cache, **kw):
    monkeypatch.setenv("TRADEGRAPH_HOME", str(home))
    reset_config()
    arm_switches()
    result = ReplayEngine(prediction_cache=cache, **kw).run(KEYS)
    store = LineageStore()
    tables = {t: pd.concat([store.read_partition(t, k, missing_ok=True).assign(bar=k) for k in KEYS],
                           ignore_index=True).drop(columns=["run_id"], errors="ignore") for t in TABLES}
    return result, tables, store


@pytest.mark.slow
def test_changed_sizing_skips_inference_and_changes_nothing_else(trained, tmp_path, monkeypatch):
    from assets.predictions.cache import PredictionCache

    cache_dir = tmp_path / "prediction_cache"
    first, _, _ = _replay(tmp_path / "a", monkeypatch, PredictionCache(cache_dir))
    assert first.cache_hits == 0 and first.cache_misses > 0
    monkeypatch.setenv("TRADEGRAPH__SIZING__NO_TRADE_BAND", "0.0")      # a sizing parameter only
    warm, cached, _ = _replay(tmp_path / "b", monkeypatch, PredictionCache(cache_dir))
    assert warm.cache_misses == 0 and warm.cache_hits == first.cache_misses
    cold, computed, _ = _replay(tmp_path / "c", monkeypatch, False)
    assert cold.cache_hits == cold.cache_misses == 0
    for table in TABLES:
        pd.testing.assert_frame_equal(cached[table], computed[table], check_exact=True, obj=table)


@pytest.mark.slow
def test_summary_lineage_writes_the_bar_level_record_only(trained, tmp_path, monkeypatch):
    full, tables, _ = _replay(tmp_path / "full", monkeypatch, False)
    summary, _, store = _replay(tmp_path / "summary", monkeypatch, False, lineage="summary")
    written = set(store.tables())
    assert {"pnl", "positions_account"} <= written and not written & {"predictions", "sized_orders", "bars"}
    assert {t for t in written if not t.startswith(("runs", "configs", "materializations", "market_bars"))} \
        <= SUMMARY_TABLES, written
    pnl = pd.concat([store.read_partition("pnl", k).assign(bar=k) for k in KEYS], ignore_index=True)
    pd.testing.assert_frame_equal(pnl.drop(columns=["run_id"], errors="ignore"), tables["pnl"], check_exact=True)
    assert (summary.orders, summary.fills) == (full.orders, full.fills)

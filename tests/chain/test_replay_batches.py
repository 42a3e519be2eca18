"""Replay prepares a batch of bars at once (issue 12); a batch that cannot be prepared falls back to bar by bar
with the reason kept, and trades exactly the same bars, orders and fills."""

from __future__ import annotations

import pandas as pd

from CONFIG.config_loader import reset_config
from dagster_project.commands.replay import ReplayEngine
from resources.lineage.store import LineageStore
from resources.market.resource import MarketDataResource
from tests.conftest import arm_switches
from tests.graph_helpers import session_keys

KEYS = session_keys("2025-06-03")[-2:] + session_keys("2025-06-04", 2)


def _replay(home, monkeypatch):
    monkeypatch.setenv("TRADEGRAPH_HOME", str(home))
    reset_config()
    arm_switches()
    result = ReplayEngine(prediction_cache=False).run(KEYS)
    store = LineageStore()
    sized = pd.concat([store.read_partition("sized_orders", k).assign(bar=k) for k in KEYS], ignore_index=True)
    return result, sized.drop(columns=["run_id"], errors="ignore")


def test_a_batch_that_fails_is_prepared_bar_by_bar_with_its_reason(trained, tmp_path, monkeypatch):
    calls = []
    original = MarketDataResource.windows

    def spy(self, bars):
        calls.append(len(bars))
        return original(self, bars)

    monkeypatch.setattr(MarketDataResource, "windows", spy)
    batched, sized = _replay(tmp_path / "a", monkeypatch)
    assert calls == [len(KEYS)] and batched.batch_fallbacks == []   # one read for the whole batch

    def refuse_batches(self, bars):
        if len(bars) > 1:
            raise ValueError("duplicated bar for S001")
        return original(self, bars)

    monkeypatch.setattr(MarketDataResource, "windows", refuse_batches)
    fallback, sized_fallback = _replay(tmp_path / "b", monkeypatch)
    assert len(fallback.batch_fallbacks) == 1 and "duplicated bar for S001" in fallback.batch_fallbacks[0]
    assert (fallback.orders, fallback.fills) == (batched.orders, batched.fills)
    pd.testing.assert_frame_equal(sized, sized_fallback, check_exact=True)

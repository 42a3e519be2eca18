"""The simulator serves a bar without re-simulating its history: a session simulated alone equals the same
session simulated in its chunk, bit for bit, and the chain of session opens is read from its cache."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import reset_config
from resources.market.simulator import MarketSimulator

SESSIONS = [dt.date(2025, 1, 2), dt.date(2025, 3, 14), dt.date(2025, 6, 2), dt.date(2025, 6, 3)]


@pytest.fixture
def small_universe(monkeypatch):
    monkeypatch.setenv("TRADEGRAPH__SIMULATOR__N_SYMBOLS", "20")
    reset_config()


def _frames(sim: MarketSimulator) -> list[pd.DataFrame]:
    return [sim.session_frame(d) for d in SESSIONS]


def test_session_alone_equals_session_in_its_chunk(small_universe):
    sim = MarketSimulator()
    for day in SESSIONS:
        i = sim._day_index[day]
        alone = sim._simulate_days([day])
        chunk = sim._simulate_chunk(i // 32)
        for key, value in alone.items():
            assert np.array_equal(value[0], chunk[key][i % 32]), key


def test_opens_come_from_the_cache_and_frames_are_identical(small_universe, monkeypatch):
    first = MarketSimulator()
    expected = _frames(first)
    adv = first.adv_shares(dt.date(2025, 6, 3), 20)
    assert first._opens_cache().exists()

    def no_chunks(self, chunk):
        raise AssertionError("the chain of opens was simulated again instead of read from its cache")

    monkeypatch.setattr(MarketSimulator, "_simulate_chunk", no_chunks)
    second = MarketSimulator()
    for a, b in zip(expected, _frames(second), strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_series_equal(adv, second.adv_shares(dt.date(2025, 6, 3), 20), check_exact=True)


def test_cache_is_keyed_by_the_parameters(small_universe, monkeypatch):
    a = MarketSimulator()
    a.session_frame(SESSIONS[-1])
    monkeypatch.setenv("TRADEGRAPH__SIMULATOR__SEED", "12345")
    reset_config()
    b = MarketSimulator()
    assert a._opens_cache() != b._opens_cache()
    assert not b._opens_cache().exists()
    assert not np.array_equal(a.session_frame(SESSIONS[-1])["close"], b.session_frame(SESSIONS[-1])["close"])

"""The schema itself: no defaults in the models, closed strict sections, date keys all covered by the date
tests, and the history rule computed exactly as the features and the sequential window need."""

from __future__ import annotations

import numpy as np
import pytest

from CONFIG import schema
from CONFIG.config_loader import build_config, use_config
from tests.foundation.test_config_rules import DATE_VALUES


def fields(model: type[schema.Section] = schema.TradegraphConfig, prefix: str = ""):
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, schema.Section):
            yield from fields(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def sections(model: type[schema.Section] = schema.TradegraphConfig):
    yield model
    for info in model.model_fields.values():
        if isinstance(info.annotation, type) and issubclass(info.annotation, schema.Section):
            yield from sections(info.annotation)


def test_models_hold_no_default_values():
    with_default = [key for key, info in fields() if not info.is_required()]
    assert with_default == []


def test_every_section_is_strict_and_closed():
    for model in sections():
        assert model.model_config["extra"] == "forbid" and model.model_config["strict"], model.__name__
        assert model.model_config["allow_inf_nan"] is False, model.__name__


def test_every_date_key_is_covered_by_the_date_tests():
    dates = {key for key, info in fields() if any(getattr(m, "func", None) is schema._iso_date for m in info.metadata)}
    assert dates == set(DATE_VALUES)


def test_schema_declares_exactly_the_default_keys():
    cfg = build_config(environ={})
    leaves = set()

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and key != "temperature":
                walk(value, f"{prefix}{key}.")
            else:
                leaves.add(f"{prefix}{key}")

    walk(cfg)
    assert leaves == {key for key, _ in fields()}


@pytest.mark.parametrize("override", [
    {},
    {"features": {"ewma_window_bars": 10}},
    {"features": {"ewma_window_bars": 10, "volume_window": 30}},
    {"features": {"ewma_window_bars": 10, "return_lookbacks": [1, 40], "vol_windows": [50]}},
    {"features": {"ewma_window_bars": 5, "range_window": 33, "volume_window": 3, "vol_windows": [2],
                  "return_lookbacks": [1]}},
])
def test_lookback_matches_the_features(override):
    from assets.features.logic import FeatureParams

    with use_config(override) as cfg:
        assert schema.Features(**cfg["features"]).lookback(cfg["market"]["bar_minutes"]) == FeatureParams.from_cfg().lookback()


def test_history_need_is_exactly_what_the_sequential_window_reads():
    """With ``market.history_bars`` at the need (lookback 78 — a session of 5-minute bars, for the overnight
    gap — + T 12 = 90) the sequential buffer of a real window fills all T rows; one bar fewer (a window of
    T + 1 on the same history) does not build."""
    from assets.predictions.stage import seq_buffer_for
    from resources.market.resource import MarketDataResource

    with use_config({"market": {"history_bars": 90}, "simulator": {"n_symbols": 4},
                     "training": {"ic_min_symbols": 4}}) as cfg:
        T = cfg["training"]["sequential"]["window"]
        assert schema.TradegraphConfig.model_validate(cfg).history_need() == 90
        window, _ = MarketDataResource().window("2025-06-03T15:00Z")
        buf = seq_buffer_for(window, T)
        assert np.array_equal(buf.filled, np.full(4, T))
        with pytest.raises(ValueError, match="features need 79 bars"):
            seq_buffer_for(window, T + 1)

import json

import pytest

from CONFIG.config_loader import (
    ConfigError,
    build_config,
    config_hash,
    effective_config_hash,
    get_cfg,
    load_config,
    use_config,
)


def test_defaults_hold_every_spec_number():
    # SPEC §4 defaults, read back through get_cfg (no second copy in code).
    assert get_cfg("blending.ridge_lambda") == 0.15
    assert get_cfg("blending.temperature") == {5: 0.75, 10: 0.85, 15: 0.90}
    assert (get_cfg("arbitration.k1_spread"), get_cfg("arbitration.k2_vol"), get_cfg("arbitration.k3_impact")) == (
        1.0, 0.15, 1.0)
    assert get_cfg("gating.block_threshold") == 0.60 and get_cfg("gating.exit_threshold") == 0.65
    assert get_cfg("sizing.no_trade_band") == 0.008 and get_cfg("sizing.gross_target") == 0.5
    assert get_cfg("kill_switch.daily_loss_pct") == 0.02 and get_cfg("kill_switch.drawdown_pct") == 0.10


@pytest.mark.parametrize("override, key", [
    ({"blending": {"ridge_lambda": "high"}}, "blending.ridge_lambda"),
    ({"sizing": {"z_max": -1.0}}, "sizing.z_max"),
    ({"gating": {"block_threshold": 1.5}}, "gating.block_threshold"),
    ({"arbitration": {"mode": "greedy"}}, "arbitration.mode"),
    ({"sizing": {"zmax": 3}}, "sizing.zmax"),
    ({"market": {"bar_minutes": 7}}, "market.bar_minutes"),
    ({"horizons": {"minutes": [5, 12]}}, "horizons.minutes"),
    ({"sizing": {"lot_size": 1.5}}, "sizing.lot_size"),
    ({"kill_switch": {"flatten_on_halt": "yes"}}, "kill_switch.flatten_on_halt"),
])
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(override, environ={})


def test_int_accepted_for_float_and_env_overrides_win(tmp_path, monkeypatch):
    user = tmp_path / "user.yaml"
    user.write_text("sizing:\n  z_max: 2\n  max_weight: 0.04\n")
    monkeypatch.setenv("TRADEGRAPH_CONFIG", str(user))
    monkeypatch.setenv("TRADEGRAPH__SIZING__MAX_WEIGHT", "0.03")
    load_config()
    assert get_cfg("sizing.z_max") == 2.0 and isinstance(get_cfg("sizing.z_max"), float)
    assert get_cfg("sizing.max_weight") == 0.03


def test_missing_user_file_is_an_error(monkeypatch):
    monkeypatch.setenv("TRADEGRAPH_CONFIG", "/nonexistent/tradegraph.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_hash_is_stable_and_changes_with_values():
    h = effective_config_hash()
    assert h == config_hash(build_config(environ={}))
    with use_config({"sizing": {"z_max": 2.5}}):
        assert effective_config_hash() != h
    assert effective_config_hash() == h


def test_recorded_config_round_trips_through_json():
    cfg = build_config(environ={})
    again = build_config(json.loads(json.dumps(cfg)), environ={})
    assert config_hash(again) == config_hash(cfg)
    assert again["blending"]["temperature"] == {5: 0.75, 10: 0.85, 15: 0.90}


def test_missing_key_is_a_key_error_unless_default_given():
    with pytest.raises(KeyError, match="nope.key"):
        get_cfg("nope.key")
    assert get_cfg("nope.key", default=3) == 3


def test_date_keys_from_the_environment_are_read_as_dates_text():
    """Issue 10: TRADEGRAPH__TRAINING__TRAIN_END=2013-10-10 was refused (YAML reads it as a datetime.date)."""
    cfg = build_config(environ={"TRADEGRAPH__TRAINING__TRAIN_END": "2013-10-10",
                                "TRADEGRAPH__MARKET__PARTITIONS_START": "2013-10-01",
                                "TRADEGRAPH__MARKET__SOURCE": "files"})
    assert cfg["training"]["train_end"] == "2013-10-10" and cfg["market"]["partitions_start"] == "2013-10-01"
    assert config_hash(cfg) == config_hash(build_config({"training": {"train_end": "2013-10-10"},
                                                          "market": {"partitions_start": "2013-10-01",
                                                                     "source": "files"}},
                                                         environ={}))

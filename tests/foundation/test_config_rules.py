"""Configuration validation through the public API only (build_config, load_config, get_cfg, hashes).

Written against the loader's behaviour, not its internals, so the same file runs against the loader of
main before the move to pydantic: the pinned hashes must hold on both; the rest fails there (dates from
YAML, the cross-key rules, infinities, non-horizon keys in ``blending.temperature``, empty sections).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import yaml

from CONFIG import config_loader as loader
from CONFIG.config_loader import (
    ConfigError,
    build_config,
    config_hash,
    effective_config_hash,
    get_cfg,
    install_config,
    load_config,
    use_config,
)

# What a run records must be what the YAML says: the effective configuration of the defaults is the YAML
# as read (same values, same types), and an override changes exactly its keys (an int given for a float
# becomes a float; digit-string horizon keys become ints). The hash is sha256 of its canonical JSON, as the
# hand-written loader computed it (checked at the move to pydantic against hashes pinned on main 0bd3006).
OVERRIDES = {"sizing": {"z_max": 2, "max_weight": 0.04}, "blending": {"temperature": {"30": 0.95, "5": 0.7}},
             "training": {"train_end": "2025-05-01"}, "market": {"files_dir": "data/bars"}}
OVERRIDE_ENV = {"TRADEGRAPH__SIZING__GROSS_TARGET": "0.4", "TRADEGRAPH__TRAINING__SEQUENTIAL__WINDOW": "8"}


def legacy_hash(cfg: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def yaml_defaults() -> dict:
    return yaml.safe_load(loader.DEFAULTS_FILE.read_text())


# A valid new value for each date key (the other dates stay at their defaults and keep every rule).
DATE_VALUES = {
    "market.partitions_start": dt.date(2025, 5, 1),
    "market.partitions_end": dt.date(2026, 6, 30),
    "simulator.start_date": dt.date(2025, 1, 3),
    "training.train_end": dt.date(2025, 5, 1),
    "replay.start": dt.date(2025, 7, 1),
}


def nested(dotted: str, value) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def env_name(dotted: str) -> str:
    return "TRADEGRAPH__" + "__".join(p.upper() for p in dotted.split("."))


def refused(override: dict | None = None, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(override, environ=environ or {})
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "\n" not in msg, "one line"
    return msg


def names(msg: str, *keys: str) -> None:
    for key in keys:
        assert key in msg, f"{key!r} not named in {msg!r}"


# --- the hash of what runs record --------------------------------------------------------------------------

def test_default_hash_is_the_hash_of_the_yaml():
    assert build_config(environ={}) == yaml_defaults()
    assert effective_config_hash() == legacy_hash(yaml_defaults())
    assert config_hash(build_config(environ={})) == legacy_hash(yaml_defaults())


def test_override_hash_changes_exactly_the_overridden_keys():
    cfg = build_config(OVERRIDES, environ=OVERRIDE_ENV)
    want = yaml_defaults()
    want["sizing"].update(z_max=2.0, max_weight=0.04, gross_target=0.4)
    want["blending"]["temperature"].update({5: 0.7, 30: 0.95})
    want["training"]["train_end"] = "2025-05-01"
    want["training"]["sequential"]["window"] = 8
    want["market"]["files_dir"] = "data/bars"
    assert cfg == want and config_hash(cfg) == legacy_hash(want)
    assert cfg["sizing"]["z_max"] == 2.0 and type(cfg["sizing"]["z_max"]) is float
    assert cfg["blending"]["temperature"] == {5: 0.7, 10: 0.85, 15: 0.9, 30: 0.95}
    assert cfg["training"]["sequential"]["window"] == 8 and cfg["sizing"]["gross_target"] == 0.4


def test_get_cfg_returns_the_yaml_values_and_types():
    raw = yaml.safe_load(loader.DEFAULTS_FILE.read_text())
    cfg = build_config(environ={})

    def same(a, b, where=""):
        assert type(a) is type(b), where
        if isinstance(a, dict):
            assert set(a) == set(b), where
            for k in a:
                same(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    same(raw, cfg)


# --- dates ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(DATE_VALUES))
def test_date_keys_from_file_and_env_hold_the_iso_string(key, tmp_path, monkeypatch):
    day = DATE_VALUES[key]
    expected = config_hash(build_config(nested(key, day.isoformat()), environ={}))
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump(nested(key, day)))  # unquoted: YAML reads it back as a date
    assert isinstance(yaml.safe_load(user.read_text())[key.split(".")[0]][key.split(".")[1]], dt.date)
    load_config(user)
    assert get_cfg(key) == day.isoformat() and type(get_cfg(key)) is str
    assert effective_config_hash() == expected
    monkeypatch.setenv(env_name(key), day.isoformat())
    load_config()
    assert get_cfg(key) == day.isoformat()
    assert effective_config_hash() == expected


@pytest.mark.parametrize("key", sorted(DATE_VALUES))
@pytest.mark.parametrize("text", ["2025-13-01", "2025-02-30", "20250201", "2025-6-2", "2025-06-02 10:00:00",
                                  "20250602", "June 2nd", "true"])
def test_malformed_dates_name_the_key(key, text, tmp_path):
    names(refused(environ={env_name(key): text}), f"config key '{key}'")
    section, name = key.split(".")
    user = tmp_path / "user.yaml"
    user.write_text(f"{section}:\n  {name}: {text}\n")  # unquoted, as a user would write it
    with pytest.raises(ConfigError, match=f"config key '{re.escape(key)}'"):
        load_config(user)


# --- rules between keys -----------------------------------------------------------------------------------

RULES = [
    ({"sizing": {"gross_target": 1.5}}, ["sizing.gross_target", "kill_switch.gross_exposure_max"]),
    ({"kill_switch": {"gross_exposure_max": 0.4}}, ["sizing.gross_target", "kill_switch.gross_exposure_max"]),
    ({"arbitration": {"winner_share": 0.8}}, ["arbitration.winner_share", "arbitration.runner_up_share"]),
    ({"arbitration": {"winner_share": 0.3, "runner_up_share": 0.5}},
     ["arbitration.runner_up_share", "arbitration.winner_share"]),
    ({"gating": {"prefer_threshold": 0.65}}, ["gating.prefer_threshold", "gating.block_threshold"]),
    ({"gating": {"block_threshold": 0.5}}, ["gating.prefer_threshold", "gating.block_threshold"]),
    ({"gating": {"exit_threshold": 0.58}}, ["gating.exit_threshold", "gating.block_threshold"]),
    ({"gating": {"block_threshold": 0.7}}, ["gating.exit_threshold", "gating.block_threshold"]),
    ({"horizons": {"minutes": []}}, ["horizons.minutes"]),
    ({"horizons": {"minutes": [5, 10, 5]}}, ["horizons.minutes"]),
    ({"horizons": {"minutes": [5, 12]}}, ["horizons.minutes", "market.bar_minutes"]),
    ({"market": {"bar_minutes": 60}, "horizons": {"minutes": [60]}}, ["barrier.horizon_minutes",
                                                                      "market.bar_minutes"]),
    # history: lookback 48 (ewma_window_bars) + T 12 = 60 bars
    ({"market": {"history_bars": 59}}, ["market.history_bars", "training.sequential.window"]),
    ({"features": {"ewma_window_bars": 110}}, ["market.history_bars", "ewma_window_bars"]),
    ({"features": {"return_lookbacks": [1, 2, 115]}}, ["market.history_bars"]),
    ({"features": {"vol_windows": [6, 200]}}, ["market.history_bars"]),
    ({"features": {"volume_window": 109}}, ["market.history_bars"]),
    ({"training": {"sequential": {"window": 73}}}, ["market.history_bars", "training.sequential.window"]),
    ({"training": {"families": ["lightgbm"]}, "market": {"history_bars": 48}}, ["market.history_bars"]),
    ({"features": {"return_lookbacks": []}}, ["features.return_lookbacks"]),
    ({"features": {"vol_windows": [6, 6]}}, ["features.vol_windows"]),
    ({"training": {"families": []}}, ["training.families"]),
    ({"training": {"families": ["lightgbm", "lightgbm"]}}, ["training.families"]),
    ({"simulator": {"price_min": 400.0}}, ["simulator.price_min", "simulator.price_max"]),
    ({"simulator": {"daily_vol_min": 0.05}}, ["simulator.daily_vol_min", "simulator.daily_vol_max"]),
    ({"simulator": {"adv_max": 1000}}, ["simulator.adv_min", "simulator.adv_max"]),
    ({"simulator": {"spread_bps_max": 0.5}}, ["simulator.spread_bps_min", "simulator.spread_bps_max"]),
    ({"simulator": {"market_beta_min": 1.5}}, ["simulator.market_beta_min", "simulator.market_beta_max"]),
    ({"simulator": {"market_share": 0.9}}, ["simulator.market_share", "simulator.sector_share"]),
    ({"market": {"partitions_start": "2027-01-04"}}, ["market.partitions_start", "market.partitions_end"]),
    ({"simulator": {"start_date": "2025-06-03"}}, ["simulator.start_date", "market.partitions_start"]),
    ({"simulator": {"start_date": "2025-05-01"}, "training": {"train_end": "2025-05-01"}},
     ["simulator.start_date", "training.train_end"]),
    ({"kill_switch": {"daily_loss_pct": 0.2}}, ["kill_switch.daily_loss_pct", "kill_switch.drawdown_pct"]),
    ({"kill_switch": {"stale_bars": 1}}, ["kill_switch.stale_bars", "market.stale_after_intervals"]),
    ({"sizing": {"no_trade_band": 0.05}}, ["sizing.no_trade_band", "sizing.max_weight"]),
    ({"orchestration": {"max_concurrent_trading_runs": 2}}, ["orchestration.max_concurrent_trading_runs"]),
]


@pytest.mark.parametrize("override, keys", RULES, ids=[" ".join(k) for _, k in RULES])
def test_contradicting_keys_are_errors_naming_them(override, keys):
    msg = refused(override)
    assert msg.startswith(f"config key '{keys[0]}'"), msg
    names(msg, *keys)


@pytest.mark.parametrize("override", [
    {"sizing": {"gross_target": 1.0}},                                            # = gross_exposure_max
    {"arbitration": {"winner_share": 0.5, "runner_up_share": 0.5}},                # sum exactly 1
    {"gating": {"prefer_threshold": 0.6, "block_threshold": 0.6, "exit_threshold": 0.6}},
    {"market": {"history_bars": 90}},                          # exactly lookback (a 5-minute session, 78) + T
    {"training": {"families": ["lightgbm"]}, "market": {"history_bars": 79}},     # lookback + 1, no window
    {"training": {"train_end": "2025-06-02"}, "replay": {"start": "2025-06-02"}},
    {"kill_switch": {"daily_loss_pct": 0.1, "stale_bars": 2}},
    {"training": {"ic_min_symbols": 50}},
    # the simulator's dates only bind when the simulator is the source
    {"market": {"source": "files", "files_dir": "bars"}, "simulator": {"start_date": "2025-07-01", "n_symbols": 3}},
])
def test_boundaries_of_the_rules_are_accepted(override):
    build_config(override, environ={})


def test_every_broken_rule_is_reported_on_one_line():
    msg = refused({"gating": {"prefer_threshold": 0.7, "exit_threshold": 0.5}, "sizing": {"z_max": -1}})
    names(msg, "config key 'gating.prefer_threshold'", "config key 'gating.exit_threshold'",
          "config key 'sizing.z_max'")


# --- types, unknown keys, sections ------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ({"sizing": {"z_max": True}}, "sizing.z_max"),
    ({"sizing": {"max_weight": False}}, "sizing.max_weight"),
    ({"sizing": {"lot_size": True}}, "sizing.lot_size"),
    ({"market": {"bar_minutes": True}}, "market.bar_minutes"),
    ({"market": {"bar_minutes": 5.0}}, "market.bar_minutes"),
    ({"sizing": {"lot_size": 2.0}}, "sizing.lot_size"),
    ({"kill_switch": {"flatten_on_halt": 1}}, "kill_switch.flatten_on_halt"),
    ({"sizing": {"z_max": "3"}}, "sizing.z_max"),
    ({"engine": {"strategy_id": 123}}, "engine.strategy_id"),
    ({"sizing": {"z_max": float("inf")}}, "sizing.z_max"),
    ({"kill_switch": {"max_order_notional": float("inf")}}, "kill_switch.max_order_notional"),
    ({"simulator": {"momentum_coef": float("nan")}}, "simulator.momentum_coef"),
    ({"horizons": {"minutes": [5, True]}}, "horizons.minutes"),
    ({"simulator": {"reversal_coefs": [-0.4, "x"]}}, "simulator.reversal_coefs"),
    ({"blending": {"temperature": {"abc": 0.5}}}, "blending.temperature.abc"),
    ({"blending": {"temperature": {"0": 0.5}}}, "blending.temperature.0"),
    ({"blending": {"temperature": {"30": 1.5}}}, "blending.temperature.30"),
    ({"blending": {"temperature": {"5": 0.5, 5: 0.6}}}, "blending.temperature.5"),
    ({"market": {"timezone": "Mars/Olympus"}}, "market.timezone"),
    ({"paths": {"lineage_db": ""}}, "paths.lineage_db"),
    ({"sizing": 3}, "sizing"),
])
def test_wrong_types_name_the_key(override, key):
    names(refused(override), f"config key '{key}")


def test_ints_become_floats_where_floats_are_expected():
    cfg = build_config({"sizing": {"z_max": 2, "gross_target": 1}, "arbitration": {"impact_ref_weight": 1},
                        "simulator": {"reversal_coefs": [0, -1]}}, environ={"TRADEGRAPH__CLOCK__SPEED": "60"})
    for value in (cfg["sizing"]["z_max"], cfg["sizing"]["gross_target"], cfg["arbitration"]["impact_ref_weight"],
                  cfg["clock"]["speed"], *cfg["simulator"]["reversal_coefs"]):
        assert type(value) is float


@pytest.mark.parametrize("override, key", [
    ({"sizng": {"z_max": 3}}, "sizng"),
    ({"training": {"lightgbm": {"num_leafs": 31}}}, "training.lightgbm.num_leafs"),
    ({"training": {"sequential": {"windw": 8}}}, "training.sequential.windw"),
    ({"training": {"barrier_lightgbm": {"subsample": 0.5}}}, "training.barrier_lightgbm.subsample"),
    ({"kill_switch": {"daily_loss": 0.01}}, "kill_switch.daily_loss"),
])
def test_unknown_keys_in_nested_sections_name_the_dotted_key(override, key):
    msg = refused(override)
    assert re.fullmatch(rf"config key '{re.escape(key)}': unknown key.*", msg), msg
    env = {env_name(key): "1"}
    assert f"config key '{key}'" in refused(environ=env)


def test_an_empty_section_in_a_user_file_overrides_nothing(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("sizing:\n  # z_max: 2.0\nkill_switch:\n")
    load_config(user)
    assert get_cfg("sizing.z_max") == 3.0 and get_cfg("kill_switch.drawdown_pct") == 0.10
    assert effective_config_hash() == legacy_hash(yaml_defaults())


def test_missing_default_is_an_error_naming_the_key(tmp_path, monkeypatch):
    raw = yaml.safe_load(loader.DEFAULTS_FILE.read_text())
    del raw["sizing"]["z_max"]
    short = tmp_path / "defaults.yaml"
    short.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(loader, "DEFAULTS_FILE", short)
    names(refused(), "config key 'sizing.z_max'")


# --- JSON round trip (a recorded configuration is installed again by audits) -----------------------------

def test_recorded_config_round_trips_through_json_with_dates_and_new_horizons():
    cfg = build_config({"training": {"train_end": dt.date(2025, 5, 1)}, "replay": {"start": dt.date(2025, 6, 9)},
                        "blending": {"temperature": {30: 0.95}}}, environ={})
    blob = json.dumps(cfg, sort_keys=True)  # no default=str needed: every value is plain JSON
    recorded = json.loads(blob)
    assert set(recorded["blending"]["temperature"]) == {"5", "10", "15", "30"}
    again = build_config(recorded, environ={})
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert again["blending"]["temperature"] == {5: 0.75, 10: 0.85, 15: 0.90, 30: 0.95}
    assert again["training"]["train_end"] == "2025-05-01"
    assert install_config(recorded) == config_hash(cfg)
    with use_config(recorded, full=True) as used:
        assert used == cfg and get_cfg("blending.temperature.30") == 0.95

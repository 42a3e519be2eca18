"""The one place configuration is read: packaged defaults, a user file, then environment overrides.

Why one loader: every tunable number lives in ``CONFIG/defaults.yaml`` and nowhere else, so live, audit,
replay and tests read the same values, and the hash of the effective configuration identifies a run.

Merge order (later wins): ``defaults.yaml`` → the user file (``TRADEGRAPH_CONFIG`` or :func:`load_config`'s
``user_file``) → environment variables ``TRADEGRAPH__SECTION__KEY=value`` (value parsed as YAML).
Validation: an override must keep the default's type (an int is accepted where a float is expected; a
``null`` default accepts a number) and satisfy ``CONFIG/schema.yaml``; an unknown key is an error too, so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"
SCHEMA_FILE = CONFIG_DIR / "schema.yaml"
ENV_FILE = "TRADEGRAPH_CONFIG"
ENV_PREFIX = "TRADEGRAPH__"

_MISSING = object()
_lock = threading.RLock()
_state: dict[str, Any] = {"cfg": None, "hash": None, "user_file": None}


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _check_type(key: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected {type(default).__name__}, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return value
    if not isinstance(value, type(default)):
        raise ConfigError(f"config key '{key}': expected {type(default).__name__}, got {value!r}")
    return value


def _merge(base: dict, override: Mapping, prefix: str = "") -> dict:
    """Deep-merge ``override`` into a copy of ``base``, type-checking against ``base``."""
    out = copy.deepcopy(base)
    for key in sorted(override, key=str):
        value = override[key]
        if key not in base and isinstance(key, str) and key.isdigit() and int(key) in base:
            key = int(key)  # JSON round trips turn int keys (horizon minutes) into strings
        dotted = f"{prefix}{key}"
        if key not in base:
            if prefix and _is_open_mapping(prefix.rstrip(".")):
                out[int(key) if isinstance(key, str) and key.isdigit() else key] = value
                continue
            raise ConfigError(f"config key '{dotted}': unknown key (not in CONFIG/defaults.yaml)")
        default = base[key]
        if isinstance(default, dict) and isinstance(value, Mapping):
            out[key] = _merge(default, value, f"{dotted}.")
        else:
            out[key] = _check_type(dotted, default, value)
    return out


def _is_open_mapping(dotted: str) -> bool:
    """Mappings whose keys are data (horizon → temperature) accept new keys."""
    return dotted in {"blending.temperature"}


def _env_overrides(environ: Mapping[str, str]) -> dict:
    out: dict = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = _dates_as_text(yaml.safe_load(environ[name]))
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment {name}: not a YAML value: {exc}") from exc
    return out


def _dates_as_text(value: Any) -> Any:
    """YAML reads ``2013-10-10`` as a date; the configuration keeps dates as ISO text (as the defaults do), so
    ``TRADEGRAPH__TRAINING__TRAIN_END=2013-10-10`` means the same as the YAML string "2013-10-10"."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_dates_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _dates_as_text(v) for k, v in value.items()}
    return value


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key in sorted(node, key=str):
            yield from _walk(node[key], f"{prefix}{key}.")
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, f"{prefix}*.")
    else:
        yield prefix.rstrip("."), node


def _matches(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    return len(p) == len(k) and all(a == "*" or a == b for a, b in zip(p, k, strict=True))


def _validate(cfg: dict, schema: dict) -> None:
    for key, value in _walk(cfg):
        for pattern, rule in schema.items():
            if _matches(pattern, key):
                _check_rule(key, value, rule)


def _check_rule(key: str, value: Any, rule: dict) -> None:
    if value is None:
        return
    if "choices" in rule and value not in rule["choices"]:
        raise ConfigError(f"config key '{key}': {value!r} is not one of {rule['choices']}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        if any(b in rule for b in ("min", "max", "gt", "lt")):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return
    if value != value:
        raise ConfigError(f"config key '{key}': NaN is not allowed")
    checks = (("min", lambda b: value >= b, ">="), ("max", lambda b: value <= b, "<="),
              ("gt", lambda b: value > b, ">"), ("lt", lambda b: value < b, "<"))
    for name, ok, sym in checks:
        if name in rule and not ok(rule[name]):
            raise ConfigError(f"config key '{key}': {value!r} out of range (must be {sym} {rule[name]})")


def _cross_checks(cfg: dict) -> None:
    bar = cfg["market"]["bar_minutes"]
    for h in cfg["horizons"]["minutes"]:
        if h % bar:
            raise ConfigError(f"config key 'horizons.minutes': {h} is not a multiple of market.bar_minutes={bar}")
    if cfg["barrier"]["horizon_minutes"] % bar:
        raise ConfigError(f"config key 'barrier.horizon_minutes': not a multiple of market.bar_minutes={bar}")
    for lo, hi in (("price_min", "price_max"), ("daily_vol_min", "daily_vol_max"), ("adv_min", "adv_max"),
                   ("spread_bps_min", "spread_bps_max")):
        if cfg["simulator"][lo] > cfg["simulator"][hi]:
            raise ConfigError(f"config key 'simulator.{lo}': greater than simulator.{hi}")


def build_config(user: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Merge and validate; pure (no global state), so tests and audits can build any configuration."""
    cfg = _read_yaml(DEFAULTS_FILE)
    if user:
        cfg = _merge(cfg, user)
    env = _env_overrides(os.environ if environ is None else environ)
    if env:
        cfg = _merge(cfg, env)
    _validate(cfg, _read_yaml(SCHEMA_FILE))
    _cross_checks(cfg)
    return cfg


def config_hash(cfg: Mapping) -> str:
    """sha256 of the canonical JSON of a configuration: the identity recorded with every run."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_config(user_file: str | os.PathLike | None = None, overrides: Mapping | None = None) -> dict:
    """(Re)load the process-wide configuration from a user file and/or a mapping of overrides."""
    path = user_file or os.environ.get(ENV_FILE) or None
    user: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} (from {ENV_FILE} or --config) does not exist")
        user = _read_yaml(p)
    if overrides:
        user = _merge_plain(user, overrides)
    cfg = build_config(user)
    with _lock:
        _state.update(cfg=cfg, hash=config_hash(cfg), user_file=str(path) if path else None)
    return cfg


def _merge_plain(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge_plain(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def install_config(cfg: Mapping) -> str:
    """Make a recorded configuration the process-wide one (an audit run replays the recorded config)."""
    built = build_config(dict(cfg), environ={})
    with _lock:
        _state.update(cfg=built, hash=config_hash(built))
    return _state["hash"]


def reset_config() -> None:
    """Forget the loaded configuration; the next read loads it again (tests, after env changes)."""
    with _lock:
        _state.update(cfg=None, hash=None, user_file=None)


def _current() -> dict:
    with _lock:
        if _state["cfg"] is None:
            load_config()
        return _state["cfg"]


def get_cfg(dotted_path: str, default: Any = _MISSING) -> Any:
    """Value at ``dotted_path`` ("blending.ridge_lambda") in the effective configuration.

    A missing key raises ``KeyError`` naming it unless ``default`` is given. Returns a copy for
    mutable values so callers cannot change the process-wide configuration by accident.
    """
    node: Any = _current()
    for part in dotted_path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part.isdigit() and int(part) in node:
            node = node[int(part)]
        else:
            if default is not _MISSING:
                return default
            raise KeyError(f"config key '{dotted_path}' does not exist")
    return copy.deepcopy(node) if isinstance(node, dict | list) else node


def effective_config() -> dict:
    """A copy of the whole effective configuration (recorded in lineage with its hash)."""
    return copy.deepcopy(_current())


def effective_config_hash() -> str:
    _current()
    with _lock:
        return _state["hash"]


@contextmanager
def use_config(cfg_or_overrides: Mapping, *, full: bool = False) -> Iterator[dict]:
    """Temporarily run with a configuration: ``full=True`` installs a recorded configuration as is
    (audit), otherwise the mapping is merged over the current user file as overrides (tests)."""
    with _lock:
        saved = dict(_state)
        cfg = build_config(dict(cfg_or_overrides), environ={}) if full else load_config(
            _state["user_file"], cfg_or_overrides)
        _state.update(cfg=cfg, hash=config_hash(cfg))
    try:
        yield cfg
    finally:
        with _lock:
            _state.update(saved)


def resolve_path(dotted_path: str) -> Path:
    """A path from config, made absolute against the project root (or $TRADEGRAPH_HOME when set)."""
    p = Path(get_cfg(dotted_path))
    if p.is_absolute():
        return p
    root = Path(os.environ.get("TRADEGRAPH_HOME", PROJECT_ROOT))
    return root / p

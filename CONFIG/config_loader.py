"""The one place configuration is read: packaged defaults, a user file, then environment overrides.

Why one loader: every tunable number lives in ``CONFIG/defaults.yaml`` and nowhere else, so live, audit,
replay and tests read the same values, and the hash of the effective configuration identifies a run.

Merge order (later wins): ``defaults.yaml`` → the user file (``TRADEGRAPH_CONFIG`` or :func:`load_config`'s
``user_file``) → environment variables ``TRADEGRAPH__SECTION__KEY=value`` (value parsed as YAML).
Validation: the merged configuration must satisfy the pydantic models of :mod:`CONFIG.schema` (types,
ranges, choices, rules between keys; an int is accepted where a float is expected and becomes a float); an
unknown key is an error too, so a typo never silently falls back to a default. Date keys accept a date or an
ISO string (from a file or the environment) and hold the ISO string. ``get_cfg`` returns plain Python values,
so the hash of a configuration does not depend on how it was validated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from CONFIG.schema import RULE_ERROR, TradegraphConfig

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"
ENV_FILE = "TRADEGRAPH_CONFIG"
ENV_PREFIX = "TRADEGRAPH__"

_MISSING = object()
_lock = threading.RLock()
_state: dict[str, Any] = {"cfg": None, "hash": None, "user_file": None}


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


class _Loader(yaml.SafeLoader):
    """Safe YAML whose impossible timestamps (``2025-02-30``) stay strings, so the schema refuses them
    naming the key instead of PyYAML raising a bare ValueError that names nothing."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def _read_yaml(path: Path) -> dict:
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, override: Mapping, prefix: str = "") -> dict:
    """Deep-merge ``override`` into a copy of ``base``; types, ranges and unknown keys are the schema's job.

    A digit-string key that names an int key of ``base`` is that key (a JSON round trip turns the horizon
    keys of ``blending.temperature`` into strings; both spellings at once is an error). An empty mapping
    section in a user file (YAML ``null``) overrides nothing.
    """
    out = copy.deepcopy(base)
    seen: set = set()
    for key in sorted(override, key=str):
        value = override[key]
        if key not in base and isinstance(key, str) and key.isascii() and key.isdigit() and int(key) in base:
            key = int(key)
        if key in seen:
            raise ConfigError(f"config key '{prefix}{key}': given twice (as {key!r} and {str(key)!r})")
        seen.add(key)
        default = base.get(key)
        if isinstance(default, dict) and isinstance(value, Mapping):
            out[key] = _merge(default, value, f"{prefix}{key}.")
        elif isinstance(default, dict) and value is None:
            continue
        else:
            out[key] = copy.deepcopy(value)
    return out


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
            node[parts[-1]] = _load_yaml(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment {name}: not a YAML value: {exc}") from exc
    return out


def _validate(cfg: dict) -> dict:
    """Validate a merged configuration against :mod:`CONFIG.schema`; the plain values ``get_cfg`` returns."""
    try:
        model = TradegraphConfig.model_validate(cfg)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err, cfg) for err in exc.errors())) from None
    return model.model_dump()


def _dotted(loc: tuple, data: Any) -> str:
    """``('horizons', 'minutes', 1)`` → ``horizons.minutes[1]``; ``('blending', 'temperature', 5)`` →
    ``blending.temperature.5`` (a location element is a list index only where the data holds a list)."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(data, list) and isinstance(part, int):
            out += f"[{part}]"
            data = data[part] if 0 <= part < len(data) else None
        else:
            out += f".{part}" if out else str(part)
            data = data.get(part) if isinstance(data, dict) else None
    return out


def _describe(err: Mapping, cfg: dict) -> str:
    """One pydantic error as ``config key 'a.b': what was wrong`` (one line, the input shortened)."""
    key = _dotted(tuple(err["loc"]), cfg)
    if err["type"] == RULE_ERROR:
        prefix = f"{key}." if key else ""
        return "; ".join(f"config key '{prefix}{k}': {why}" for k, why in err["ctx"]["failures"])
    if err["type"] == "extra_forbidden":
        return f"config key '{key}': unknown key (not in CONFIG/defaults.yaml)"
    if err["type"] == "missing":
        return f"config key '{key}': missing from CONFIG/defaults.yaml (CONFIG/schema.py declares it)"
    what = err["msg"]
    if "[key]" in err["loc"]:
        what = f"mapping key: {what}"
    got = repr(err["input"])
    got = got if len(got) <= 80 else got[:77] + "..."
    return f"config key '{key}': {what}, got {got}"


def build_config(user: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Merge and validate; pure (no global state), so tests and audits can build any configuration."""
    cfg = _read_yaml(DEFAULTS_FILE)
    if user:
        cfg = _merge(cfg, user)
    env = _env_overrides(os.environ if environ is None else environ)
    if env:
        cfg = _merge(cfg, env)
    return _validate(cfg)


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


def built_hash(cfg: Mapping) -> str:
    """The hash ``cfg`` has once validated (a configuration read back from JSON has string keys where the
    schema has integers, e.g. ``blending.temperature``; the built one is the identity recorded with runs)."""
    return config_hash(build_config(dict(cfg), environ={}))


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

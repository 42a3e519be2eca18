"""Test support for other suites: a real, small, trained registry in seconds.

Why here and not a conftest: the prediction, blending and end-to-end suites all need models that went
through the real trainers and the real registry (checksums, metadata, ACTIVE pointers), and a function is
importable from any test folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from CONFIG.config_loader import effective_config, use_config


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(
            out.get(key), dict) else value
    return out


def small_training_overrides(n_symbols: int = 10, sessions: int = 8) -> dict[str, Any]:
    """Configuration overrides for a small, quick training run (all families, all horizons)."""
    return {"simulator": {"n_symbols": n_symbols},
            "training": {"train_sessions": sessions, "ic_min_symbols": min(5, n_symbols),
                         "lightgbm": {"min_child_samples": 50},
                         "barrier_lightgbm": {"min_child_samples": 50},
                         "sequential": {"epochs": 2, "max_train_rows": 4000, "max_valid_rows": 2000}}}


def train_small_registry(tmp_dir: str | os.PathLike, n_symbols: int = 10, sessions: int = 8) -> Path:
    """Train every family on ``n_symbols`` simulated symbols × ``sessions`` sessions into
    ``<tmp_dir>/registry`` (published and activated, with ``force``: a small slice may measure a model's IC
    below ``training.min_validation_ic``, and suites need every model) and return that registry root.

    The caller's current configuration is kept (features, bar interval, horizons), so the models load
    under it; only the universe size, the window and the trainers' effort are reduced.
    """
    from TRAINING.train import train_all

    root = Path(tmp_dir) / "registry"
    cfg = _deep_merge(effective_config(), small_training_overrides(n_symbols, sessions))
    cfg["paths"]["registry"] = str(root)
    with use_config(cfg, full=True):
        train_all(progress=False, force=True)
    return root

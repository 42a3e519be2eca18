"""Small helpers every ``asset.py`` shares: the run's mode, run records and metadata shapes."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from CONFIG.config_loader import effective_config, effective_config_hash, get_cfg, install_config
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.records import recorded_run
from resources.lineage.store import LineageStore
from TRAINING.common.utils.code_version import code_version

MODES = ("live", "audit", "replay")


_AUDIT_CONFIGURED: set[str] = set()


def mode_of(context: dg.AssetExecutionContext) -> str:
    """The run's mode: tag ``tradegraph/mode`` or ``engine.mode``; an unknown mode is an error.

    An audit run (from the CLI or launched in the UI) installs the configuration recorded with the bar
    before its first step computes anything, so it replays the bar under the config that traded it.
    """
    mode = context.run.tags.get(MODE_TAG, get_cfg("engine.mode"))
    if mode not in MODES:
        raise ValueError(f"run tag {MODE_TAG}={mode!r} is not one of {MODES}")
    if mode == "audit" and context.run.run_id not in _AUDIT_CONFIGURED:
        cfg, recorded_hash, _ = recorded_run(LineageStore(), context.partition_key)
        if effective_config_hash() != recorded_hash:
            install_config(cfg)
            context.log.info(f"audit: running under the recorded configuration {recorded_hash[:16]}")
        _AUDIT_CONFIGURED.add(context.run.run_id)
    return mode


def record_run(store: LineageStore, run_id: str, bar: str, mode: str, status: str, *,
               model_versions: str | None = None, start: bool = False) -> None:
    """Upsert this run's row in ``runs`` (and the effective config under its hash)."""
    now = dt.datetime.now(dt.UTC)
    with store.connect() as con:
        store.record_config(con, effective_config_hash(), effective_config())
        store.upsert_run(con, run_id=run_id, bar=bar, mode=mode, code_version=code_version(),
                         config_hash=effective_config_hash(), model_versions=model_versions,
                         started_at=now if start else None, ended_at=now, status=status)


def frame_metadata(frame: pd.DataFrame, value_columns: list[str] | None = None) -> dict:
    """Row count, symbols and NaN share: what a person checks first in the UI."""
    cols = value_columns or [c for c in frame.columns if frame[c].dtype.kind == "f"]
    values = frame[cols].to_numpy(dtype=float) if cols and len(frame) else np.empty((0, 0))
    nan_share = float(np.mean(~np.isfinite(values))) if values.size else 0.0
    meta = {"rows": len(frame), "nan_share": round(nan_share, 6)}
    if "symbol" in frame:
        meta["symbols"] = int(frame["symbol"].nunique())
    return meta

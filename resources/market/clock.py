"""The market clock: real time for live trading, or an accelerated clock for the embedded market.

Why an accelerated clock: with ``make ui`` a user should see the sensor trade bar after bar within
minutes, not wait five real minutes per bar. The clock file anchors a wall instant to a market instant;
market time = market anchor + (wall now − wall anchor) × ``clock.speed``. Anyone (sensor, CLI, tests) can
read it; nothing else about it is stateful.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from TRAINING.common.utils.file_utils import read_json, write_atomic_json


def start_accelerated_clock(market_start: pd.Timestamp, speed: float | None = None,
                            wall_start: dt.datetime | None = None) -> dict:
    """Write the clock file: from now on, market time runs from ``market_start`` at ``speed``."""
    state = {"market_start": pd.Timestamp(market_start).tz_convert("UTC").to_pydatetime(),
             "wall_start": wall_start or dt.datetime.now(dt.UTC),
             "speed": float(speed or get_cfg("clock.speed"))}
    write_atomic_json(resolve_path("clock.file"), state)
    return state


def market_now(wall_now: dt.datetime | None = None) -> pd.Timestamp:
    """The current market time (UTC) under the configured clock."""
    wall = pd.Timestamp(wall_now or dt.datetime.now(dt.UTC)).tz_convert("UTC")
    if get_cfg("clock.mode") == "wall":
        return wall
    path = resolve_path("clock.file")
    if not path.exists():
        raise RuntimeError(f"clock.mode=accelerated but {path} does not exist: start it with `make ui`")
    state = read_json(path)
    elapsed = (wall - pd.Timestamp(state["wall_start"])).total_seconds()
    return pd.Timestamp(state["market_start"]) + pd.Timedelta(seconds=elapsed * float(state["speed"]))

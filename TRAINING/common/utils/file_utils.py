"""Crash-safe state files: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        if obj.tzinfo is None:
            raise ValueError(f"naive datetime {obj!r} in a state file: attach a time zone (UTC inside the engine)")
        return obj.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(obj, dt.date):
        return obj.isoformat()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def canonical_json(obj: Any) -> str:
    """Sorted keys, UTC ISO datetimes, no NaN: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, indent=2, default=_default, allow_nan=False) + "\n"


def write_atomic_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as canonical JSON to ``path`` atomically: temp file, fsync, os.replace, fsync dir."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = canonical_json(obj).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def read_json(path: str | os.PathLike) -> Any:
    """Read a state file; a corrupt one raises ``ValueError`` naming the file (callers fail closed)."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: corrupt JSON state file: {exc}") from exc

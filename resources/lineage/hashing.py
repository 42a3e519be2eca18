"""Content hashes of tables: the same rows give the same hash in any process, on any day."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 over column names and values, normalised by kind so a DuckDB round trip keeps the hash
    (float64, int64, bool, datetime as UTC ns, everything else as text). Row order matters."""
    h = hashlib.sha256()
    for name, col in frame.items():
        k = col.dtype.kind  # one attribute read per column: the replay hashes thousands of frames
        if k == "M":
            kind, data = "t", pd.to_datetime(col, utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()
        elif k == "b":
            kind, data = "b", col.to_numpy(dtype=np.uint8)
        elif k in "iu":
            kind, data = "i", col.to_numpy(dtype=np.int64)
        elif k == "f":
            kind, data = "f", col.to_numpy(dtype=np.float64)
        else:
            kind = "s"
            data = "\x1f".join("\x00" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                for v in col.tolist()).encode()
        h.update(f"{name}\x1f{kind}\x1e".encode())
        h.update(np.ascontiguousarray(data).tobytes() if not isinstance(data, bytes) else data)
    return h.hexdigest()


def combine_hashes(hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(hashes):
        h.update(f"{key}={hashes[key]};".encode())
    return h.hexdigest()

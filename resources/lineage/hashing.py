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


def _normalised(col: pd.Series) -> tuple[str, np.ndarray | list[str]]:
    """A column's hash kind and its values as :func:`content_hash` feeds them (strings: one text per value)."""
    k = col.dtype.kind
    if k == "M":
        return "t", pd.to_datetime(col, utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    if k == "b":
        return "b", col.to_numpy(dtype=np.uint8)
    if k in "iu":
        return "i", col.to_numpy(dtype=np.int64)
    if k == "f":
        return "f", col.to_numpy(dtype=np.float64)
    values = col.tolist()
    if set(map(type, values)) <= {str}:   # plain str only (no None/NaN, no str subclass such as an enum)
        return "s", values
    return "s", ["\x00" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _dtypes(frame: pd.DataFrame) -> tuple:
    """``tuple(frame.dtypes)``, asked of pandas' block manager where it answers (``DataFrame.dtypes`` builds a
    Series: 80 µs a frame, 2.5 ms of every replayed bar's flush); falls back to the public attribute."""
    get = getattr(getattr(frame, "_mgr", None), "get_dtypes", None)
    if get is not None:
        dtypes = tuple(get())
        if len(dtypes) == frame.shape[1]:
            return dtypes
    return tuple(frame.dtypes)


def frame_signature(frame: pd.DataFrame) -> tuple:
    """``((name, dtype), …)`` of ``frame``'s columns: frames of one signature hash (and concatenate) alike."""
    return tuple(zip(frame.columns.tolist(), _dtypes(frame), strict=True))   # tolist: iterating an Index is slower


def segment_hashes(whole: pd.DataFrame, lengths: np.ndarray) -> list[str]:
    """``[content_hash(part) for part in consecutive row segments of whole]`` (``lengths[i]`` rows each, summing
    to ``len(whole)``): one normalisation per column for all segments. Exact when each segment was a frame of
    ``whole``'s columns and dtypes before they were concatenated (a frame's hash depends on its dtypes)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != len(whole):
        raise ValueError(f"segments of {int(lengths.sum())} rows for a frame of {len(whole)}")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    hashers = [hashlib.sha256() for _ in range(len(lengths))]
    for j, name in enumerate(whole.columns):   # name as content_hash formats it (f"{name}")
        col = whole.iloc[:, j]
        texts = _arrow_texts(col, ends)
        if texts is not None:
            header = f"{name}\x1fs\x1e".encode()
            for h, text in zip(hashers, texts, strict=True):
                h.update(header)
                h.update(text)
            continue
        kind, data = _normalised(col)
        header = f"{name}\x1f{kind}\x1e".encode()
        if kind == "s":
            for h, a, b in zip(hashers, starts, ends, strict=True):
                h.update(header)
                h.update("\x1f".join(data[a:b]).encode())
        else:
            raw = np.ascontiguousarray(data).view(np.uint8)
            width = data.dtype.itemsize
            for h, a, b in zip(hashers, starts, ends, strict=True):
                h.update(header)
                h.update(raw[a * width:b * width])
    return [h.hexdigest() for h in hashers]


def _arrow_texts(col: pd.Series, ends: np.ndarray) -> list[bytes] | None:
    """A string column's segments (ending at ``ends``) as :func:`content_hash` encodes them — each value's text,
    a missing one as ``\x00``, joined by ``\x1f`` — joined by pyarrow in one pass; None unless the column is a
    pandas string column (the other kinds take the generic path)."""
    if not isinstance(col.dtype, pd.StringDtype):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(col.array)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    na = col.dtype.na_value   # what ``tolist`` gives for a missing value, encoded as content_hash does
    missing = "\x00" if na is None or (isinstance(na, float) and np.isnan(na)) else str(na)
    values = pc.fill_null(values.cast(pa.large_string()), missing)
    offsets = pa.array(np.concatenate([[0], np.asarray(ends, dtype=np.int64)]), type=pa.int64())
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, values), pa.scalar("\x1f", pa.large_string()))
    return [text.encode() for text in joined.to_pylist()]


def content_hashes(frames: list[pd.DataFrame]) -> list[str]:
    """``[content_hash(f) for f in frames]``, computed with one normalisation per column over all frames of
    the same columns and dtypes (the replay hashes ~40 tables × every bar of a flush; per frame, the fixed
    cost of a column's conversion dominated). Same values, bit for bit (tested against :func:`content_hash`)."""
    out: list[str | None] = [None] * len(frames)
    groups: dict[tuple, list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(frame_signature(f), []).append(i)
    for signature, members in groups.items():
        if len(members) == 1 or not signature or len({n for n, _ in signature}) < len(signature):
            for i in members:
                out[i] = content_hash(frames[i])
            continue
        whole = pd.concat([frames[i] for i in members], ignore_index=True)
        lengths = np.array([len(frames[i]) for i in members], dtype=np.int64)
        for i, h in zip(members, segment_hashes(whole, lengths), strict=True):
            out[i] = h
    return out  # type: ignore[return-value]

"""One lineage table's rows of many bars assembled once per write (issue 12: the replay's flush).

The replay records ~40 tables × every bar of a flush. Stamping, hashing and concatenating each bar's frame on
its own cost more than the write itself (a py-spy profile: ``own_rows``' copy per frame, one ``concat`` for the
hashes and another for the write). Here each table's frames are concatenated once; the ``run_id`` stamp, the
append-only filter and the content hashes are computed on that one frame as whole arrays. A Dagster bar is a
batch of one: the same code writes both, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from resources.lineage.hashing import content_hash, content_hashes, frame_signature, segment_hashes


@dataclass
class TableBatch:
    """One table's rows of several bars: ``data`` holds every bar's rows in bar order (no key columns; None
    when every frame is empty), ``lengths[i]`` the rows of ``bars[i]`` and ``hashes[i]`` its content hash
    (:func:`~resources.lineage.hashing.content_hash` of the frame as recorded)."""

    bars: list[str]
    lengths: np.ndarray
    data: pd.DataFrame | None
    hashes: list[str]


def stamp_own(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """What a run appends to an append-only table: its rows stamped with its id (rows of other runs dropped)."""
    if "run_id" not in frame:
        return frame.assign(run_id=run_id)
    return frame[frame["run_id"] == run_id].reset_index(drop=True)


def assemble(bars: list[str], frames: list[pd.DataFrame], run_id: str | None = None) -> TableBatch:
    """``frames[i]`` (the table's output at ``bars[i]``) as one :class:`TableBatch`; with ``run_id`` the
    frames are an append-only table's (each one as :func:`stamp_own` gives it).

    The bulk path needs every non-empty frame to have the same columns and dtypes (the replay's case): one
    ``concat``, the stamp as one column, the filter as one mask, the hashes over the concatenated arrays. Frames
    that differ (or duplicate column names) are stamped and hashed frame by frame: the same result, slower."""
    if len(bars) != len(frames):
        raise ValueError(f"{len(bars)} bars for {len(frames)} frames")
    sigs = [frame_signature(f) for f in frames]
    filled = [i for i, f in enumerate(frames) if len(f)]
    one = sigs[filled[0]] if filled else None
    if one is not None and (any(sigs[i] != one for i in filled) or not one or len({n for n, _ in one}) < len(one)):
        return _frame_by_frame(bars, frames, run_id)
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    data = pd.concat([frames[i] for i in filled], ignore_index=True) if filled else None
    if data is not None and run_id is not None:
        if "run_id" in data.columns:
            keep = (data["run_id"] == run_id).to_numpy(dtype=bool, na_value=False)
            if not keep.all():
                seg = np.repeat(np.arange(len(frames)), lengths)
                lengths = np.bincount(seg[keep], minlength=len(frames)).astype(np.int64)
                data = data[keep].reset_index(drop=True)
        else:
            data["run_id"] = run_id   # our own concatenation: the column lands last, as ``assign`` puts it
    hashes: list[str | None] = [None] * len(frames)
    same = [i for i, s in enumerate(sigs) if s == one]
    if data is not None:
        for i, h in zip(same, segment_hashes(data, lengths[same]), strict=True):
            hashes[i] = h
    empty: dict[tuple, str] = {}   # an empty frame's hash depends on its columns and dtypes only
    for i, f in enumerate(frames):
        if hashes[i] is None:
            if sigs[i] not in empty:
                empty[sigs[i]] = content_hash(stamp_own(f, run_id) if run_id is not None else f)
            hashes[i] = empty[sigs[i]]
    return TableBatch(list(bars), lengths, data, hashes)  # type: ignore[arg-type]


def _frame_by_frame(bars: list[str], frames: list[pd.DataFrame], run_id: str | None) -> TableBatch:
    own = [stamp_own(f, run_id) for f in frames] if run_id is not None else frames
    lengths = np.array([len(f) for f in own], dtype=np.int64)
    filled = [f for f in own if len(f)]
    data = pd.concat(filled, ignore_index=True) if filled else None
    return TableBatch(list(bars), lengths, data, content_hashes(own))


def first_seen(frames: list[pd.DataFrame], keys: tuple[str, str] = ("ts", "symbol")) -> pd.DataFrame:
    """The rows of ``frames`` (in order) whose ``keys`` were not seen in an earlier row, sorted by the keys
    (stable): ``pd.concat(frames).drop_duplicates(keys, keep="first").sort_values(keys)``.

    The replay's bar windows overlap (each bar carries ``market.history_bars`` of history, 1.2 M rows a flush of
    100 bars at 100 symbols): concatenating them all to drop 99 % again was the flush's biggest pandas cost.
    A window whose first rows (those not after every earlier window's last time) are exactly the previous
    window's last rows, key for key and in the same order, contributes only its later rows, which no earlier
    window can hold. Any window that does not fit (rows out of time order, a row missing or added in the
    overlap, other dtypes) makes the whole call take the general path."""
    t, s = keys
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    parts = _new_rows(frames, t, s)
    if parts is None:
        whole = pd.concat(frames, ignore_index=True).drop_duplicates(list(keys), keep="first")
    else:
        whole = pd.concat(parts, ignore_index=True)
        if whole.duplicated(list(keys)).any():   # a key twice within one window: the general path decides
            whole = pd.concat(frames, ignore_index=True).drop_duplicates(list(keys), keep="first")
    return whole.sort_values(list(keys), kind="mergesort")


def _new_rows(frames: list[pd.DataFrame], t: str, s: str) -> list[pd.DataFrame] | None:
    """Each window's rows after every earlier window's last time, or None when a window does not fit
    :func:`first_seen`'s fast path."""
    sig = frame_signature(frames[0])
    if frames[0][t].dtype.kind != "M":
        return None
    stamps = []
    for f in frames:
        if frame_signature(f) != sig:
            return None
        ts = f[t].to_numpy(dtype="datetime64[ns]").view(np.int64)
        if len(ts) > 1 and (np.diff(ts) < 0).any():
            return None
        stamps.append(ts)
    parts = [frames[0]]
    last = stamps[0][-1]
    for k in range(1, len(frames)):
        ts, prev = stamps[k], stamps[k - 1]
        cut = int(np.searchsorted(ts, last, side="right"))     # this window's rows at or before ``last``
        if cut:   # the overlap must be the previous window's tail, key for key (then every row in it was seen)
            start = int(np.searchsorted(prev, ts[0], side="left"))
            if (last > prev[-1] or len(prev) - start != cut or not np.array_equal(prev[start:], ts[:cut])
                    or not _same(frames[k - 1][s].iloc[start:], frames[k][s].iloc[:cut])):
                return None
        if cut < len(ts):
            parts.append(frames[k].iloc[cut:])
        last = max(last, ts[-1])
    return parts


def _same(a: pd.Series, b: pd.Series) -> bool:
    """Equal values in the same order (missing equal to missing), compared in C where pyarrow holds them."""
    if len(a) != len(b):
        return False
    if hasattr(a.array, "__arrow_array__") and hasattr(b.array, "__arrow_array__"):
        import pyarrow as pa

        return pa.array(a.array).equals(pa.array(b.array))
    return bool(np.array_equal(a.to_numpy(dtype=object), b.to_numpy(dtype=object)))

"""A cache of model inference: ``model.predict(X)`` keyed by the model's version and the content of ``X``.

Why at the model call: the inputs a model sees (the bar's feature rows, or the sequential windows) are the
exact content its output depends on, so a key of (target/family/version, sha256 of X's dtype, shape and
bytes) can never serve a stale output — a changed feature, window, universe or model gives another key —
and everything after inference (standardization, skill, blending, arbitration, gating, sizing) is recomputed.
A second replay that changes only arbitration, gating or sizing parameters therefore finds every model call
in the cache and skips inference, with bit-identical predictions (the cached array is the model's own output).

Storage: one directory per model (``<target>__<family>__<version>``) under ``paths.prediction_cache``, with
one compressed ``.npz`` shard per replay that computed something new (digests (n, 32) uint8, the outputs
concatenated, and their lengths); shards are written with a temporary name and renamed, so a reader never
sees half a shard. Versions are immutable, so shards never go stale; delete the directory to reclaim space.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np


def input_digest(X: np.ndarray) -> bytes:
    """sha256 over the dtype, shape and C-order bytes of the model input (float64)."""
    x = np.ascontiguousarray(X, dtype=np.float64)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(memoryview(x).cast("B"))
    return h.digest()


class PredictionCache:
    """Memoized ``predict`` per model version, loaded lazily from and saved to ``root`` (None: memory only)."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self._tables: dict[str, dict[bytes, np.ndarray]] = {}
        self._new: dict[str, dict[bytes, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def model_key(target: str, family: str, version: str) -> str:
        return f"{target}__{family}__{version}".replace("/", "_")

    def _table(self, key: str) -> dict[bytes, np.ndarray]:
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            if self.root is not None and (self.root / key).is_dir():
                for shard in sorted((self.root / key).glob("*.npz")):
                    with np.load(shard) as z:
                        digests, values, lengths = z["digests"], z["values"], z["lengths"]
                    ends = np.cumsum(lengths)
                    for d, end, n in zip(digests, ends, lengths, strict=True):
                        table[d.tobytes()] = values[end - n:end]
        return table

    def predict(self, target: str, family: str, version: str, predict: Callable[[np.ndarray], np.ndarray],
                X: np.ndarray) -> np.ndarray:
        """``predict(X)`` of model (target, family, version), from the cache when the same X was seen."""
        key = self.model_key(target, family, version)
        table = self._table(key)
        digest = input_digest(X)
        hit = table.get(digest)
        if hit is not None:
            self.hits += 1
            return hit.copy()
        self.misses += 1
        out = np.asarray(predict(X), dtype=np.float64)
        table[digest] = out
        self._new.setdefault(key, {})[digest] = out
        return out.copy()

    def predict_many(self, target: str, family: str, version: str,
                     run: Callable[[list[np.ndarray]], list[np.ndarray]], Xs: list[np.ndarray],
                     digests: list[bytes] | None = None) -> list[np.ndarray]:
        """:meth:`predict` for many inputs (one per bar), each looked up and counted on its own as
        :meth:`predict` would, in order (an input repeated later in the list is a hit); ``run`` computes every
        missing one in one call (the model's outputs of a list of inputs). ``digests``: the inputs'
        :func:`input_digest` when the caller has them already (the same input read by several models)."""
        key = self.model_key(target, family, version)
        table = self._table(key)
        if digests is None:
            digests = [input_digest(X) for X in Xs]
        elif len(digests) != len(Xs):
            raise ValueError(f"{len(digests)} digests for {len(Xs)} inputs")
        todo: dict[bytes, int] = {}
        for i, digest in enumerate(digests):
            if digest in table or digest in todo:
                self.hits += 1
            else:
                self.misses += 1
                todo[digest] = i
        if todo:
            for digest, out in zip(todo, run([Xs[i] for i in todo.values()]), strict=True):
                out = np.asarray(out, dtype=np.float64)
                table[digest] = out
                self._new.setdefault(key, {})[digest] = out
        return [table[d].copy() for d in digests]

    def save(self) -> int:
        """Write what this process computed as one new shard per model; returns the entries written."""
        written = 0
        if self.root is None:
            return 0
        for key, entries in sorted(self._new.items()):
            if not entries:
                continue
            folder = self.root / key
            folder.mkdir(parents=True, exist_ok=True)
            digests = np.frombuffer(b"".join(entries), dtype=np.uint8).reshape(len(entries), 32)
            arrays = list(entries.values())
            fd, tmp = tempfile.mkstemp(prefix=".shard.", suffix=".npz", dir=folder)
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, digests=digests, values=np.concatenate(arrays),
                                    lengths=np.array([len(a) for a in arrays], dtype=np.int64))
            os.replace(tmp, folder / f"{uuid.uuid4().hex}.npz")
            written += len(entries)
        self._new.clear()
        return written

"""Deterministic iteration: output order never depends on insertion order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _key(k: Any) -> tuple[str, Any]:
    # Group by type name first so mixed key types (int horizons next to strings) still sort.
    return (type(k).__name__, k)


def sorted_items(d: Mapping[K, V]) -> list[tuple[K, V]]:
    """The items of ``d`` sorted by key (by type name, then value, for mixed key types)."""
    return sorted(d.items(), key=lambda kv: _key(kv[0]))


def sorted_keys(d: Mapping[K, Any] | Iterable[K]) -> list[K]:
    return sorted(d, key=_key)

"""Compare a recorded lineage table with its audit (``audit__<table>``), bit for bit (NaN equals NaN).

Shared by ``tradegraph audit`` and the ``audit_identical`` checks that end ``audit_job`` in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class TableDiff:
    table: str
    identical: bool
    recorded_rows: int
    audit_rows: int
    differing: pd.DataFrame = field(default_factory=pd.DataFrame)


def _key_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("symbol", "horizon", "family", "family_a", "family_b", "target") if c in frame]


def compare(table: str, recorded: pd.DataFrame, audited: pd.DataFrame) -> TableDiff:
    """Bit-level comparison (NaN equals NaN); differing rows listed by their key columns."""
    same_shape = list(recorded.columns) == list(audited.columns) and len(recorded) == len(audited)
    if same_shape:
        a, b = recorded.reset_index(drop=True), audited.reset_index(drop=True)
        eq = np.ones(len(a), dtype=bool)
        for c in a.columns:
            x, y = a[c], b[c]
            both_nan = x.isna().to_numpy() & y.isna().to_numpy()
            eq &= (x.astype(object).to_numpy() == y.astype(object).to_numpy()) | both_nan
        if eq.all():
            return TableDiff(table, True, len(recorded), len(audited))
        keys = _key_columns(a)
        diff = a.loc[~eq, keys].assign(where="value differs")
        return TableDiff(table, False, len(recorded), len(audited), diff)
    keys = _key_columns(recorded) or list(recorded.columns[:1])
    merged = recorded[keys].merge(audited[keys], how="outer", indicator=True)
    diff = merged[merged["_merge"] != "both"].rename(columns={"_merge": "where"})
    if diff.empty:
        diff = pd.DataFrame({"where": [f"columns differ: {sorted(set(recorded.columns) ^ set(audited.columns))}"]})
    return TableDiff(table, False, len(recorded), len(audited), diff)

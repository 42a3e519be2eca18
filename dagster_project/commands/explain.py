"""``tradegraph explain --bar KEY --symbol SYM``: the whole chain of one decision, read from lineage.

features → predictions per horizon and family → family weights → α → costs and net → gate → size →
order → fills, as text for a person or ``--json`` for machines. Opens the DuckDB file read-only (bounded
wait if a run holds it) and never writes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from resources.lineage.store import LineageStore

SECTIONS = [  # (title, table, filter on symbol)
    ("bar", "bars", True),
    ("skipped rows", "bars_skips", True),
    ("adjustments", "bars_adjustments", True),
    ("features", "features", True),
    ("predictions", "predictions", True),
    ("barrier", "predictions_barrier", True),
    ("models", "predictions_models", False),
    ("skill", "model_skill", False),
    ("weights", "blended_alpha_weights", False),
    ("alpha", "blended_alpha", True),
    ("costs", "arbitrated_scores_terms", True),
    ("score", "arbitrated_scores", True),
    ("gate", "gated_signals", True),
    ("size", "sized_orders", True),
    ("execution", "executions", True),
    ("fills", "executions_fills", True),
]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def explain(bar: str, symbol: str, store: LineageStore | None = None) -> dict[str, list[dict]]:
    """Every recorded row on the path of (bar, symbol), section by section (empty where nothing was recorded)."""
    store = store or LineageStore()
    out: dict[str, list[dict]] = {}
    with store.connect(read_only=True) as con:
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        universe = store.read_partition("bars", bar, con) if "bars" in have else pd.DataFrame()
        if universe.empty:
            raise LookupError(f"nothing recorded for bar {bar} in {store.path}")
        if symbol not in set(universe["symbol"]):
            raise LookupError(f"symbol {symbol} is not in the universe recorded at bar {bar} "
                              f"({len(universe)} symbols, e.g. {', '.join(sorted(universe['symbol'])[:3])})")
        for title, table, by_symbol in SECTIONS:
            if table not in have:
                out[title] = []
                continue
            frame = store.read_partition(table, bar, con)
            if by_symbol and "symbol" in frame:
                frame = frame[frame["symbol"] == symbol]
            out[title] = [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return out


def render(bar: str, symbol: str, chain: dict[str, list[dict]]) -> str:
    lines = [f"Decision chain for {symbol} at bar {bar}", "=" * 60]
    for title, rows in chain.items():
        lines.append(f"\n[{title}]")
        if not rows:
            lines.append("  (nothing recorded)")
            continue
        frame = pd.DataFrame(rows).drop(columns=["symbol"], errors="ignore")
        if len(frame) == 1:
            width = max(len(c) for c in frame.columns)
            lines += [f"  {c:<{width}}  {_fmt(v)}" for c, v in frame.iloc[0].items()]
        else:
            lines += ["  " + ln for ln in frame.to_string(index=False, float_format=lambda x: f"{x:.6g}").splitlines()]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def to_json(chain: dict[str, list[dict]]) -> str:
    """The chain as JSON, sections in chain order (bar → … → fills), columns in their recorded order."""
    return json.dumps(chain, indent=2, default=str)

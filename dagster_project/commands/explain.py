"""``tradegraph explain --bar KEY --symbol SYM``: the whole chain of one decision, read from lineage.

features → predictions per horizon and family → family weights → α → costs and net → gate → size →
order → its lifecycle → fills, as text for a person or ``--json`` for machines. An order decided at a bar
fills at a later bar (the next bar's open, or later when carried): its status changes (``positions_orders``)
and its fills (``positions_fills`` ∪ ``executions_fills``, with the decision price and the slippage in bps)
are found by its ``client_order_id`` at whatever bar they were recorded. Opens the DuckDB file read-only
(bounded wait if a run holds it) and never writes.
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
    ("lifecycle", "positions_orders", True),      # by the order's client_order_id, at any later bar
    ("fills", "positions_fills", True),           # ∪ executions_fills, by client_order_id, at any bar
]
BY_ORDER = {"positions_orders": ("positions_orders",), "positions_fills": ("executions_fills", "positions_fills")}


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
    orders: list[str] = []
    with store.connect(read_only=True) as con:
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        universe = store.read_partition("bars", bar, con) if "bars" in have else pd.DataFrame()
        if universe.empty:
            raise LookupError(f"nothing recorded for bar {bar} in {store.path}")
        if symbol not in set(universe["symbol"]):
            raise LookupError(f"symbol {symbol} is not in the universe recorded at bar {bar} "
                              f"({len(universe)} symbols, e.g. {', '.join(sorted(universe['symbol'])[:3])})")
        for title, table, by_symbol in SECTIONS:
            if table in BY_ORDER:
                frame = _of_orders(con, [t for t in BY_ORDER[table] if t in have], orders)
            elif table not in have:
                out[title] = []
                continue
            else:
                frame = store.read_partition(table, bar, con)
            if by_symbol and "symbol" in frame:
                frame = frame[frame["symbol"] == symbol]
            if table == "executions":
                orders = sorted(set(frame["client_order_id"]))
            out[title] = [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return out


def _of_orders(con, tables: list[str], orders: list[str]) -> pd.DataFrame:
    """Rows of ``tables`` about these orders, whatever bar recorded them, in recording order."""
    if not tables or not orders:
        return pd.DataFrame()
    sql = " UNION ALL BY NAME ".join(f"SELECT * EXCLUDE (_row), _row, '{t}' AS tbl FROM {t} "
                                     "WHERE client_order_id IN (SELECT unnest(?))" for t in tables)
    return con.execute(f"SELECT * FROM ({sql}) ORDER BY bar, tbl, _row", [orders] * len(tables)).df().drop(
        columns=["_row"])


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

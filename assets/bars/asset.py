"""The ``bars`` asset: the point-in-time market snapshot of one bar and the history window features need."""


import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of, start_run
from assets.bars.logic import BarWindow
from dagster_project.partitions import bar_partitions
from resources.lineage.io_manager import load_recorded
from resources.lineage.resource import LineageResource
from resources.market.resource import MarketDataResource


@dg.asset(
    partitions_def=bar_partitions,
    group_name="market",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Point-in-time market snapshot of one bar close: per symbol OHLCV, bid/ask, ADV and a status "
                "(ok / missing / skipped: rule), a hold reason (split-like jump), the quote's age; plus the history "
                "window (market.history_bars) the features read, the rows the bar saw skipped (bars_skips) and the "
                "corporate actions in effect (bars_adjustments).",
)
def bars(context: AssetExecutionContext, market: MarketDataResource, lineage: LineageResource) -> BarWindow:
    bar = context.partition_key
    mode = mode_of(context)
    store = lineage.store()
    start_run(context, store, bar, mode)
    if mode == "audit":
        window = load_recorded(store, "bars", bar)  # an audit recomputes from what was recorded, never the source
    else:
        window, _ = market.window(bar)
    status = window.snapshot["status"].value_counts()
    skips = window.skips
    by_rule = skips.groupby("rule")["rows"].sum() if len(skips) else pd.Series(dtype=int)
    held = window.snapshot.get("hold_reason", pd.Series(dtype=object)).astype(str)
    context.add_output_metadata({
        "rows": len(window.snapshot),
        "symbols_ok": int(status.get("ok", 0)),
        "symbols_missing": int(status.get("missing", 0)),
        "symbols_skipped": int(window.snapshot["status"].astype(str).str.startswith("skipped").sum()),
        "symbols_held": int((held != "").sum()),
        "rows_skipped": int(by_rule.sum()),
        "skips_by_rule": dg.MetadataValue.json({str(k): int(v) for k, v in by_rule.items()}),
        "adjustments": 0 if window.adjustments is None else len(window.adjustments),
        "history_rows": len(window.history),
        "history_bars": len(window.times),
        "nan_share": round(float(window.snapshot["close"].isna().mean()), 6),
        "mode": mode,
    })
    return window

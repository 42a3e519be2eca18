"""The ``bars`` asset: the point-in-time market snapshot of one bar and the history window features need."""


import dagster as dg
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
                "(ok / missing / skipped: rule), plus the history window (market.history_bars) the features read.",
)
def bars(context: AssetExecutionContext, market: MarketDataResource, lineage: LineageResource) -> BarWindow:
    bar = context.partition_key
    mode = mode_of(context)
    store = lineage.store()
    start_run(context, store, bar, mode)
    if mode == "audit":
        window = load_recorded(store, "bars", bar)  # an audit recomputes from what was recorded, never the source
        skips_n = 0
    else:
        window, skips = market.window(bar)
        skips_n = len(skips)
    status = window.snapshot["status"].value_counts()
    context.add_output_metadata({
        "rows": len(window.snapshot),
        "symbols_ok": int(status.get("ok", 0)),
        "symbols_missing": int(status.get("missing", 0)),
        "rows_skipped": skips_n,
        "history_rows": len(window.history),
        "history_bars": len(window.times),
        "nan_share": round(float(window.snapshot["close"].isna().mean()), 6),
        "mode": mode,
    })
    return window

"""The ``features`` asset: the versioned feature vector of every symbol with a bar."""


import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import frame_metadata
from assets.bars.logic import BarWindow
from assets.features.logic import FeatureParams, features_for_window
from dagster_project.partitions import bar_partitions


@dg.asset(
    partitions_def=bar_partitions,
    group_name="market",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per symbol the versioned feature vector (features.version): returns over several lookbacks, "
                "idiosyncratic returns, realised volatility, relative volume, range, spread, time of day; "
                "plus price, EWMA σ, daily σ and ADV for arbitration and sizing. Point in time.",
)
def features(context: AssetExecutionContext, bars: BarWindow) -> pd.DataFrame:
    frame = features_for_window(bars)
    p = FeatureParams.from_cfg()
    meta = frame_metadata(frame, p.names)
    meta.update({"feature_version": p.version, "invalid_symbols": int((~frame["valid"]).sum()),
                 "features": ", ".join(p.names)})
    context.add_output_metadata(meta)
    return frame

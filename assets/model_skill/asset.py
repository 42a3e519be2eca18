"""The ``model_skill`` asset: point-in-time rolling IC (μ input) and family correlation Σ per horizon."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.history import LineageHistory
from assets.model_skill.stage import compute_model_skill
from assets.predictions.asset import recorded_versions
from dagster_project.partitions import bar_partitions
from resources.lineage.resource import LineageResource
from resources.model_registry import ModelRegistryResource


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per horizon × family: rolling cross-sectional Spearman IC of predictions whose horizon has "
                "elapsed (no look-ahead), shrunk toward the validation IC while live history is short, cost "
                "share and μ; and Σ, the correlation of the families' standardized predictions.",
)
def model_skill(context: AssetExecutionContext, bars: BarWindow, features: pd.DataFrame,
                predictions: dict[str, pd.DataFrame], models: ModelRegistryResource,
                lineage: LineageResource) -> dict[str, pd.DataFrame]:
    versions = recorded_versions(lineage, context.partition_key) if mode_of(context) == "audit" else None
    out = compute_model_skill(bars, features, predictions["predictions"], models.load(versions),
                              LineageHistory(lineage.store()))
    skill = out["model_skill"]
    context.add_output_metadata({
        "rows": len(skill),
        "skill": dg.MetadataValue.md(skill.round(4).to_markdown(index=False) if len(skill) else "no models"),
    })
    return out

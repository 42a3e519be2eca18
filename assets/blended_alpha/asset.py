"""The ``blended_alpha`` asset: ridge risk-parity family weights per horizon and α per symbol × horizon."""

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.blended_alpha.stage import compute_blended_alpha
from assets.predictions.asset import recorded_versions
from dagster_project.partitions import bar_partitions
from resources.lineage.resource import LineageResource
from resources.model_registry import ModelRegistryResource


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"pandas", "duckdb"},
    description="Per horizon the family weights w ∝ (Σ+λI)⁻¹μ (clipped, normalised, temperature for short "
                "horizons) and per symbol × horizon the blended alpha α = Σ w·z·scale (decimal and bps).",
    check_specs=[dg.AssetCheckSpec("weights_on_simplex", asset="blended_alpha",
                                   description="every horizon's weights are ≥ 0 and sum to 1")],
)
def blended_alpha(context: AssetExecutionContext, predictions: dict[str, pd.DataFrame],
                  model_skill: dict[str, pd.DataFrame], models: ModelRegistryResource,
                  lineage: LineageResource):
    versions = recorded_versions(lineage, context.partition_key) if mode_of(context) == "audit" else None
    out = compute_blended_alpha(predictions["predictions"], model_skill["model_skill"],
                                model_skill["model_skill_sigma"], models.load(versions))
    w = out["blended_alpha_weights"]
    sums = w.groupby("horizon")["weight"].sum()
    ok = bool((w["weight"] >= 0).all() and np.allclose(sums.to_numpy(), 1.0)) if len(w) else True
    meta = ({
        "rows": len(out["blended_alpha"]),
        "weights": dg.MetadataValue.md(w.round(4).to_markdown(index=False) if len(w) else "no models"),
    })
    yield dg.Output(out, metadata=meta)
    yield dg.AssetCheckResult(check_name="weights_on_simplex", passed=ok,
                              metadata={"weight_sums": dg.MetadataValue.json(
                                  {str(k): float(v) for k, v in sums.items()})})
